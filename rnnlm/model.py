"""The language model: parameters, unrolling a window, softmax cross-entropy and BPTT.

Parameters are a dict named and shaped like PyTorch's state_dict for
`rnn = nn.RNN|LSTM|GRU(V, H, L)` plus `out = nn.Linear(H, V)`. The input is one-hot, so
layer 0's input product is a column lookup of W_ih and its gradient a scatter-add.
Every product that is not part of the recurrence runs once per window over all B*T rows;
only the cell steps loop over time.

Inside a window, arrays are time-major and feature-major, (T, features, B), the layout the
cells run fastest in (see cells.py); the once-per-window GEMMs take (features, T*B)
copies made by `_columns`. Carried state goes in and out as (B, H) arrays.
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
    """Inverted-dropout masks for every layer's output: 0 or 1/(1-p), each (T, H, B), the
    layout of the window buffers. Drawn in the masks' own memory."""
    if p <= 0:
        return None
    draw = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    masks = rng.random((spec.layers, seq_len, spec.hidden, batch), dtype=draw)
    masks = masks.astype(dtype, copy=False)
    for m in masks:
        np.multiply(m < 1.0 - p, 1.0 / (1.0 - p), out=m)
    return list(masks)


class _Scratch:
    """Arrays kept from one window to the next, by name. A fresh np.empty of a few MB is
    new memory from the kernel and page-faults on first touch: measured 9,200 faults
    (37 MB) per window of the 2-layer LSTM before this. Only arrays that never leave this
    module live here: what a function returns is always its own. One set per process, so
    the model is not to be run from several threads at once."""

    def __init__(self):
        self.arrays = {}

    def __call__(self, name, shape, dtype):
        a = self.arrays.get(name)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = self.arrays[name] = np.empty(shape, dtype)
        return a

    def scope(self, prefix):
        return lambda name, shape, dtype: self(prefix + name, shape, dtype)


_scratch = _Scratch()


def _lookup_grad(values, ids, n_cols):
    """The gradient of a column lookup: column j of the result (D, n_cols) sums the columns
    of values (D, N) whose id is j. np.add.at is the obvious way and measured here several
    times slower than either of these: a one-hot GEMM while the vocabulary is small, else
    np.bincount over flat indices."""
    D, N = values.shape
    if n_cols <= 512:
        onehot = _scratch("onehot", (N, n_cols), values.dtype)
        onehot.fill(0)
        onehot[np.arange(N), ids] = 1
        return values @ onehot
    flat = (np.arange(D)[:, None] * n_cols + ids.astype(np.intp)).ravel()
    sums = np.bincount(flat, weights=values.ravel(), minlength=n_cols * D)
    return sums.reshape(D, n_cols).astype(values.dtype)


def _runs(a):
    """a (..., B), its last axis contiguous, as an array (...) of B-float items. A copy
    between the (T, F, B) and (F, T, B) layouts then moves one item per run instead of
    looping over B floats: measured 1.6x faster for 8 MB out of cache."""
    return a.view(np.dtype((np.void, a.shape[-1] * a.itemsize)))[..., 0]


def _columns(a, out, order=None):
    """(T, F, B) window array -> out, (F, T*B): the window's T*B columns of features, for
    the GEMMs that run once per window. Moving whole B-long runs, the copy costs far less
    than the products it makes contiguous. With order (a cell's gate order), block k of
    a's rows goes to block order[k]: gradients go back to PyTorch's gate order."""
    T, F, B = a.shape
    if order is None or list(order) == sorted(order):
        np.copyto(_runs(out.reshape(F, T, B)), _runs(a).T)
        return out
    n = F // len(order)
    for k, dst in enumerate(order):
        np.copyto(_runs(out[dst * n:(dst + 1) * n].reshape(n, T, B)),
                  _runs(a[:, k * n:(k + 1) * n]).T)
    return out


def _from_columns(cols, T):
    """(F, T*B) -> the (T, F, B) window layout, in the shared "dout" buffer: the gradient
    reaching a layer's outputs. One GEMM and this copy measured faster than T small GEMMs."""
    F, N = cols.shape
    out = _scratch("dout", (T, F, N // T), cols.dtype)
    np.copyto(_runs(out), _runs(cols.reshape(F, T, N // T)).T)
    return out


def _spent_h(buf, H, N):
    """An (H, N) view of a layer's state buffer buf["h"], free once its columns are made
    and the layer's backward pass is done: scratch that costs no memory."""
    return buf["h"].reshape(-1)[:H * N].reshape(H, N)


def _row_sums(a):
    """a.sum(axis=1) as a GEMV: measured 7x faster on (1024, 2048)."""
    ones = _scratch("ones", (a.shape[1],), a.dtype)
    ones.fill(1)
    return a @ ones


def _gradient_columns(GH, N, dtype):
    """The (G*H, T*B) buffer of a layer's gradient columns, shared by the layers. Outside a
    layer's backward pass it holds nothing, and what is needed only before then borrows
    it: the scaled weight copies of the forward pass, the top layer's output columns in
    evaluation, the output layer's input gradient."""
    return _scratch("dgx_cols", (GH, N), dtype)


def _forward_only(alloc, w_ih_shape, N):
    """prepare()'s allocator. Its scaled copies of W_ih and W_hh are read only in the
    forward pass, when the gradient-columns buffer (G*H, T*B) holds nothing: they are
    views of it when they fit, as they do unless the vocabulary exceeds T*B - H."""
    GH, n_in = w_ih_shape

    def allocate(name, shape, dtype):
        size = int(np.prod(shape))
        start = {"w_in": 0, "hh_s": GH * n_in}.get(name)
        if start is None or start + size > GH * N:
            return alloc(name, shape, dtype)
        host = _gradient_columns(GH, N, dtype).reshape(-1)
        return host[start:start + size].reshape(shape)
    return allocate


def _layer_forward(cell, params, layer, inputs, state):
    """Run one layer over a window. inputs: ids (T, B) for layer 0, else activations
    (T, H, B). Returns the window's buffers (buf["h"][1:] is the output) and the prepared
    weights, which the backward pass reuses."""
    T, B = inputs.shape[0], inputs.shape[-1]
    alloc = _scratch.scope(f"l{layer}.")
    weights = [params[k] for k in layer_keys(layer)]
    w_in, b_in, w = prepare(cell, *weights, batch=B,
                            alloc=_forward_only(alloc, weights[0].shape, T * B))
    GH, H = w.hh_s.shape
    dtype = w.hh_s.dtype
    buf = {name: alloc(name, shape, dtype)
           for name, shape in cell.buffer_shapes(T, B, H).items()}
    for name, s in zip(cell.state_names, state):
        buf[name][0] = s.T
    gx = cell.input_slots(buf)  # (T, G*H, B): step t's input projection goes in gx[t]
    if layer == 0:  # (G*H, V): one-hot x_t @ W_ih^T is a lookup
        table = np.add(w_in, b_in[:, None], out=alloc("table", w_in.shape, dtype))
    else:  # T GEMMs back to back, while W_ih is in cache; in the loop only W_hh is read
        np.matmul(w_in, inputs, out=gx)
        bias = alloc("bias_in", (GH, B), dtype)
        bias[...] = b_in[:, None]
    for t in range(T):
        if layer == 0:
            np.take(table, inputs[t], axis=1, out=gx[t], mode="wrap")  # ids < V: "wrap"
            # never wraps, and measured 1.6x faster than the default "raise"
        else:
            gx[t] += bias
        cell.forward(t, buf, w)
    return buf, w


def _layer_backward(cell, buf, w, dhs, alloc):
    """BPTT through one layer's window. dhs (T, H, B), the loss gradient reaching each
    step's output from above, is used as scratch. The gradient does not flow into the
    carried-in state: that is the truncation. Returns dgx, dgh, each (T, G*H, B), which
    may overwrite the window's buffers: the forward pass's results are gone after this."""
    T, H, B = dhs.shape
    grad_bufs = cell.gradient_buffers(buf)  # dead forward buffers, where the cell allows
    if grad_bufs is not None:
        dgx, dgh = grad_bufs
    else:
        dgx = _scratch("dgx", (T, w.hh_s.shape[0], B), dhs.dtype)  # shared by the layers
        dgh = dgx if cell.fold_hidden_bias else _scratch("dgh", dgx.shape, dhs.dtype)
    dnext = tuple(alloc(f"dnext{k}", (H, B), dhs.dtype) for k in range(len(cell.state_names)))
    dprev = tuple(alloc(f"dprev{k}", (H, B), dhs.dtype) for k in range(len(cell.state_names)))
    for d in dnext:
        d.fill(0)
    for t in reversed(range(T)):
        dh = dhs[t]
        dh += dnext[0]
        cell.backward(t, buf, w, (dh,) + dnext[1:], dgx[t], dgh[t], dprev)
        dnext, dprev = dprev, dnext
    return dgx, dgh


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy of logits (V, N), one column per prediction, against integer
    targets (N,). Returns the loss and its gradient with respect to the logits, computed
    in logits' own buffer."""
    N = logits.shape[1]
    cols = np.arange(N)
    logits -= logits.max(axis=0)
    target_logits = logits[targets, cols]
    probs = np.exp(logits, out=logits)
    sums = probs.sum(axis=0)
    loss = float(np.mean(np.log(sums) - target_logits))
    probs *= (1.0 / N) / sums
    probs[targets, cols] -= 1.0 / N
    return loss, probs


def _final_state(cell, buf):
    return tuple(buf[name][-1].T.copy() for name in cell.state_names)


def loss_and_grads(params, spec, x, y, state, masks=None):
    """Forward and backward over one window.

    Inputs: x, y integer ids (B, T), y being x shifted by one; state, a list of per-layer
    tuples of (B, H) arrays carried in from the previous window; masks, dropout masks from
    dropout_masks() or None. Returns (loss, grads, new_state): the mean cross-entropy per
    character, a dict of gradients with the keys of params, and the state after the window.
    """
    cell = CELLS[spec.cell]
    xs, ys = x.T, y.T  # (T, B): time-major
    T, B = xs.shape
    H, V, N, L = spec.hidden, spec.vocab_size, T * B, spec.layers
    dtype = params["out.weight"].dtype
    # Columns are made where they are needed and no earlier, in one (H, (T+1)*B) buffer
    # that holds a layer's states h_0 .. h_T: its first T*B columns are the states each
    # step starts from (for dW_hh), its last T*B the layer's outputs (for the layer above's
    # dW_ih, or the output layer), so one copy serves both. It holds the top layer's
    # states first, then each lower layer's, once the layer above is done with it. With
    # dropout, what the layer above sees is masked and gets columns of its own.
    inputs, layers, new_state = xs, [], []
    for layer in range(L):
        buf, w = _layer_forward(cell, params, layer, inputs, state[layer])
        new_state.append(_final_state(cell, buf))
        layers.append((inputs, buf, w))
        inputs = buf["h"][1:]  # (T, H, B)
        if masks is not None and layer < L - 1:  # read by the next layer's first GEMM
            inputs = np.multiply(inputs, masks[layer], out=_scratch("dout", (T, H, B), dtype))
    h_cols = _columns(buf["h"], _scratch("h_cols", (H, N + B), dtype))
    top = h_cols[:, B:]  # (H, T*B), strided: np.matmul passes it to BLAS as it is
    spare_cols = _gradient_columns(spec.gates * H, N, dtype)[:H]  # free till the backward
    if masks is not None:  # and so is "dout"
        top = _columns(np.multiply(inputs, masks[L - 1], out=_scratch("dout", (T, H, B), dtype)),
                       spare_cols)

    logits = np.matmul(params["out.weight"], top, out=_scratch("logits", (V, N), dtype))
    logits += params["out.bias"][:, None]
    loss, dlogits = softmax_cross_entropy(logits, ys.reshape(-1))

    grads = {"out.weight": dlogits @ top.T, "out.bias": dlogits.sum(axis=1)}
    dtop = np.dot(params["out.weight"].T, dlogits, out=spare_cols)  # top's last use was above
    dout = _from_columns(dtop, T)
    for layer in reversed(range(L)):
        alloc = _scratch.scope(f"l{layer}.")
        layer_inputs, buf, w = layers[layer]
        if masks is not None:
            dout *= masks[layer]
            if layer < L - 1:  # else there since the layer above's dW_ih
                _columns(buf["h"], h_cols)
        prev_cols = h_cols[:, :N]  # h_0 .. h_T-1, made before the RNN's dgx overwrites them
        dgx, dgh = _layer_backward(cell, buf, w, dout, alloc)
        w_ih, w_hh, b_ih, b_hh = layer_keys(layer)
        GH = dgx.shape[1]  # (G*H, T*B) columns, in PyTorch's gate order:
        dgx2 = _columns(dgx, _gradient_columns(GH, N, dtype), cell.order)
        dgh2 = dgx2 if dgh is dgx else _columns(dgh, _scratch("dgh_cols", (GH, N), dtype),
                                                cell.order)
        grads[b_ih] = _row_sums(dgx2)
        grads[b_hh] = grads[b_ih].copy() if dgh is dgx else _row_sums(dgh2)
        grads[w_hh] = dgh2 @ prev_cols.T
        if layer == 0:
            grads[w_ih] = _lookup_grad(dgx2, layer_inputs.reshape(-1), V)
            continue
        below = layers[layer - 1][1]["h"]  # the layer's inputs are the outputs below
        if masks is None:
            input_cols = _columns(below, h_cols)[:, B:]
        else:  # remade in the free dout, as columns where the states will go
            inputs = np.multiply(below[1:], masks[layer - 1], out=dout)
            input_cols = _columns(inputs, h_cols[:, :N])
        grads[w_ih] = dgx2 @ input_cols.T
        dout = _from_columns(np.dot(params[w_ih].T, dgx2, out=_spent_h(buf, H, N)), T)
    return loss, grads, new_state


def forward(params, spec, x, state):
    """Inference over a window: x ids (B, T) -> logits (B, T, V), new state. No dropout."""
    cell = CELLS[spec.cell]
    inputs, new_state = x.T, []
    for layer in range(spec.layers):
        buf, _ = _layer_forward(cell, params, layer, inputs, state[layer])
        new_state.append(_final_state(cell, buf))
        inputs = buf["h"][1:]
    T, H, B = inputs.shape
    top = _gradient_columns(spec.gates * H, T * B, inputs.dtype)[:H]
    logits = params["out.weight"] @ _columns(inputs, top)  # (V, T*B)
    logits += params["out.bias"][:, None]
    return logits.reshape(-1, T, B).transpose(2, 1, 0), new_state
