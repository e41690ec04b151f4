"""The language model: parameters, unrolling a window, softmax cross-entropy and BPTT.

Parameters are a dict named and shaped like PyTorch's state_dict for
`rnn = nn.RNN|LSTM|GRU(V, H, L)` plus `out = nn.Linear(H, V)`. The input is one-hot, so
layer 0's input product is a column lookup of W_ih and its gradient a scatter-add.
Every product that is not part of the recurrence runs once per window over all B*T rows;
only the cell steps loop over time. Inside, arrays are time-major: (T, B, ...).
"""
from dataclasses import dataclass

import numpy as np

from rnnlm import RnnlmError
from rnnlm.cells import CELLS


@dataclass(frozen=True)
class Spec:
    """What fixes the shapes of a model."""

    cell: str  # rnn | lstm | gru
    vocab_size: int  # V
    hidden: int  # H
    layers: int  # L

    @property
    def gates(self):
        return CELLS[self.cell][0]

    @property
    def state_size(self):
        """Arrays in one layer's state tuple: 1, or 2 for the LSTM's (h, c)."""
        return CELLS[self.cell][1]


def layer_keys(layer):
    return (f"rnn.weight_ih_l{layer}", f"rnn.weight_hh_l{layer}",
            f"rnn.bias_ih_l{layer}", f"rnn.bias_hh_l{layer}")


def param_shapes(spec):
    """name -> shape, in PyTorch's order."""
    GH, H, V = spec.gates * spec.hidden, spec.hidden, spec.vocab_size
    shapes = {}
    for layer in range(spec.layers):
        w_ih, w_hh, b_ih, b_hh = layer_keys(layer)
        shapes[w_ih] = (GH, V if layer == 0 else H)
        shapes[w_hh] = (GH, H)
        shapes[b_ih] = (GH,)
        shapes[b_hh] = (GH,)
    shapes["out.weight"] = (V, H)
    shapes["out.bias"] = (V,)
    return shapes


def init_params(spec, rng, dtype=np.float32, init="orthogonal", forget_bias=1.0):
    """PyTorch's default: every entry U(-1/sqrt(H), 1/sqrt(H)), the output layer
    U(-1/sqrt(H), 1/sqrt(H)) too. With init="orthogonal", each gate's block of W_hh is a
    random orthogonal matrix instead. The LSTM forget-gate biases (b_ih + b_hh) start at
    forget_bias."""
    bound = 1.0 / np.sqrt(spec.hidden)
    params = {}
    for name, shape in param_shapes(spec).items():
        params[name] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    H = spec.hidden
    for layer in range(spec.layers):
        _, w_hh, b_ih, b_hh = layer_keys(layer)
        if init == "orthogonal":
            for g in range(spec.gates):
                q, r = np.linalg.qr(rng.standard_normal((H, H)))
                params[w_hh][g * H:(g + 1) * H] = q * np.sign(np.diag(r))
        if spec.cell == "lstm":
            params[b_ih][H:2 * H] = forget_bias / 2
            params[b_hh][H:2 * H] = forget_bias / 2
    return params


def zero_state(spec, batch, dtype=np.float32):
    """Hidden state for every layer: a list of tuples (h,) or (h, c), each (B, H)."""
    return [tuple(np.zeros((batch, spec.hidden), dtype) for _ in range(spec.state_size))
            for _ in range(spec.layers)]


def check_params(params, spec):
    """Raise RnnlmError unless params has exactly the names and shapes spec asks for."""
    expected = param_shapes(spec)
    missing = sorted(set(expected) - set(params))
    if missing:
        raise RnnlmError(f"missing parameter(s): {', '.join(missing)}")
    extra = sorted(set(params) - set(expected))
    if extra:
        raise RnnlmError(f"unexpected parameter(s): {', '.join(extra)}")
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise RnnlmError(f"parameter {name} has shape {tuple(params[name].shape)}, "
                             f"expected {shape}")


def dropout_masks(spec, batch, seq_len, p, rng, dtype=np.float32):
    """Inverted-dropout masks for every layer's output: 0 or 1/(1-p), each (T, B, H)."""
    if p <= 0:
        return None
    keep = 1.0 - p
    return [(rng.random((seq_len, batch, spec.hidden)) < keep).astype(dtype) / dtype(keep)
            for _ in range(spec.layers)]


def _input_projection(params, layer, inputs):
    """gx = x W_ih^T + b_ih for a whole window. Layer 0's inputs are ids (T, B): a
    lookup. Deeper layers' are activations (T, B, H): one GEMM. Returns (T, B, G*H)."""
    w_ih, _, b_ih, _ = layer_keys(layer)
    if layer == 0:
        gx = np.ascontiguousarray(params[w_ih].T).take(inputs, axis=0)
    else:
        gx = inputs @ params[w_ih].T
    gx += params[b_ih]
    return gx


def _scatter_rows(values, ids, n_rows):
    """Sum rows of values (N, D) into (n_rows, D) by ids (N,): the gradient of a lookup.
    Sorting then np.add.reduceat beats np.add.at many times over."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sums = np.add.reduceat(values[order], starts, axis=0)
    out = np.zeros((n_rows, values.shape[1]), values.dtype)
    out[sorted_ids[starts]] = sums
    return out


def _layer_forward(spec, params, layer, gx, state, keep_cache):
    """Run one layer's cells over T steps. Returns hs (T+1, B, H) with hs[0] = h_prev,
    the final state, and the per-step caches (or None)."""
    _, _, step_forward, _ = CELLS[spec.cell]
    _, w_hh, _, b_hh = layer_keys(layer)
    w_hh, b_hh = params[w_hh], params[b_hh]
    T, B = gx.shape[:2]
    hs = np.empty((T + 1, B, spec.hidden), gx.dtype)
    hs[0] = state[0]
    caches = [] if keep_cache else None
    for t in range(T):
        state, cache = step_forward(gx[t], state, w_hh, b_hh)
        hs[t + 1] = state[0]
        if keep_cache:
            caches.append(cache)
    return hs, state, caches


def _layer_backward(spec, params, layer, dhs, caches):
    """BPTT through one layer's window. dhs (T, B, H) is the loss gradient reaching each
    step's output h from above. The gradient does not flow into the carried-in state:
    that is the truncation. Returns dgx, dgh, each (T, B, G*H)."""
    _, _, _, step_backward = CELLS[spec.cell]
    w_hh = params[layer_keys(layer)[1]]
    T, B, H = dhs.shape
    GH = spec.gates * H
    dgx = np.empty((T, B, GH), dhs.dtype)
    dgh = dgx if spec.cell != "gru" else np.empty((T, B, GH), dhs.dtype)
    dnext = tuple(np.zeros((B, H), dhs.dtype) for _ in range(spec.state_size))
    for t in reversed(range(T)):
        dstate = (dnext[0] + dhs[t],) + dnext[1:]
        dgx[t], dgh_t, dnext = step_backward(dstate, caches[t], w_hh)
        if dgh is not dgx:
            dgh[t] = dgh_t
    return dgx, dgh


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy of logits (N, V) against integer targets (N,).
    Returns the loss and its gradient with respect to the logits (N, V)."""
    N = logits.shape[0]
    rows = np.arange(N)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z)
    sums = probs.sum(axis=1)
    loss = float(np.mean(np.log(sums) - z[rows, targets]))
    probs /= sums[:, None]
    probs[rows, targets] -= 1.0
    probs /= N
    return loss, probs


def loss_and_grads(params, spec, x, y, state, masks=None):
    """Forward and backward over one window.

    Inputs: x, y integer ids (B, T), y being x shifted by one; state, a list of per-layer
    tuples carried in from the previous window; masks, dropout masks from dropout_masks()
    or None. Returns (loss, grads, new_state): the mean cross-entropy per character, a dict
    of gradients with the keys of params, and the state after the window.
    """
    xs, ys = x.T, y.T  # (T, B): time-major
    T, B = xs.shape
    H, V = spec.hidden, spec.vocab_size
    inputs, layers, new_state = xs, [], []
    for layer in range(spec.layers):
        gx = _input_projection(params, layer, inputs)  # (T, B, G*H)
        hs, last, caches = _layer_forward(spec, params, layer, gx, state[layer], True)
        out = hs[1:] if masks is None else hs[1:] * masks[layer]  # (T, B, H)
        layers.append((inputs, hs, caches))
        new_state.append(last)
        inputs = out

    top = inputs.reshape(T * B, H)
    logits = top @ params["out.weight"].T  # (T*B, V)
    logits += params["out.bias"]
    loss, dlogits = softmax_cross_entropy(logits, ys.reshape(-1))

    grads = {"out.weight": dlogits.T @ top, "out.bias": dlogits.sum(axis=0)}
    dout = (dlogits @ params["out.weight"]).reshape(T, B, H)
    for layer in reversed(range(spec.layers)):
        layer_inputs, hs, caches = layers[layer]
        if masks is not None:
            dout *= masks[layer]
        dgx, dgh = _layer_backward(spec, params, layer, dout, caches)
        w_ih, w_hh, b_ih, b_hh = layer_keys(layer)
        GH = dgx.shape[2]
        dgx2, dgh2 = dgx.reshape(T * B, GH), dgh.reshape(T * B, GH)
        grads[w_hh] = dgh2.T @ hs[:-1].reshape(T * B, H)
        grads[b_hh] = dgh2.sum(axis=0)
        grads[b_ih] = dgx2.sum(axis=0)
        if layer == 0:
            grads[w_ih] = np.ascontiguousarray(_scatter_rows(dgx2, layer_inputs.reshape(-1), V).T)
        else:
            grads[w_ih] = dgx2.T @ layer_inputs.reshape(T * B, H)
            dout = (dgx2 @ params[w_ih]).reshape(T, B, H)
    return loss, grads, new_state


def forward(params, spec, x, state):
    """Inference over a window: x ids (B, T) -> logits (B, T, V), new state. No dropout."""
    xs = x.T
    T, B = xs.shape
    inputs, new_state = xs, []
    for layer in range(spec.layers):
        gx = _input_projection(params, layer, inputs)
        hs, last, _ = _layer_forward(spec, params, layer, gx, state[layer], False)
        new_state.append(last)
        inputs = hs[1:]
    logits = inputs @ params["out.weight"].T
    logits += params["out.bias"]
    return logits.transpose(1, 0, 2), new_state

