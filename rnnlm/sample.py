"""Generating text one character at a time, and measuring loss on a text."""
import math

import numpy as np

from rnnlm import RnnlmError
from rnnlm.cells import CELLS
from rnnlm.data import describe_chars, eval_windows
from rnnlm.model import forward, layer_keys, zero_state


class Stepper:
    """The model run one character at a time for one stream (batch 1), with every
    weight laid out once for the step: layer 0's input weight as rows to look up."""

    def __init__(self, params, spec):
        self.spec = spec
        _, _, self.step_forward, _ = CELLS[spec.cell]
        self.layers = []
        for layer in range(spec.layers):
            w_ih, w_hh, b_ih, b_hh = (params[k] for k in layer_keys(layer))
            self.layers.append((np.ascontiguousarray(w_ih.T), w_hh, b_ih, b_hh))
        self.out_t = np.ascontiguousarray(params["out.weight"].T)  # (H, V)
        self.out_b = params["out.bias"]
        self.state = zero_state(spec, 1, params["out.weight"].dtype)

    def __call__(self, char_id):
        """Feed one character id; returns the logits (V,) for the next one."""
        x = None
        for layer, (w_ih_t, w_hh, b_ih, b_hh) in enumerate(self.layers):
            gx = (w_ih_t[char_id:char_id + 1] if layer == 0 else x @ w_ih_t) + b_ih  # (1, GH)
            self.state[layer], _ = self.step_forward(gx, self.state[layer], w_hh, b_hh)
            x = self.state[layer][0]
        return (x @ self.out_t + self.out_b)[0]


def pick(logits, rng, temperature=1.0, top_k=0, argmax=False):
    """Draw an id from logits (V,): greedy, or softmax(logits / temperature) restricted to
    the top_k most likely (0: all)."""
    if argmax:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < z.size:
        cut = np.partition(z, -top_k)[-top_k]
        z[z < cut] = -np.inf
    z -= z.max()
    cdf = np.cumsum(np.exp(z))
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), z.size - 1))


def generate(params, spec, vocab, rng, prime="", length=200, temperature=1.0, top_k=0,
             argmax=False):
    """Yield `length` generated characters, after feeding `prime` (not yielded).
    With no prime the model starts from a newline if it knows one, else from a
    character drawn uniformly, which then counts as the first generated."""
    if temperature <= 0 or not math.isfinite(temperature):
        raise RnnlmError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise RnnlmError(f"top-k must be >= 0, got {top_k}")
    missing = vocab.unknown(prime)
    if missing:
        raise RnnlmError(f"prime has {len(missing)} character(s) not in the model's "
                         f"vocabulary: {describe_chars(missing)}")
    step = Stepper(params, spec)
    if not prime and "\n" not in vocab.chars:
        first = int(rng.integers(vocab.size))
        yield vocab.chars[first]
        prime, length = vocab.chars[first], length - 1
    ids = vocab.encode(prime or "\n")[0]
    for i in ids[:-1]:
        step(i)
    current = ids[-1]
    for _ in range(length):
        current = pick(step(current), rng, temperature, top_k, argmax)
        yield vocab.chars[current]


def evaluate(params, spec, ids, batch=32, seq_len=256):
    """Mean cross-entropy in nats per character over every prediction in ids (all but
    the first character), in `batch` contiguous streams with state carried through."""
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
