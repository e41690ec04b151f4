"""One time step of each recurrent cell, forward and backward.

The input-to-hidden product of a whole window is done once, outside the time loop, as one
GEMM (or a lookup for one-hot input), so a step receives it ready-made:

    gx = x W_ih^T + b_ih        (B, G*H), G = 1 (rnn), 4 (lstm), 3 (gru)

and a step's backward returns the gradient with respect to it, `dgx`, together with `dgh`,
the gradient with respect to the hidden-side pre-activation `gh = h_prev W_hh^T + b_hh`.
The model turns the stacked `dgx`, `dgh` of a window into weight gradients with one GEMM
each. The two differ only for the GRU, where r gates the hidden side of n.

Gate order and equations are PyTorch's, so checkpoints load into nn.RNN/LSTM/GRU.
State is a tuple: (h,) for rnn and gru, (h, c) for lstm.
"""
import numpy as np


def sigmoid(x, out=None):
    """Logistic function via tanh: stable for any x and one ufunc pass."""
    out = np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


# --- Elman RNN ------------------------------------------------------------------------
# Equations:
#   h = tanh(gx + h_prev W_hh^T + b_hh)

def rnn_forward(gx, state, w_hh, b_hh):
    """Inputs: gx (B, H), state (h_prev,) with h_prev (B, H), w_hh (H, H), b_hh (H,).
    Returns (h,), cache."""
    (h_prev,) = state
    h = h_prev @ w_hh.T
    h += gx
    h += b_hh
    np.tanh(h, out=h)
    return (h,), (h,)


def rnn_backward(dstate, cache, w_hh):
    """Inputs: dstate (dh,) with dh (B, H), the cache of rnn_forward, w_hh (H, H).
    Returns dgx (B, H), dgh (B, H), (dh_prev,)."""
    (dh,) = dstate
    (h,) = cache
    dhraw = dh * (1.0 - h * h)  # backprop through tanh
    return dhraw, dhraw, (dhraw @ w_hh,)


# --- LSTM -----------------------------------------------------------------------------
# Equations (gates i, f, g, o stacked in that order in W_ih, W_hh and the biases):
#   a = gx + h_prev W_hh^T + b_hh
#   i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
#   c = f * c_prev + i * g
#   h = o * tanh(c)

def lstm_forward(gx, state, w_hh, b_hh):
    """Inputs: gx (B, 4H), state (h_prev, c_prev) each (B, H), w_hh (4H, H), b_hh (4H,).
    Returns (h, c), cache."""
    h_prev, c_prev = state
    H = h_prev.shape[1]
    acts = h_prev @ w_hh.T  # (B, 4H): pre-activations, then activations in place
    acts += gx
    acts += b_hh
    g = np.tanh(acts[:, 2 * H:3 * H])
    sigmoid(acts, out=acts)
    acts[:, 2 * H:3 * H] = g
    i, f, o = acts[:, :H], acts[:, H:2 * H], acts[:, 3 * H:]
    c = f * c_prev
    c += i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return (h, c), (acts, c_prev, tanh_c)


def lstm_backward(dstate, cache, w_hh):
    """Inputs: dstate (dh, dc) each (B, H), the cache of lstm_forward, w_hh (4H, H).
    Returns dgx (B, 4H), dgh (B, 4H), (dh_prev, dc_prev)."""
    dh, dc = dstate
    acts, c_prev, tanh_c = cache
    H = dh.shape[1]
    i, f, g, o = acts[:, :H], acts[:, H:2 * H], acts[:, 2 * H:3 * H], acts[:, 3 * H:]
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    da = np.empty_like(acts)
    np.multiply(dc * g, i * (1.0 - i), out=da[:, :H])
    np.multiply(dc * c_prev, f * (1.0 - f), out=da[:, H:2 * H])
    np.multiply(dc * i, 1.0 - g * g, out=da[:, 2 * H:3 * H])
    np.multiply(dh * tanh_c, o * (1.0 - o), out=da[:, 3 * H:])
    return da, da, (da @ w_hh, dc * f)


# --- GRU ------------------------------------------------------------------------------
# Equations (gates r, z, n stacked in that order):
#   gh = h_prev W_hh^T + b_hh
#   r = sigmoid(gx_r + gh_r)   z = sigmoid(gx_z + gh_z)
#   n = tanh(gx_n + r * gh_n)
#   h = (1 - z) * n + z * h_prev

def gru_forward(gx, state, w_hh, b_hh):
    """Inputs: gx (B, 3H), state (h_prev,) with h_prev (B, H), w_hh (3H, H), b_hh (3H,).
    Returns (h,), cache."""
    (h_prev,) = state
    H = h_prev.shape[1]
    gh = h_prev @ w_hh.T
    gh += b_hh
    rz = sigmoid(gx[:, :2 * H] + gh[:, :2 * H])
    r, z = rz[:, :H], rz[:, H:]
    n = r * gh[:, 2 * H:]
    n += gx[:, 2 * H:]
    np.tanh(n, out=n)
    h = h_prev - n
    h *= z
    h += n
    return (h,), (h_prev, rz, n, gh[:, 2 * H:])


def gru_backward(dstate, cache, w_hh):
    """Inputs: dstate (dh,) with dh (B, H), the cache of gru_forward, w_hh (3H, H).
    Returns dgx (B, 3H), dgh (B, 3H), (dh_prev,)."""
    (dh,) = dstate
    h_prev, rz, n, gh_n = cache
    H = dh.shape[1]
    r, z = rz[:, :H], rz[:, H:]
    dgx = np.empty_like(rz, shape=(dh.shape[0], 3 * H))
    dn_raw = dgx[:, 2 * H:]
    np.multiply(dh * (1.0 - z), 1.0 - n * n, out=dn_raw)  # backprop through tanh
    np.multiply(dn_raw * gh_n, r * (1.0 - r), out=dgx[:, :H])
    np.multiply(dh * (h_prev - n), z * (1.0 - z), out=dgx[:, H:2 * H])
    dgh = dgx.copy()
    dgh[:, 2 * H:] *= r
    dh_prev = dgh @ w_hh
    dh_prev += dh * z
    return dgx, dgh, (dh_prev,)


CELLS = {
    "rnn": (1, 1, rnn_forward, rnn_backward),
    "lstm": (4, 2, lstm_forward, lstm_backward),
    "gru": (3, 1, gru_forward, gru_backward),
}
"""name -> (gates G, state tuple length, step forward, step backward)."""
