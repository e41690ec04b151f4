"""The fast engine: the textbook's BPTT (rnnlm/textbook.py) arranged for the machine.

The same mathematics, with three changes of arrangement:
- Only the recurrence loops over time. Every other product runs once per window over all
  T*B columns: the output layer, the layers' input projections, and every weight
  gradient, where one GEMM over the window's T*B columns is the textbook's sum over t.
- The one-hot input is never built: U x_t is a column lookup of W_ih, and its gradient a
  scatter-add into the looked-up columns.
- Inside a window, arrays are (T, features, B) (see cells.py); the once-per-window GEMMs
  read (features, T*B) copies, "columns" (buffers.py). Carried state goes in and out as
  (B, H), as in every engine.

Where each array lives, and which are kept from one window to the next, is buffers.py's
business; the elementwise work of a step is kernels.py's.
"""
import numpy as np

from rnnlm.fast import blas, buffers, kernels
from rnnlm.fast.buffers import columns, from_columns, scratch, shared_columns
from rnnlm.fast.cells import STEPS, prepare
from rnnlm.params import layer_keys


# Logits of at most this many bytes at a time (training; evaluation shortens its windows
# instead: evaluate.EVAL_WINDOW_BYTES): the output layer runs over a window's T*B
# columns in chunks where the vocabulary is large (70,000 characters, 2,048 columns:
# 573 MB of logits at once, and as much again for their gradient).
LOGITS_BYTES = 32 << 20


def softmax_cross_entropy(logits, targets, n=None):
    """Cross-entropy of logits (V, columns), one column per prediction, against integer
    targets, summed and divided by n (default: the number of columns, the mean). Returns
    it and its gradient with respect to the logits, (softmax - onehot(target)) / n,
    computed in logits' own buffer."""
    n = n or logits.shape[1]
    cols = np.arange(logits.shape[1])
    logits -= logits.max(axis=0)
    target_logits = logits[targets, cols]
    probs = np.exp(logits, out=logits)
    sums = probs.sum(axis=0)
    loss = float(np.sum(np.log(sums) - target_logits)) / n
    probs *= (1.0 / n) / sums
    probs[targets, cols] -= 1.0 / n
    return loss, probs


def _chunks(V, N, itemsize):
    """Column ranges of at most LOGITS_BYTES of logits each, covering N columns."""
    step = max(1, min(N, LOGITS_BYTES // (V * itemsize)))
    return [slice(c, min(c + step, N)) for c in range(0, N, step)]


def _sum_over_columns(a):
    """a.sum(axis=1), the sum over the window's T*B columns, as a GEMV: measured 7x
    faster on (1024, 2048)."""
    ones = scratch("ones", (a.shape[1],), a.dtype)
    ones.fill(1)
    return a @ ones


def _layer_forward(cell, params, layer, inputs, state):
    """Run one layer over a window. inputs: ids (T, B) for layer 0, else activations
    (T, H, B). Returns the window's buffers (buf["h"][1:] is the output) and the prepared
    weights, which the backward pass reuses."""
    T, B = inputs.shape[0], inputs.shape[-1]
    alloc = scratch.scope(f"l{layer}.")
    weights = [params[k] for k in layer_keys(layer)]
    GH, n_in = weights[0].shape
    # The prepared W_ih and W_hh copies are read only in this pass: they borrow the
    # shared columns, which hold nothing until the backward pass.
    lent = buffers.lend_for_forward(alloc, GH, T * B, {"w_in": 0, "w_hh": GH * n_in})
    w_in, b_in, w = prepare(cell, *weights, batch=B, alloc=lent)
    blas.active.keep(f"l{layer}", w.hh, w.hh_t)  # multiplied at every step of the window
    H, dtype = w.hh.shape[1], w.hh.dtype
    buf = {name: alloc(name, shape, dtype)
           for name, shape in cell.buffer_shapes(T, B, H).items()}
    for name, s in zip(cell.state_names, state):
        buf[name][0] = s.T
    gx = cell.input_slots(buf)  # (T, G*H, B): step t's input projection goes in gx[t]
    if layer == 0:  # one-hot x_t: W_ih x_t + b is a column lookup of this table (G*H, V)
        table = np.add(w_in, b_in[:, None], out=alloc("table", w_in.shape, dtype))
        kernels.active.lookup(table, inputs, gx)
    else:  # T GEMMs back to back, while W_ih is in cache; in the loop only W_hh is read
        blas.active.matmul(w_in, inputs, gx)
        gx += b_in[:, None]
    for t in range(T):
        cell.forward(t, buf, w)
    return buf, w


def _layer_backward(cell, buf, w, dhs, alloc):
    """BPTT through one layer's window, t = T-1 .. 0. dhs (T, H, B), the loss gradient
    reaching each step's output from above, is used as scratch. The gradient does not
    flow into the carried-in state: that is the truncation. Returns dgx, dgh, each
    (T, G*H, B), which may overwrite the window's buffers: the forward pass's results
    are gone after this."""
    T, H, B = dhs.shape
    grad_bufs = cell.gradient_buffers(buf)  # dead forward buffers, where the cell allows
    if grad_bufs is not None:
        dgx, dgh = grad_bufs
    else:
        dgx = scratch("dgx", (T, w.hh.shape[0], B), dhs.dtype)  # shared by the layers
        dgh = dgx if cell.fold_hidden_bias else scratch("dgh", dgx.shape, dhs.dtype)
    n_states = len(cell.state_names)
    dnext = tuple(alloc(f"dnext{k}", (H, B), dhs.dtype) for k in range(n_states))
    dprev = tuple(alloc(f"dprev{k}", (H, B), dhs.dtype) for k in range(n_states))
    for d in dnext:
        d.fill(0)
    for t in reversed(range(T)):
        dh = dhs[t]
        dh += dnext[0]  # from above, and from step t+1
        cell.backward(t, buf, w, (dh,) + dnext[1:], dgx[t], dgh[t], dprev)
        dnext, dprev = dprev, dnext
    return dgx, dgh


def _final_state(cell, buf):
    return tuple(buf[name][-1].T.copy() for name in cell.state_names)  # (B, H) each


def loss_and_grads(params, spec, x, y, state, masks=None):
    """Forward and backward over one window.

    Inputs: x, y integer ids (B, T), y being x shifted by one; state, a list of per-layer
    tuples of (B, H) arrays carried in from the previous window; masks, dropout masks from
    params.dropout_masks() or None (weight drop is applied around it, for both engines:
    engines.loss_and_grads). Returns (loss, grads, new_state): the mean
    cross-entropy per character, a dict of gradients with the keys of params, and the
    state after the window.
    """
    cell = STEPS[spec.cell]
    layers, new_state, top, h_cols = _forward_layers(cell, params, spec, x.T, state, masks)
    loss, grads, dtop = _output_layer(params, spec, top, y.T.reshape(-1))
    _backward_layers(cell, params, spec, layers, dtop, h_cols, masks, grads)
    return loss, grads, new_state


# Columns are made where they are needed and no earlier, in one (H, (T+1)*B) buffer,
# "h_cols", that holds a layer's states h_0 .. h_T: its first T*B columns are the states
# each step starts from (for dW_hh), its last T*B the layer's outputs (for the layer
# above's dW_ih, or the output layer), so one copy serves both. It holds the top layer's
# states first, then each lower layer's, once the layer above is done with it. With
# dropout, what the layer above sees is masked ("masked") and gets columns of its own.

def _forward_layers(cell, params, spec, xs, state, masks):
    """Each layer over the window, bottom up. xs: ids (T, B). Returns every layer's
    (inputs, buffers, prepared weights), the state after the window, the top layer's
    (masked) outputs as columns (H, T*B), and h_cols."""
    (T, B), H, L = xs.shape, spec.hidden, spec.layers
    dtype, N = params["out.weight"].dtype, T * B
    inputs, layers, new_state = xs, [], []
    for layer in range(L):
        buf, w = _layer_forward(cell, params, layer, inputs, state[layer])
        new_state.append(_final_state(cell, buf))
        layers.append((inputs, buf, w))
        inputs = buf["h"][1:]  # (T, H, B)
        if masks is not None and layer < L - 1:  # read by the next layer's first GEMM
            inputs = np.multiply(inputs, masks[layer], out=scratch("masked", (T, H, B), dtype))
    h_cols = columns(buf["h"], scratch("h_cols", (H, N + B), dtype))  # (H, (T+1)*B)
    top = h_cols[:, B:]  # (H, T*B), strided: np.matmul passes it to BLAS as it is
    if masks is not None:  # the shared columns are free till the backward pass
        masked = np.multiply(inputs, masks[L - 1], out=scratch("masked", (T, H, B), dtype))
        top = columns(masked, shared_columns(spec.gates * H, N, dtype)[:H])
    return layers, new_state, top, h_cols


def _output_layer(params, spec, top, targets):
    """The output layer over all T*B columns at once (in chunks of columns where V is
    large): logits = V s_t + by for every t, the loss, and one GEMM for the sum over t of
    dlogits_t s_t^T. Returns the loss, the gradients so far (the output layer's), and
    dtop (H, T*B), the gradient reaching the top layer's (masked) outputs."""
    (H, N), V = top.shape, spec.vocab_size
    w_out, dtype, loss = params["out.weight"], top.dtype, 0.0
    grads = {"out.weight": np.zeros_like(w_out), "out.bias": np.zeros_like(params["out.bias"])}
    chunks = _chunks(V, N, w_out.itemsize)
    spare_cols = shared_columns(spec.gates * H, N, dtype)[:H]  # free till the backward
    dtop = spare_cols if len(chunks) == 1 else scratch("dtop", (H, N), dtype)
    for c in chunks:
        logits = blas.active.matmul(w_out, top[:, c],
                                    scratch("logits", (V, c.stop - c.start), dtype))
        logits += params["out.bias"][:, None]
        part, dlogits = softmax_cross_entropy(logits, targets[c], N)  # (V, columns)
        loss += part
        grads["out.weight"] += blas.active.matmul(dlogits, top[:, c].T)
        grads["out.bias"] += dlogits.sum(axis=1)
        blas.active.matmul(w_out.T, dlogits, dtop[:, c])  # top was last read above, if one chunk
    return loss, grads, dtop


def _backward_layers(cell, params, spec, layers, dtop, h_cols, masks, grads):
    """BPTT through each layer, top down, adding every layer's weight gradients to grads:
    each a sum over t, as one product over the window's T*B columns."""
    (T, H, B), L, N = layers[0][1]["h"][1:].shape, spec.layers, dtop.shape[1]
    dtype = dtop.dtype
    dout = from_columns(dtop, scratch("dout", (T, H, B), dtype))  # reaching each output
    for layer in reversed(range(L)):
        layer_inputs, buf, w = layers[layer]
        if masks is not None:
            dout *= masks[layer]
            if layer < L - 1:  # else there since the layer above's dW_ih
                columns(buf["h"], h_cols)
        prev_cols = h_cols[:, :N]  # h_0 .. h_T-1, made before the RNN's dgx overwrites them
        dgx, dgh = _layer_backward(cell, buf, w, dout, scratch.scope(f"l{layer}."))
        w_ih, w_hh, b_ih, b_hh = layer_keys(layer)
        GH = dgx.shape[1]  # (G*H, T*B) columns, in PyTorch's gate order:
        dgx2 = columns(dgx, shared_columns(GH, N, dtype), cell.order)
        dgh2 = dgx2 if dgh is dgx else columns(dgh, scratch("dgh_cols", (GH, N), dtype),
                                               cell.order)
        grads[b_ih] = _sum_over_columns(dgx2)
        grads[b_hh] = grads[b_ih].copy() if dgh is dgx else _sum_over_columns(dgh2)
        grads[w_hh] = blas.active.matmul(dgh2, prev_cols.T)  # sum over t of dgh_t h_{t-1}^T
        if layer == 0:  # sum over t of dgx_t x_t^T, x_t one-hot: a scatter-add
            grads[w_ih] = kernels.active.lookup_grad(dgx2, layer_inputs.reshape(-1),
                                                     np.empty((GH, spec.vocab_size), dtype))
            continue
        below = layers[layer - 1][1]["h"]  # the layer's inputs are the outputs below
        if masks is None:
            input_cols = columns(below, h_cols)[:, B:]
        else:  # remade, as columns where the states will go
            masked = np.multiply(below[1:], masks[layer - 1], out=scratch("masked", (T, H, B), dtype))
            input_cols = columns(masked, h_cols[:, :N])
        grads[w_ih] = blas.active.matmul(dgx2, input_cols.T)  # sum over t of dgx_t x_t^T
        # The gradient reaching the layer below's outputs, computed in this layer's spent
        # state buffer (free now) and laid out back as (T, H, B).
        spent = buf["h"].reshape(-1)[:H * N].reshape(H, N)
        dout = from_columns(blas.active.matmul(params[w_ih].T, dgx2, spent),
                            scratch("dout", (T, H, B), dtype))


def forward(params, spec, x, state):
    """Inference over a window: x ids (B, T) -> logits (B, T, V), new state. No dropout."""
    cell = STEPS[spec.cell]
    inputs, new_state = x.T, []
    for layer in range(spec.layers):
        buf, _ = _layer_forward(cell, params, layer, inputs, state[layer])
        new_state.append(_final_state(cell, buf))
        inputs = buf["h"][1:]
    T, H, B = inputs.shape
    top = shared_columns(spec.gates * H, T * B, inputs.dtype)[:H]
    logits = blas.active.matmul(params["out.weight"], columns(inputs, top))  # (V, T*B)
    logits += params["out.bias"][:, None]  # the caller chooses T so that this fits (evaluate.py)
    return logits.reshape(-1, T, B).transpose(2, 1, 0), new_state


class Stepper:
    """The model run one character at a time for one stream, for sampling: each layer's
    weights laid out once, as prepare() lays them out for the time loop, and stacked over
    the layers, so that one kernel call (kernels.py: <cell>_sample_step) takes a character
    through the whole network."""

    def __init__(self, params, spec):
        self.cell, dtype = spec.cell, params["out.weight"].dtype
        layers = [prepare(STEPS[spec.cell], *(params[k] for k in layer_keys(layer)), batch=1)
                  for layer in range(spec.layers)]
        GH, H, L = spec.gates * spec.hidden, spec.hidden, spec.layers
        w_in, b_in, _ = layers[0]
        self.table = np.ascontiguousarray((w_in + b_in[:, None]).T)  # (V, G*H) rows
        self.w_in = np.array([w for w, _, _ in layers[1:]], dtype).reshape(L - 1, GH, H)
        self.b_in = np.array([b for _, b, _ in layers[1:]], dtype).reshape(L - 1, GH)
        self.w_hh = np.array([w.hh for _, _, w in layers])  # (L, G*H, H)
        self.b_hh = np.array([w.bias[:, 0] if w.bias is not None else np.zeros(GH, dtype)
                              for _, _, w in layers])  # (L, G*H): the GRU's hidden bias
        self.h, self.c = np.zeros((L, H), dtype), np.zeros((L, H), dtype)
        self.out_w, self.out_b = params["out.weight"], params["out.bias"]
        self.logits = np.empty(spec.vocab_size, dtype)
        self.a, self.gh = np.empty(GH, dtype), np.empty(GH, dtype)  # the step's scratch

    @property
    def state(self):
        """The network's state after the characters fed so far: per layer (h,) or (h, c),
        each (1, H), views of the arrays the kernel updates."""
        kept = (self.h, self.c)[:len(STEPS[self.cell].state_names)]
        return [tuple(a[layer][None] for a in kept) for layer in range(self.h.shape[0])]

    def __call__(self, char_id):
        """Feed one character id; returns the logits (V,) for the next one."""
        getattr(kernels.active, f"{self.cell}_sample_step")(
            self.table, self.w_in, self.b_in, self.w_hh, self.b_hh, self.h, self.c,
            int(char_id), self.out_w, self.out_b, self.logits, self.a, self.gh)
        return self.logits.copy()


stepper = Stepper
