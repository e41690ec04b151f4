"""The model as the textbook writes it: column vectors, one time step at a time.

Read this file first. It is the specification of rnnlm's mathematics; the fast engine
(rnnlm/fast/) computes exactly the same numbers, arranged for the machine, and the tests
hold the two equal to 1e-10.

Notation, for the vanilla (Elman) RNN, m characters in the vocabulary, n hidden units:

    x_t   (m, batch)  the input at step t, one column per stream (one-hot characters)
    s_t   (n, batch)  the hidden state
    U (n, m), W (n, n), ba (n, 1)       input weights, recurrent weights, bias
    V (m, n), by (m, 1)                 output layer

    s_t = tanh(U x_t + W s_{t-1} + ba)
    y_t = softmax(V s_t + by)                      predicted next-character distribution
    L   = -(1/N) sum_t sum_b log y_t[target]        mean cross-entropy, N = batch * T

Backpropagation through time: dL/ds_t has two sources, the output at step t and the state
at step t+1, so the backward pass runs t = T-1 .. 0 carrying dnext, the gradient from step
t+1 (layer_backward). U, W, ba are shared by every step, so their gradients are sums over
t: the `+=` there. A window's backward pass starts with dnext = 0: nothing flows back from
beyond it, and that is the truncation of truncated BPTT.

In reading order: each cell's step forward and backward (RNN, LSTM, GRU), then through
time (a layer over a window, forward and backward), then the language model (the loss,
its gradient y_t - onehot, and the layers stacked), and last the conversion between these
names and the checkpoint's.

Arrays are float64 by default. Nothing here is preallocated or reused; it is allowed to be
slow, never to be clever.
"""
import numpy as np

from rnnlm.params import CELLS, layer_keys, zero_state


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def softmax(z):
    """Column-wise softmax of z (m, batch)."""
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _prediction(s, parameters):
    """softmax(V s + by) where the parameters hold an output layer, else None (a layer
    below the top of a stack has none)."""
    if "V" not in parameters:
        return None
    return softmax(parameters["V"] @ s + parameters["by"])


# --- The vanilla RNN ----------------------------------------------------------------------

def rnn_cell_forward(x_t, s_prev, parameters, activation="tanh"):
    """One step. x_t (m, batch), s_prev (n, batch); parameters U, W, ba (and V, by).
    Returns s_next (n, batch), out_pred (m, batch) or None, and the cache for backward.
    activation="identity" makes the linear RNN that analyses of the gradient start from.

    Equations:
        s_next   = tanh(U x_t + W s_prev + ba)
        out_pred = softmax(V s_next + by)
    """
    U, W, ba = parameters["U"], parameters["W"], parameters["ba"]
    a = U @ x_t + W @ s_prev + ba
    s_next = a if activation == "identity" else np.tanh(a)
    cache = (s_next, s_prev, x_t, parameters, activation)
    return s_next, _prediction(s_next, parameters), cache


def rnn_cell_backward(ds_next, cache):
    """ds_next: dL/ds_next (n, batch). Returns dx_t, ds_prev, dU, dW, dba."""
    s_next, s_prev, x_t, parameters, activation = cache
    if activation == "identity":
        da = ds_next
    else:
        da = (1 - s_next ** 2) * ds_next  # backprop through tanh: dL/d(U x_t + W s_prev + ba)
    return {"dx_t": parameters["U"].T @ da,
            "ds_prev": parameters["W"].T @ da,
            "dU": da @ x_t.T,
            "dW": da @ s_prev.T,
            "dba": da.sum(axis=1, keepdims=True)}  # summed over the batch


# --- LSTM ---------------------------------------------------------------------------------

def lstm_cell_forward(x_t, s_prev, c_prev, parameters):
    """One step. Parameters U_k (n, m), W_k (n, n), b_k (n, 1) for the gates k = i, f, g, o
    (PyTorch's order). Returns s_next, c_next, out_pred or None, cache.

    Equations:
        i = sigmoid(U_i x_t + W_i s_prev + b_i)        input gate
        f = sigmoid(U_f x_t + W_f s_prev + b_f)        forget gate
        g = tanh(U_g x_t + W_g s_prev + b_g)           candidate cell
        o = sigmoid(U_o x_t + W_o s_prev + b_o)        output gate
        c_next = f * c_prev + i * g
        s_next = o * tanh(c_next)
    """
    p = parameters
    i = sigmoid(p["U_i"] @ x_t + p["W_i"] @ s_prev + p["b_i"])
    f = sigmoid(p["U_f"] @ x_t + p["W_f"] @ s_prev + p["b_f"])
    g = np.tanh(p["U_g"] @ x_t + p["W_g"] @ s_prev + p["b_g"])
    o = sigmoid(p["U_o"] @ x_t + p["W_o"] @ s_prev + p["b_o"])
    c_next = f * c_prev + i * g
    s_next = o * np.tanh(c_next)
    cache = (s_next, c_next, s_prev, c_prev, (i, f, g, o), x_t, p)
    return s_next, c_next, _prediction(s_next, p), cache


def lstm_cell_backward(ds_next, dc_next, cache):
    """ds_next, dc_next: dL/ds_next and dL/dc_next (n, batch).
    Returns dx_t, ds_prev, dc_prev and dU_k, dW_k, db_k for k = i, f, g, o."""
    s_next, c_next, s_prev, c_prev, (i, f, g, o), x_t, p = cache
    tanh_c = np.tanh(c_next)
    dc = dc_next + ds_next * o * (1 - tanh_c ** 2)  # c reaches the loss via c_next and s_next
    da = {"i": dc * g * i * (1 - i),  # gradients of the gates' pre-activations
          "f": dc * c_prev * f * (1 - f),
          "g": dc * i * (1 - g ** 2),
          "o": ds_next * tanh_c * o * (1 - o)}
    grads = {"dx_t": sum(p[f"U_{k}"].T @ da[k] for k in "ifgo"),
             "ds_prev": sum(p[f"W_{k}"].T @ da[k] for k in "ifgo"),
             "dc_prev": dc * f}
    for k in "ifgo":
        grads[f"dU_{k}"] = da[k] @ x_t.T
        grads[f"dW_{k}"] = da[k] @ s_prev.T
        grads[f"db_{k}"] = da[k].sum(axis=1, keepdims=True)
    return grads


# --- GRU ----------------------------------------------------------------------------------

def gru_cell_forward(x_t, s_prev, parameters):
    """One step. Parameters U_k, W_k for the gates k = r, z, n (PyTorch's order), biases
    b_r, b_z, and b_in, b_hn apart, because r scales the hidden side of n only.
    Returns s_next, out_pred or None, cache.

    Equations (PyTorch's):
        r = sigmoid(U_r x_t + W_r s_prev + b_r)        reset gate
        z = sigmoid(U_z x_t + W_z s_prev + b_z)        update gate
        n = tanh(U_n x_t + b_in + r * (W_n s_prev + b_hn))
        s_next = (1 - z) * n + z * s_prev
    """
    p = parameters
    r = sigmoid(p["U_r"] @ x_t + p["W_r"] @ s_prev + p["b_r"])
    z = sigmoid(p["U_z"] @ x_t + p["W_z"] @ s_prev + p["b_z"])
    hn = p["W_n"] @ s_prev + p["b_hn"]
    n = np.tanh(p["U_n"] @ x_t + p["b_in"] + r * hn)
    s_next = (1 - z) * n + z * s_prev
    cache = (s_next, s_prev, (r, z, n, hn), x_t, p)
    return s_next, _prediction(s_next, p), cache


def gru_cell_backward(ds_next, cache):
    """ds_next (n, batch). Returns dx_t, ds_prev and dU_k, dW_k for k = r, z, n, db_r,
    db_z, db_in, db_hn."""
    s_next, s_prev, (r, z, n, hn), x_t, p = cache
    da_n = ds_next * (1 - z) * (1 - n ** 2)  # through s_next = ... + (1 - z) n, then tanh
    da_hn = da_n * r  # the hidden side of n, W_n s_prev + b_hn, is scaled by r
    da_r = da_n * hn * r * (1 - r)
    da_z = ds_next * (s_prev - n) * z * (1 - z)
    return {"dx_t": p["U_r"].T @ da_r + p["U_z"].T @ da_z + p["U_n"].T @ da_n,
            "ds_prev": (p["W_r"].T @ da_r + p["W_z"].T @ da_z + p["W_n"].T @ da_hn
                        + ds_next * z),  # s_prev also reaches s_next directly, through z
            "dU_r": da_r @ x_t.T, "dU_z": da_z @ x_t.T, "dU_n": da_n @ x_t.T,
            "dW_r": da_r @ s_prev.T, "dW_z": da_z @ s_prev.T, "dW_n": da_hn @ s_prev.T,
            "db_r": da_r.sum(axis=1, keepdims=True), "db_z": da_z.sum(axis=1, keepdims=True),
            "db_in": da_n.sum(axis=1, keepdims=True), "db_hn": da_hn.sum(axis=1, keepdims=True)}


# --- Through time ---------------------------------------------------------------------------

def cell_forward(cell, x_t, state, p, activation="tanh"):
    """One step of any cell: state is (s,) or (s, c). Returns the new state and the cache.
    activation is the vanilla RNN's (tanh, or identity for the linear RNN)."""
    if cell == "lstm":
        s, c, _, cache = lstm_cell_forward(x_t, *state, p)
        return (s, c), cache
    if cell == "rnn":
        s, _, cache = rnn_cell_forward(x_t, *state, p, activation)
    else:
        s, _, cache = gru_cell_forward(x_t, *state, p)
    return (s,), cache


def cell_backward(cell, dstate, cache):
    """dstate: (ds,) or (ds, dc) reaching the step's new state. Returns the cell's gradient
    dict, with the gradient reaching the previous state as "dstate_prev"."""
    if cell == "lstm":
        g = lstm_cell_backward(*dstate, cache)
        g["dstate_prev"] = (g["ds_prev"], g["dc_prev"])
    else:
        g = (rnn_cell_backward if cell == "rnn" else gru_cell_backward)(*dstate, cache)
        g["dstate_prev"] = (g["ds_prev"],)
    return g


def layer_forward(cell, inputs, state, p, activation="tanh"):
    """One layer over a window: inputs, a list of T arrays x_t (columns); state, the
    layer's (s,) or (s, c) before the first step. Returns its outputs s_t (a list), its
    state after the last step, and the caches for layer_backward."""
    outputs, steps = [], []
    for x_t in inputs:
        state, cache = cell_forward(cell, x_t, state, p, activation)
        outputs.append(state[0])
        steps.append(cache)
    return outputs, state, {"cell": cell, "p": p, "steps": steps}


def layer_backward(ds, caches):
    """Backpropagation through time in one layer. ds: a list over t of dL/ds_t from above
    (the output layer, or the layer above). Returns the gradients reaching each step's
    input x_t (a list), the layer's parameters' gradients, each summed over t, and the
    gradient reaching the state before the window."""
    cell, p = caches["cell"], caches["p"]
    grads = {name: np.zeros_like(p[name]) for name in parameter_names(cell)}
    # dnext: what flows back into step t from step t+1. Beyond the window's last step
    # there is nothing: that is the truncation of truncated BPTT, dL/ds_T = 0.
    dnext = tuple(np.zeros_like(ds[-1]) for _ in CELLS[cell].states)
    dx = [None] * len(ds)
    for t in reversed(range(len(ds))):
        g = cell_backward(cell, (ds[t] + dnext[0],) + dnext[1:], caches["steps"][t])
        for name in grads:
            grads[name] += g["d" + name]  # shared by every step: the gradients add up
        dx[t], dnext = g["dx_t"], g["dstate_prev"]
    return dx, grads, dnext


def rnn_forward(x, s0, parameters, activation="tanh"):
    """The RNN over a sequence (the exercise's name for layer_forward of the RNN).
    x (m, batch, T), s0 (n, batch). Returns s (n, batch, T), y (m, batch, T) and the
    caches for rnn_backward."""
    steps = [x[:, :, t] for t in range(x.shape[2])]
    outputs, _, caches = layer_forward("rnn", steps, (s0,), parameters, activation)
    y = [_prediction(s_t, parameters) for s_t in outputs]
    return np.stack(outputs, axis=2), np.stack(y, axis=2), caches


def rnn_backward(ds, caches):
    """ds (n, batch, T): the upstream gradient of every state s_t. Step t receives
    ds[:, :, t] plus what flows back from step t+1. Returns dx, ds0, dU, dW, dba."""
    dx, grads, (ds0,) = layer_backward([ds[:, :, t] for t in range(ds.shape[2])], caches)
    return {"dx": np.stack(dx, axis=2), "ds0": ds0, **{"d" + k: v for k, v in grads.items()}}


# --- The language model ----------------------------------------------------------------------

def loss_and_grads(params, spec, x, y, state, masks=None, activation="tanh"):
    """Forward and backward over one window, the same contract as the fast engine's.

    x, y: ids (B, T), y being x shifted by one; state: per-layer tuples of (B, H) arrays
    carried in; masks: per-layer dropout masks (T, H, B) or None (params.dropout_masks:
    a mask per step, or one locked over the window). Weight drop is applied around
    this function, for both engines (engines.loss_and_grads). Returns the mean
    cross-entropy, checkpoint-named gradients (params' dtype), the state after the window.
    activation: the vanilla RNN's (tanh; identity for the linear RNN of gradient studies).
    """
    layers, out = to_textbook(params, spec)
    (B, T), N = x.shape, x.size
    inputs = [np.eye(spec.vocab_size)[:, x[:, t]] for t in range(T)]  # one-hot x_t, (m, B)
    caches, new_state = [], []
    for l in range(spec.layers):  # layer l reads layer l-1's outputs, the whole window
        carried = tuple(a.T.astype(np.float64) for a in state[l])  # as columns (n, B)
        outputs, last, layer_caches = layer_forward(spec.cell, inputs, carried, layers[l],
                                                    activation)
        caches.append(layer_caches)
        new_state.append(last)
        inputs = outputs if masks is None else [s * masks[l][t] for t, s in enumerate(outputs)]

    # The output layer and the loss: y_t = softmax(V s_t + by), L = -(1/N) sum log y_t[target].
    loss, dout = 0.0, {"V": np.zeros_like(out["V"]), "by": np.zeros_like(out["by"])}
    ds = []  # dL/ds_t reaching the top layer's outputs
    for t, s_t in enumerate(inputs):
        probs = softmax(out["V"] @ s_t + out["by"])  # y_t, (m, B)
        loss -= np.log(probs[y[:, t], np.arange(B)]).sum()
        dlogits = probs  # softmax and cross-entropy together: (y_t - onehot(target)) / N
        dlogits[y[:, t], np.arange(B)] -= 1
        dlogits /= N
        dout["V"] += dlogits @ s_t.T  # V is shared by every step: summed over t
        dout["by"] += dlogits.sum(axis=1, keepdims=True)
        ds.append(out["V"].T @ dlogits)

    grads = [None] * spec.layers
    for l in reversed(range(spec.layers)):  # BPTT through each layer, from the top down
        if masks is not None:
            ds = [d * masks[l][t] for t, d in enumerate(ds)]  # through dropout's mask
        ds, grads[l], _ = layer_backward(ds, caches[l])  # ds: now reaching the layer below
    dtype = params["out.weight"].dtype
    grads = {k: v.astype(dtype) for k, v in from_textbook(grads, dout, spec, True).items()}
    return loss / N, grads, [tuple(a.T.astype(dtype) for a in s) for s in new_state]


def forward(params, spec, x, state):
    """Inference over a window: x ids (B, T) -> logits (B, T, V), new state. No dropout."""
    layers, out = to_textbook(params, spec)
    inputs = [np.eye(spec.vocab_size)[:, x[:, t]] for t in range(x.shape[1])]
    new_state = []
    for l in range(spec.layers):
        carried = tuple(a.T.astype(np.float64) for a in state[l])
        inputs, last, _ = layer_forward(spec.cell, inputs, carried, layers[l])
        new_state.append(last)
    logits = np.stack([out["V"] @ s_t + out["by"] for s_t in inputs], axis=1)  # (V, T, B)
    dtype = params["out.weight"].dtype
    return logits.T.astype(dtype), [tuple(a.T.astype(dtype) for a in s) for s in new_state]


class Stepper:
    """For sampling: feed one character id, get the logits (V,) of the next. `state` is
    the network's state after the characters fed so far (per layer, (h,) or (h, c), each
    (1, H))."""

    def __init__(self, params, spec):
        self.params, self.spec = params, spec
        self.state = zero_state(spec, 1, params["out.weight"].dtype)

    def __call__(self, char_id):
        logits, self.state = forward(self.params, self.spec, np.array([[char_id]]), self.state)
        return logits[0, 0]


stepper = Stepper


# --- Checkpoint names <-> textbook names -------------------------------------------------------

def blocks(cell):
    """The textbook's names of each gate block of a cell's stacked arrays (params.CELLS):
    (its rows of W_ih, of W_hh, its bias: b_ih + b_hh, or the two apart where the cell
    keeps them apart, as the GRU's n). A cell of one block is the RNN's U, W, ba."""
    facts = CELLS[cell]
    for gate in facts.gates:
        k = f"_{gate}" if len(facts.gates) > 1 else ""
        bias = (f"b_i{gate}", f"b_h{gate}") if gate in facts.separate_biases else f"b{k or 'a'}"
        yield f"U{k}", f"W{k}", bias


def parameter_names(cell):
    """Every textbook name of one layer of the cell, in block order."""
    return [name for block in blocks(cell) for part in block
            for name in (part if isinstance(part, tuple) else (part,))]


def to_textbook(params, spec, dtype=np.float64):
    """Checkpoint-named parameters -> (one dict per layer, the output layer {V, by}).
    U = rnn.weight_ih_l0, W = rnn.weight_hh_l0, ba = rnn.bias_ih_l0 + rnn.bias_hh_l0,
    V = out.weight, by = out.bias; LSTM and GRU gates are blocks of H rows."""
    H, layers = spec.hidden, []
    for layer in range(spec.layers):
        w_ih, w_hh, b_ih, b_hh = (params[k].astype(dtype) for k in layer_keys(layer))
        p = {}
        for k, (u, w, b) in enumerate(blocks(spec.cell)):
            rows = slice(k * H, (k + 1) * H)
            p[u], p[w] = w_ih[rows], w_hh[rows]
            if isinstance(b, tuple):
                p[b[0]], p[b[1]] = b_ih[rows, None], b_hh[rows, None]
            else:
                p[b] = (b_ih[rows] + b_hh[rows])[:, None]
        layers.append(p)
    output = {"V": params["out.weight"].astype(dtype), "by": params["out.bias"].astype(dtype)[:, None]}
    return layers, output


def from_textbook(layers, output, spec, gradients=False):
    """The inverse of to_textbook. A summed bias ba = b_ih + b_hh goes back as b_ih = ba,
    b_hh = 0; for gradients, dL/db_ih = dL/db_hh = dL/dba."""
    params = {}
    for layer, p in enumerate(layers):
        w_ih, w_hh, b_ih, b_hh = layer_keys(layer)
        cell_blocks = list(blocks(spec.cell))
        params[w_ih] = np.concatenate([p[u] for u, _, _ in cell_blocks])
        params[w_hh] = np.concatenate([p[w] for _, w, _ in cell_blocks])
        ih, hh = [], []
        for _, _, b in cell_blocks:
            summed = not isinstance(b, tuple)
            ih.append(p[b] if summed else p[b[0]])
            hh.append((p[b] if gradients else np.zeros_like(p[b])) if summed else p[b[1]])
        params[b_ih], params[b_hh] = np.concatenate(ih)[:, 0], np.concatenate(hh)[:, 0]
    params["out.weight"], params["out.bias"] = output["V"], output["by"][:, 0]
    return params
