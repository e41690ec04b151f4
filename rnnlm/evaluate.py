"""The loss of a model on a text: what `train` validates with and `eval` reports."""
import math
import sys

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm import engines
from rnnlm.io.data import eval_windows
from rnnlm.params import zero_state

# A window's logits, as float32 from the engine, float64 here and a temporary or two: about
# 28 bytes per entry, (B, seq_len, V) entries. Windows are shortened to stay within this.
EVAL_WINDOW_BYTES = 48 << 20


def window_length(batch, vocab_size, seq_len=64):
    """The longest window, up to seq_len, whose logits stay within EVAL_WINDOW_BYTES."""
    return max(1, min(seq_len, EVAL_WINDOW_BYTES // (28 * batch * vocab_size)))


def _window_losses(params, spec, ids, batch, seq_len, engine, rows=None):
    """Yield (cross-entropy (B, t) of every prediction in a window, its mask, the indices
    in ids of the characters predicted), window after window, state carried through.
    rows: a slice of the streams, to compute theirs alone (a worker's share)."""
    forward = engines.get(engine).forward
    seq_len = window_length(batch, spec.vocab_size, seq_len)
    rows = rows or slice(0, min(batch, max(len(ids) - 1, 1)))
    state = zero_state(spec, rows.stop - rows.start, params["out.weight"].dtype)
    if rows.stop <= rows.start:
        return
    for x, y, mask, pos in eval_windows(ids, batch, seq_len, positions=True):
        x, y, mask, pos = x[rows], y[rows], mask[rows], pos[rows]
        logits, state = forward(params, spec, x, state)  # (B, t, V)
        logits = logits.astype(np.float64)
        top = logits.max(axis=2, keepdims=True)
        logsumexp = np.log(np.exp(logits - top).sum(axis=2)) + top[..., 0]
        target = np.take_along_axis(logits, y[..., None].astype(np.intp), axis=2)[..., 0]
        yield logsumexp - target, mask, pos


def evaluate(params, spec, ids, batch=32, seq_len=64, engine="fast"):
    """Mean cross-entropy in nats per character over every prediction in ids (all but
    the first character), in `batch` contiguous streams with state carried through. The
    result does not depend on seq_len, which only bounds the memory of the window buffers
    (and is shortened for large vocabularies)."""
    total, count = loss_sums(params, spec, ids, batch, seq_len, engine)
    if count == 0:
        raise RnnlmError("need at least 2 characters to measure a loss")
    return total / count


class Interrupted(Exception):
    """stop() said so in the middle of a measurement."""


def loss_sums(params, spec, ids, batch=32, seq_len=64, engine="fast", rows=None,
              stop=lambda: False):
    """(the summed cross-entropy, the number of predictions) over the streams `rows` of
    the `batch` that evaluate() cuts ids into (default: all of them). stop() is polled
    after every window: Interrupted when it says so."""
    total, count = 0.0, 0
    for ce, mask, _ in _window_losses(params, spec, ids, batch, seq_len, engine, rows):
        total += float((ce * mask).sum())
        count += int(mask.sum())
        if stop():
            raise Interrupted
    return total, count


def per_character(params, spec, ids, batch=32, seq_len=64, engine="fast"):
    """The cross-entropy (nats) of predicting each character of ids but the first, in
    text order: losses[i] is -log p(ids[i + 1] | what precedes it in its stream)."""
    losses = np.zeros(max(len(ids) - 1, 0), np.float32)
    for ce, mask, pos in _window_losses(params, spec, ids, batch, seq_len, engine):
        losses[pos[mask] - 1] = ce[mask]
    return losses


# Dynamic evaluation's settings: windows of DYNAMIC_WINDOW characters, each scored and then
# learned from with one SGD step of DYNAMIC_LR on its mean loss, the weights pulled back
# towards the trained ones by DYNAMIC_DECAY at every step. Chosen on the first half of tiny
# Shakespeare's validation tail with a 1-minute model (GRU 2 x 128), from lr 0.01 to 0.3,
# decay 0 to 0.01 and windows of 25 to 100 (the best region is flat: lr 0.05 to 0.1 within
# 0.002); on the second half they take its loss from 1.587 to 1.446 (docs/results.md).
DYNAMIC_WINDOW = 50
DYNAMIC_LR = 0.1
DYNAMIC_DECAY = 0.001


def dynamic(params, spec, ids, lr=DYNAMIC_LR, decay=DYNAMIC_DECAY, seq_len=DYNAMIC_WINDOW,
            engine="fast"):
    """Dynamic evaluation (Krause et al., 2018): the mean cross-entropy over ids, in nats
    per character, of a model that keeps learning the text it scores. One stream, read in
    order, window after window: each window is scored first, then the model takes one SGD
    step on that window's loss, theta -= lr * grad, and is pulled back towards the trained
    weights, theta += decay * (trained - theta), so that it follows the text's recent
    style without forgetting what it learned. No character is scored by a model that has
    seen it. params are not changed."""
    if len(ids) < 2:
        raise RnnlmError("need at least 2 characters to measure a loss")
    trained = params
    params = {k: v.copy() for k, v in params.items()}
    state = zero_state(spec, 1, params["out.weight"].dtype)
    total = 0.0
    for start in range(0, len(ids) - 1, seq_len):
        y = ids[start + 1:start + 1 + seq_len][None]
        x = ids[start:start + y.shape[1]][None]
        loss, grads, state = engines.loss_and_grads(engine, params, spec, x, y, state)
        total += float(loss) * y.size
        for key, p in params.items():
            p -= lr * grads[key]
            p += decay * (trained[key] - p)
    return total / (len(ids) - 1)


def perplexity(nats):
    """e to the loss in nats per character; inf where that exceeds a float (a loss above
    about 709 nats, a model far worse than guessing)."""
    return math.exp(nats) if nats < math.log(sys.float_info.max) else math.inf
