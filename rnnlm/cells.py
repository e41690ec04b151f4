"""One time step of each recurrent cell, forward and backward.

Gate order and equations are PyTorch's, so checkpoints load into nn.RNN/LSTM/GRU.

How a step is fed. The input-to-hidden product of a whole window is one GEMM (or a lookup
for one-hot input) done before the time loop, so step t receives it ready-made,

    gx[t] = x_t W_ih^T + b_ih  (+ b_hh where it can be folded in)        (B, G*H)

and its backward writes `dgx[t]`, the gradient with respect to that pre-activation, and
`dgh[t]`, the one with respect to the hidden side `h_prev W_hh^T + b_hh`. The model turns
the stacked dgx, dgh of a window into weight gradients with one GEMM each. They differ only
for the GRU, where r gates the hidden side of n.

Where a step keeps things. A step reads the previous state from, and writes its
activations into, slot t of `buf`, the window's buffers (a dict of (T or T+1, B, ...)
arrays from `buffers()`): `buf["h"][t]` is the state before step t, `buf["h"][t+1]` after
it. So state is never copied, the backward pass finds every cache where the forward left it,
and nothing is allocated inside the time loop. The step functions are pure over (buf, t):
any window can be recomputed from its inputs.

A trick for speed: sigmoid(a) = (1 + tanh(a / 2)) / 2, so the rows of W_hh, W_ih and the
biases that feed sigmoid gates are pre-scaled by 1/2 (`Prepared.scale`), and one tanh call
over all G*H pre-activations then yields every gate. Gradients are always with respect to
the true, unscaled pre-activations.
"""
from typing import NamedTuple

import numpy as np


class Prepared(NamedTuple):
    """One layer's weights, laid out once per window for the time loop."""

    hh: np.ndarray  # W_hh (G*H, H), true values: dh_prev = da @ hh
    hh_t: np.ndarray  # (W_hh * scale)^T, contiguous (H, G*H): a = h_prev @ hh_t
    bias: np.ndarray  # what is added inside the step: scaled b_hh for the GRU; else None
    scale: np.ndarray  # (G*H,) 1/2 on sigmoid rows, else 1: the input pre-scale, and the
    lo: np.ndarray  # act = tanh_out * scale + lo that turns tanh back into the activations


def _gate_scale(kinds, hidden, dtype):
    """Per-row (scale, lo) for gates of the given kinds ('s' sigmoid, 't' tanh): the input
    is multiplied by scale, and tanh_out * scale + lo is the activation."""
    scale = np.repeat([0.5 if k == "s" else 1.0 for k in kinds], hidden).astype(dtype)
    lo = np.repeat([0.5 if k == "s" else 0.0 for k in kinds], hidden).astype(dtype)
    return scale, lo


class RNN:
    """Elman RNN.  Equations:
        h = tanh(gx + h_prev W_hh^T),   gx = W_ih x + b_ih + b_hh
    """

    gates, state_names, kinds = 1, ("h",), "t"
    fold_hidden_bias = True  # b_hh can join b_ih in gx

    @staticmethod
    def buffers(T, B, H, dtype):
        return {"h": np.empty((T + 1, B, H), dtype)}

    @staticmethod
    def forward(t, gx, buf, w):
        h_prev, h = buf["h"][t], buf["h"][t + 1]
        np.dot(h_prev, w.hh_t, out=h)
        h += gx
        np.tanh(h, out=h)

    @staticmethod
    def backward(t, buf, w, dstate, dgx, dgh, dprev):
        """dstate (dh,) reaching h after step t; fills dgx (= dgh here) and dprev (dh_prev,)."""
        (dh,), h = dstate, buf["h"][t + 1]
        np.multiply(h, h, out=dgx)
        np.subtract(1.0, dgx, out=dgx)
        dgx *= dh  # backprop through tanh
        np.dot(dgx, w.hh, out=dprev[0])


class LSTM:
    """LSTM, gates i, f, g, o stacked in that order.  Equations:
        a = gx + h_prev W_hh^T,   gx = W_ih x + b_ih + b_hh
        i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
        c = f * c_prev + i * g
        h = o * tanh(c)
    """

    gates, state_names, kinds = 4, ("h", "c"), "ssts"
    fold_hidden_bias = True

    @staticmethod
    def buffers(T, B, H, dtype):
        return {"h": np.empty((T + 1, B, H), dtype), "c": np.empty((T + 1, B, H), dtype),
                "acts": np.empty((T, B, 4 * H), dtype),  # i, f, g, o after activation
                "tanh_c": np.empty((T, B, H), dtype)}

    @staticmethod
    def forward(t, gx, buf, w):
        acts, tanh_c = buf["acts"][t], buf["tanh_c"][t]
        c_prev, c, h = buf["c"][t], buf["c"][t + 1], buf["h"][t + 1]
        H = c.shape[1]
        np.dot(buf["h"][t], w.hh_t, out=acts)
        acts += gx
        np.tanh(acts, out=acts)
        acts *= w.scale  # tanh(a/2) -> sigmoid(a) on i, f, o
        acts += w.lo
        i, f, g, o = acts[:, :H], acts[:, H:2 * H], acts[:, 2 * H:3 * H], acts[:, 3 * H:]
        np.multiply(f, c_prev, out=c)
        np.multiply(i, g, out=tanh_c)
        c += tanh_c
        np.tanh(c, out=tanh_c)
        np.multiply(o, tanh_c, out=h)

    @staticmethod
    def backward(t, buf, w, dstate, dgx, dgh, dprev):
        """dstate (dh, dc) after step t; fills dgx (= dgh) and dprev (dh_prev, dc_prev)."""
        dh, dc_next = dstate
        dh_prev, dc = dprev  # dc is built in dc_prev's buffer, then scaled by f at the end
        acts, tanh_c, c_prev = buf["acts"][t], buf["tanh_c"][t], buf["c"][t]
        B, H = dh.shape
        i, f, g, o = acts[:, :H], acts[:, H:2 * H], acts[:, 2 * H:3 * H], acts[:, 3 * H:]
        # local derivatives: s(1 - s) for the sigmoid gates, 1 - g^2 for g
        np.subtract(1.0, acts, out=dgx)
        dgx *= acts
        da_i, da_f, da_g, da_o = (dgx[:, k * H:(k + 1) * H] for k in range(4))
        np.multiply(g, g, out=da_g)
        np.subtract(1.0, da_g, out=da_g)
        # dc = dc_next + dh * o * (1 - tanh(c)^2)
        np.multiply(tanh_c, tanh_c, out=dc)
        np.subtract(1.0, dc, out=dc)
        dc *= o
        dc *= dh
        dc += dc_next
        da_o *= tanh_c
        da_o *= dh
        da_i *= g
        da_f *= c_prev
        da_g *= i
        dgx.reshape(B, 4, H)[:, :3] *= dc[:, None, :]  # i, f, g all scale with dc
        np.dot(dgx, w.hh, out=dh_prev)
        dc *= f  # dc_prev


class GRU:
    """GRU, gates r, z, n stacked in that order (PyTorch's formula).  Equations:
        gh = h_prev W_hh^T + b_hh,   gx = W_ih x + b_ih
        r = sigmoid(gx_r + gh_r)   z = sigmoid(gx_z + gh_z)
        n = tanh(gx_n + r * gh_n)
        h = (1 - z) * n + z * h_prev
    """

    gates, state_names, kinds = 3, ("h",), "sst"
    fold_hidden_bias = False  # b_hn sits inside r * (...)

    @staticmethod
    def buffers(T, B, H, dtype):
        return {"h": np.empty((T + 1, B, H), dtype),
                "gh": np.empty((T, B, 3 * H), dtype),  # hidden side, r and z parts scaled
                "rzn": np.empty((T, B, 3 * H), dtype)}  # r, z, n after activation

    @staticmethod
    def forward(t, gx, buf, w):
        gh, rzn, h_prev, h = buf["gh"][t], buf["rzn"][t], buf["h"][t], buf["h"][t + 1]
        H = h.shape[1]
        np.dot(h_prev, w.hh_t, out=gh)
        gh += w.bias
        rz, n = rzn[:, :2 * H], rzn[:, 2 * H:]
        np.add(gx[:, :2 * H], gh[:, :2 * H], out=rz)
        np.tanh(rz, out=rz)
        rz *= 0.5  # tanh(a/2) -> sigmoid(a)
        rz += 0.5
        np.multiply(rzn[:, :H], gh[:, 2 * H:], out=n)
        n += gx[:, 2 * H:]
        np.tanh(n, out=n)
        np.subtract(h_prev, n, out=h)
        h *= rzn[:, H:2 * H]
        h += n

    @staticmethod
    def backward(t, buf, w, dstate, dgx, dgh, dprev):
        """dstate (dh,) after step t; fills dgx, dgh and dprev (dh_prev,)."""
        (dh,), (dh_prev,) = dstate, dprev
        gh, rzn, h_prev = buf["gh"][t], buf["rzn"][t], buf["h"][t]
        H = dh.shape[1]
        r, z, n = rzn[:, :H], rzn[:, H:2 * H], rzn[:, 2 * H:]
        da_r, da_z, da_n = dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:]
        # local derivatives s(1 - s) for r and z
        np.subtract(1.0, rzn[:, :2 * H], out=dgx[:, :2 * H])
        dgx[:, :2 * H] *= rzn[:, :2 * H]
        # da_n = dh * (1 - z) * (1 - n^2)      (backprop through tanh)
        np.multiply(n, n, out=da_n)
        np.subtract(1.0, da_n, out=da_n)
        np.subtract(1.0, z, out=dh_prev)  # dh_prev as scratch until the GEMM
        da_n *= dh_prev
        da_n *= dh
        # da_z = dh * (h_prev - n) * z(1 - z);  da_r = da_n * gh_n * r(1 - r)
        np.subtract(h_prev, n, out=dh_prev)
        da_z *= dh_prev
        da_z *= dh
        da_r *= gh[:, 2 * H:]
        da_r *= da_n
        dgh[:, :2 * H] = dgx[:, :2 * H]
        np.multiply(da_n, r, out=dgh[:, 2 * H:])
        np.dot(dgh, w.hh, out=dh_prev)
        dh_prev += dh * z


CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def prepare(cell, w_ih, w_hh, b_ih, b_hh):
    """Lay out one layer's weights for a window: returns (w_in_t, b_in, Prepared) where the
    input projection is gx = x @ w_in_t + b_in, or rows of w_in_t looked up for one-hot x.
    w_in_t is (in, G*H): a view of W_ih where nothing is scaled (the RNN), else a copy."""
    H = w_hh.shape[1]
    scale, lo = _gate_scale(cell.kinds, H, w_hh.dtype)
    scaled = bool((scale != 1).any())
    b_in = (b_ih + b_hh) if cell.fold_hidden_bias else b_ih.copy()
    w_in_t = w_ih.T
    if scaled:
        w_in_t = np.multiply(w_in_t, scale, order="C")
        b_in *= scale
    hh_t = np.multiply(w_hh.T, scale, order="C") if scaled else np.ascontiguousarray(w_hh.T)
    bias = None if cell.fold_hidden_bias else b_hh * scale
    return w_in_t, b_in, Prepared(w_hh, hh_t, bias, scale, lo)
