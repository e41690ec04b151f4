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
from rnnlm.cells import CELLS, prepare


@dataclass(frozen=True)
class Spec:
    """What fixes the shapes of a model."""

    cell: str  # rnn | lstm | gru
    vocab_size: int  # V
    hidden: int  # H
    layers: int  # L

    @property
    def gates(self):
        return CELLS[self.cell].gates

    @property
    def state_size(self):
        """Arrays in one layer's state tuple: 1, or 2 for the LSTM's (h, c)."""
        return len(CELLS[self.cell].state_names)


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


def init_params(spec, rng, dtype=np.float32, init="uniform", forget_bias=0.0):
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


def _lookup_grad(values, ids, n_rows):
    """The gradient of a row lookup, transposed: column j of the result (D, n_rows) sums
    the rows of values (N, D) whose id is j. np.add.at is the obvious way and measured here
    several times slower than either of these: a one-hot GEMM while the vocabulary is
    small, else np.bincount over flat indices."""
    N, D = values.shape
    if n_rows <= 512:
        onehot = np.zeros((N, n_rows), values.dtype)
        onehot[np.arange(N), ids] = 1
        return values.T @ onehot
    flat = (np.arange(D) * n_rows + ids.astype(np.intp)[:, None]).ravel()
    sums = np.bincount(flat, weights=values.ravel(), minlength=n_rows * D)
    return sums.reshape(D, n_rows).astype(values.dtype)


def _layer_forward(cell, params, layer, inputs, state):
    """Run one layer over a window. inputs: ids (T, B) for layer 0, else activations
    (T, B, H). Returns the window's buffers (buf["h"][1:] is the output) and the prepared
    weights, which the backward pass reuses."""
    w_in_t, b_in, w = prepare(cell, *(params[k] for k in layer_keys(layer)))
    if layer == 0:
        table = np.add(w_in_t, b_in, order="C")  # (V, G*H): one-hot x @ W_ih^T, a lookup
        gx = table.take(inputs, axis=0)  # (T, B, G*H)
    else:
        T, B, H = inputs.shape  # one GEMM over all T*B rows; the bias is added step by step
        gx = (inputs.reshape(T * B, H) @ w_in_t).reshape(T, B, -1)
    T, B = gx.shape[:2]
    buf = cell.buffers(T, B, w.hh.shape[1], gx.dtype)
    for name, s in zip(cell.state_names, state):
        buf[name][0] = s
    for t in range(T):
        if layer > 0:
            gx[t] += b_in  # while gx[t] is in cache, rather than a pass over all of gx
        cell.forward(t, gx[t], buf, w)
    return buf, w


def _layer_backward(cell, buf, w, dhs):
    """BPTT through one layer's window. dhs (T, B, H), the loss gradient reaching each
    step's output from above, is used as scratch. The gradient does not flow into the
    carried-in state: that is the truncation. Returns dgx, dgh, each (T, B, G*H), and
    their sums over time and batch: the bias gradients."""
    T, B, H = dhs.shape
    dgx = np.empty((T, B, cell.gates * H), dhs.dtype)
    dgh = dgx if cell.fold_hidden_bias else np.empty_like(dgx)
    db_x = np.zeros(dgx.shape[2], dhs.dtype)
    db_h = db_x if dgh is dgx else np.zeros_like(db_x)
    dnext = tuple(np.zeros((B, H), dhs.dtype) for _ in cell.state_names)
    dprev = tuple(np.empty((B, H), dhs.dtype) for _ in cell.state_names)
    for t in reversed(range(T)):
        dh = dhs[t]
        dh += dnext[0]
        cell.backward(t, buf, w, (dh,) + dnext[1:], dgx[t], dgh[t], dprev)
        db_x += dgx[t].sum(axis=0)  # summed while in cache
        if db_h is not db_x:
            db_h += dgh[t].sum(axis=0)
        dnext, dprev = dprev, dnext
    return dgx, dgh, db_x, db_h


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy of logits (N, V) against integer targets (N,). Returns the loss
    and its gradient with respect to the logits, computed in logits' own buffer."""
    N = logits.shape[0]
    rows = np.arange(N)
    logits -= logits.max(axis=1, keepdims=True)
    target_logits = logits[rows, targets]
    probs = np.exp(logits, out=logits)
    sums = probs.sum(axis=1)
    loss = float(np.mean(np.log(sums) - target_logits))
    probs *= (1.0 / N) / sums[:, None]
    probs[rows, targets] -= 1.0 / N
    return loss, probs


def loss_and_grads(params, spec, x, y, state, masks=None):
    """Forward and backward over one window.

    Inputs: x, y integer ids (B, T), y being x shifted by one; state, a list of per-layer
    tuples carried in from the previous window; masks, dropout masks from dropout_masks()
    or None. Returns (loss, grads, new_state): the mean cross-entropy per character, a dict
    of gradients with the keys of params, and the state after the window.
    """
    cell = CELLS[spec.cell]
    xs, ys = x.T, y.T  # (T, B): time-major
    T, B = xs.shape
    H, V = spec.hidden, spec.vocab_size
    inputs, layers, new_state = xs, [], []
    for layer in range(spec.layers):
        buf, w = _layer_forward(cell, params, layer, inputs, state[layer])
        layers.append((inputs, buf, w))
        new_state.append(tuple(buf[name][T].copy() for name in cell.state_names))
        inputs = buf["h"][1:] if masks is None else buf["h"][1:] * masks[layer]  # (T, B, H)

    top = inputs.reshape(T * B, H)
    logits = top @ params["out.weight"].T  # (T*B, V)
    logits += params["out.bias"]
    loss, dlogits = softmax_cross_entropy(logits, ys.reshape(-1))

    grads = {"out.weight": dlogits.T @ top, "out.bias": dlogits.sum(axis=0)}
    dout = (dlogits @ params["out.weight"]).reshape(T, B, H)
    for layer in reversed(range(spec.layers)):
        layer_inputs, buf, w = layers[layer]
        if masks is not None:
            dout *= masks[layer]
        dgx, dgh, db_x, db_h = _layer_backward(cell, buf, w, dout)
        w_ih, w_hh, b_ih, b_hh = layer_keys(layer)
        grads[b_ih], grads[b_hh] = db_x, db_h.copy() if db_h is db_x else db_h
        GH = dgx.shape[2]
        dgx2, dgh2 = dgx.reshape(T * B, GH), dgh.reshape(T * B, GH)
        grads[w_hh] = dgh2.T @ buf["h"][:-1].reshape(T * B, H)
        if layer == 0:
            grads[w_ih] = _lookup_grad(dgx2, layer_inputs.reshape(-1), V)
        else:
            grads[w_ih] = dgx2.T @ layer_inputs.reshape(T * B, H)
            dout = (dgx2 @ params[w_ih]).reshape(T, B, H)
    return loss, grads, new_state


def forward(params, spec, x, state):
    """Inference over a window: x ids (B, T) -> logits (B, T, V), new state. No dropout."""
    cell = CELLS[spec.cell]
    inputs, new_state = x.T, []
    for layer in range(spec.layers):
        buf, _ = _layer_forward(cell, params, layer, inputs, state[layer])
        new_state.append(tuple(buf[name][-1].copy() for name in cell.state_names))
        inputs = buf["h"][1:]
    T, B, H = inputs.shape
    logits = inputs.reshape(T * B, H) @ params["out.weight"].T
    logits += params["out.bias"]
    return logits.reshape(T, B, -1).transpose(1, 0, 2), new_state
