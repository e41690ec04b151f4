"""Generating text one character at a time, and measuring loss on a text."""
import math

import numpy as np

from rnnlm import RnnlmError
from rnnlm.cells import CELLS, prepare
from rnnlm.data import describe_chars, eval_windows
from rnnlm.model import forward, layer_keys, zero_state


class Stepper:
    """The model run one character at a time for one stream (batch 1): each layer's
    weights laid out once, its buffers allocated once and reused for every step. Arrays
    are feature-major, (features, 1), as in training."""

    def __init__(self, params, spec):
        self.cell = CELLS[spec.cell]
        dtype = params["out.weight"].dtype
        self.layers = []
        for layer in range(spec.layers):
            w_in, b_in, w = prepare(self.cell, *(params[k] for k in layer_keys(layer)), batch=1)
            if layer == 0:  # rows of the lookup table (V, G*H), the bias included
                w_in = np.ascontiguousarray((w_in + b_in[:, None]).T)
            buf = {name: np.zeros(shape, dtype)
                   for name, shape in self.cell.buffer_shapes(1, 1, spec.hidden).items()}
            self.layers.append((w_in, b_in[:, None], w, buf, self.cell.input_slots(buf)[0]))
        self.out_w = params["out.weight"]  # (V, H)
        self.out_b = params["out.bias"][:, None]
        self.logits = np.empty((spec.vocab_size, 1), dtype)

    def __call__(self, char_id):
        """Feed one character id; returns the logits (V,) for the next one."""
        x = None
        for layer, (w_in, b_in, w, buf, gx) in enumerate(self.layers):
            for name in self.cell.state_names:
                buf[name][0] = buf[name][1]
            if layer == 0:
                gx[:, 0] = w_in[char_id]
            else:
                np.dot(w_in, x, out=gx)
                gx += b_in
            self.cell.forward(0, buf, w)
            x = buf["h"][1]
        np.dot(self.out_w, x, out=self.logits)
        self.logits += self.out_b
        return self.logits[:, 0].copy()


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


def evaluate(params, spec, ids, batch=32, seq_len=64):
    """Mean cross-entropy in nats per character over every prediction in ids (all but
    the first character), in `batch` contiguous streams with state carried through. The
    result does not depend on seq_len, which only bounds the memory of the window buffers."""
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
