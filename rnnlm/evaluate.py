"""The loss of a model on a text: what `train` validates with and `eval` reports."""
import numpy as np

from rnnlm import RnnlmError, engines
from rnnlm.data import eval_windows
from rnnlm.params import zero_state


def evaluate(params, spec, ids, batch=32, seq_len=64, engine="fast"):
    """Mean cross-entropy in nats per character over every prediction in ids (all but
    the first character), in `batch` contiguous streams with state carried through. The
    result does not depend on seq_len, which only bounds the memory of the window buffers."""
    forward = engines.get(engine).forward
    total, count = 0.0, 0
    state = zero_state(spec, min(batch, max(len(ids) - 1, 1)), params["out.weight"].dtype)
    for x, y, mask in eval_windows(ids, batch, seq_len):
        logits, state = forward(params, spec, x, state)  # (B, t, V)
        logits = logits.astype(np.float64)
        top = logits.max(axis=2, keepdims=True)
        logsumexp = np.log(np.exp(logits - top).sum(axis=2)) + top[..., 0]
        target = np.take_along_axis(logits, y[..., None].astype(np.intp), axis=2)[..., 0]
        total += float(((logsumexp - target) * mask).sum())
        count += int(mask.sum())
    if count == 0:
        raise RnnlmError("need at least 2 characters to measure a loss")
    return total / count
