"""One time step of each recurrent cell, forward and backward.

Gate order and equations are PyTorch's, so checkpoints load into nn.RNN/LSTM/GRU.

Layout: feature-major. Inside a window every per-step array is (features, B): a state is
(H, B), the gates of a step are (G*H, B), gate k in rows k*H:(k+1)*H. Two things make
this the fast way round: the recurrent product is then W (G*H, H) @ h (H, B), which
OpenBLAS runs at nearly twice the rate of the (B, H) @ (H, G*H) it replaces (measured: 338
vs 194 GFLOP/s at H=512, B=32), and each gate is a contiguous block of rows, so the
elementwise work runs over contiguous memory instead of strided column slices.

How a step is fed. The input-to-hidden product is computed outside the cell (a lookup for
one-hot input, or one batched GEMM for the whole window), and the model writes it into
slot t of the cell's `input_slots()` before step t runs:

    gx = W_ih x_t + b_ih  (+ b_hh where it can be folded in)        (G*H, B)

The step adds the recurrent product to it in place. Its backward writes `dgx`, the gradient
with respect to that pre-activation, and `dgh`, the one with respect to the hidden side
`W_hh h_prev + b_hh`. The model turns the stacked dgx, dgh of a window into weight
gradients with one GEMM each. They differ only for the GRU, where r gates the hidden side
of n.

Where a step keeps things. A step reads the previous state from, and writes its
activations into, slot t of `buf`, the window's buffers (a dict of arrays shaped as
`buffer_shapes()` says, most (T or T+1, ..., B)): `buf["h"][t]` is the state before step
t, `buf["h"][t+1]` after it. So state is never copied, the backward pass finds every cache
where the forward left it, and nothing is allocated inside the time loop. Where a cell
allows it (`gradient_buffers()`), the backward pass writes dgx over the activations it has
finished with, which saves a window-sized buffer.

A trick for speed: sigmoid(a) = (1 + tanh(a / 2)) / 2, so the rows of W_hh, W_ih and the
biases that feed sigmoid gates are pre-scaled by 1/2 (`prepare`), and one tanh call over
all G*H pre-activations then yields every gate. Gradients are always with respect to the
true, unscaled pre-activations. A cell may also keep its gate blocks in another order
than PyTorch's (`order`: the parameter block of each of its blocks); prepare() lays the
weights out so, and the model puts the gradients back in PyTorch's order.
"""
from typing import NamedTuple

import numpy as np


class Prepared(NamedTuple):
    """One layer's recurrent weights, laid out once per window for the time loop, gate
    blocks in the cell's order."""

    hh_s: np.ndarray  # W_hh with sigmoid rows halved, (G*H, H): a = hh_s @ h_prev
    hh_t: np.ndarray  # W_hh^T, true values, (H, G*H): dh_prev = hh_t @ da
    bias: np.ndarray  # the GRU's scaled b_hh repeated over the batch (3H, B); else None


def _to_sigmoid(block):
    """tanh(a / 2) -> sigmoid(a), in place."""
    block *= 0.5
    block += 0.5


class RNN:
    """Elman RNN.  Equations:
        h = tanh(gx + W_hh h_prev),   gx = W_ih x + b_ih + b_hh
    """

    gates, state_names, kinds, order = 1, ("h",), "t", (0,)
    fold_hidden_bias = True  # b_hh can join b_ih in gx

    @staticmethod
    def buffer_shapes(T, B, H):
        return {"h": (T + 1, H, B), "hh": (H, B)}

    @staticmethod
    def input_slots(buf):
        """Where gx goes: into the output slot, where tanh's argument is built."""
        return buf["h"][1:]

    @staticmethod
    def gradient_buffers(buf):
        """Where backward() may write dgx, dgh: step t's output, which it reads last."""
        outputs = buf["h"][1:]
        return outputs, outputs

    @staticmethod
    def forward(t, buf, w):
        hh, h = buf["hh"], buf["h"][t + 1]  # h holds gx
        np.dot(w.hh_s, buf["h"][t], out=hh)
        h += hh
        np.tanh(h, out=h)

    @staticmethod
    def backward(t, buf, w, dstate, dgx, dgh, dprev):
        """dstate (dh,) reaching h after step t; fills dgx (= dgh here) and dprev (dh_prev,).
        dgx may be h itself."""
        (dh,), h = dstate, buf["h"][t + 1]
        np.multiply(h, h, out=dgx)
        np.subtract(1.0, dgx, out=dgx)
        dgx *= dh  # backprop through tanh
        np.dot(w.hh_t, dgx, out=dprev[0])


class LSTM:
    """LSTM, gates i, f, g, o stacked in that order in the parameters.  Equations:
        a = gx + W_hh h_prev,   gx = W_ih x + b_ih + b_hh
        i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
        c = f * c_prev + i * g
        h = o * tanh(c)
    Inside a step the gates are stacked o, i, f, g (`order`), so that the three sigmoid
    gates are one block of rows, and so are the three that scale with dc.
    """

    gates, state_names, kinds, order = 4, ("h", "c"), "ssst", (3, 0, 1, 2)
    fold_hidden_bias = True

    @staticmethod
    def buffer_shapes(T, B, H):
        return {"h": (T + 1, H, B), "c": (T + 1, H, B),
                "acts": (T, 4 * H, B),  # o, i, f, g after activation
                "hh": (4 * H, B),  # forward's scratch
                "tanh_c": (H, B),  # recomputed in the backward pass rather than kept
                "dc": (H, B), "dg": (H, B), "ds": (3 * H, B)}  # backward's scratch

    @staticmethod
    def input_slots(buf):
        """Where gx goes: into the gates' slot."""
        return buf["acts"]

    @staticmethod
    def gradient_buffers(buf):
        """Where backward() may write dgx, dgh: the step's activations."""
        return buf["acts"], buf["acts"]

    @staticmethod
    def forward(t, buf, w):
        acts, tanh_c, hh = buf["acts"][t], buf["tanh_c"], buf["hh"]  # acts holds gx
        c_prev, c, h = buf["c"][t], buf["c"][t + 1], buf["h"][t + 1]
        H = c.shape[0]
        np.dot(w.hh_s, buf["h"][t], out=hh)
        acts += hh
        np.tanh(acts, out=acts)
        _to_sigmoid(acts[:3 * H])  # o, i, f
        o, i, f, g = acts[:H], acts[H:2 * H], acts[2 * H:3 * H], acts[3 * H:]
        np.multiply(f, c_prev, out=c)
        np.multiply(i, g, out=tanh_c)
        c += tanh_c
        np.tanh(c, out=tanh_c)
        np.multiply(o, tanh_c, out=h)

    @staticmethod
    def backward(t, buf, w, dstate, dgx, dgh, dprev):
        """dstate (dh, dc) after step t; fills dgx (= dgh) and dprev (dh_prev, dc_prev).
        dgx may be the step's activations themselves: each is read before it is written."""
        dh, dc_next = dstate
        dh_prev, dc_prev = dprev
        acts, tanh_c, c_prev = buf["acts"][t], buf["tanh_c"], buf["c"][t]
        dc, dg, ds = buf["dc"], buf["dg"], buf["ds"]
        np.tanh(buf["c"][t + 1], out=tanh_c)  # kept no window of it: memory
        H = dh.shape[0]
        o, i, f, g = acts[:H], acts[H:2 * H], acts[2 * H:3 * H], acts[3 * H:]
        da_o, da_i, da_f, da_g = dgx[:H], dgx[H:2 * H], dgx[2 * H:3 * H], dgx[3 * H:]
        # dc = dc_next + dh * o * (1 - tanh(c)^2);  dc_prev = dc * f
        np.multiply(tanh_c, tanh_c, out=dc)
        np.subtract(1.0, dc, out=dc)
        dc *= o
        dc *= dh
        dc += dc_next
        np.multiply(dc, f, out=dc_prev)
        # da_g = dc * i * (1 - g^2)
        np.multiply(g, g, out=dg)
        np.subtract(1.0, dg, out=dg)
        dg *= i
        # s(1 - s) for the sigmoid gates o, i, f (their values are not needed after this)
        np.subtract(1.0, acts[:3 * H], out=ds)
        np.multiply(ds, acts[:3 * H], out=dgx[:3 * H])
        da_o *= tanh_c
        da_o *= dh
        da_i *= g
        da_f *= c_prev
        np.multiply(dg, dc, out=da_g)  # g is not needed after this
        dgx[H:3 * H].reshape(2, H, -1)[...] *= dc  # i, f
        np.dot(w.hh_t, dgx, out=dh_prev)


class GRU:
    """GRU, gates r, z, n stacked in that order (PyTorch's formula).  Equations:
        gh = W_hh h_prev + b_hh,   gx = W_ih x + b_ih
        r = sigmoid(gx_r + gh_r)   z = sigmoid(gx_z + gh_z)
        n = tanh(gx_n + r * gh_n)
        h = (1 - z) * n + z * h_prev
    """

    gates, state_names, kinds, order = 3, ("h",), "sst", (0, 1, 2)
    fold_hidden_bias = False  # b_hn sits inside r * (...)

    @staticmethod
    def buffer_shapes(T, B, H):
        return {"h": (T + 1, H, B),
                "gh": (T, 3 * H, B),  # hidden side, r and z parts scaled
                "rzn": (T, 3 * H, B),  # r, z, n after activation
                "rgh": (H, B)}  # forward's scratch

    @staticmethod
    def input_slots(buf):
        """Where gx goes: into the gates' slot, where each gate's argument is built."""
        return buf["rzn"]

    @staticmethod
    def gradient_buffers(buf):
        """None: backward() needs dgx, dgh of their own."""
        return None

    @staticmethod
    def forward(t, buf, w):
        gh, rzn, h_prev, h = buf["gh"][t], buf["rzn"][t], buf["h"][t], buf["h"][t + 1]
        H = h.shape[0]
        np.dot(w.hh_s, h_prev, out=gh)
        gh += w.bias
        rz, n, rgh = rzn[:2 * H], rzn[2 * H:], buf["rgh"]  # rzn holds gx
        rz += gh[:2 * H]
        np.tanh(rz, out=rz)
        _to_sigmoid(rz)
        np.multiply(rzn[:H], gh[2 * H:], out=rgh)
        n += rgh
        np.tanh(n, out=n)
        np.subtract(h_prev, n, out=h)
        h *= rzn[H:2 * H]
        h += n

    @staticmethod
    def backward(t, buf, w, dstate, dgx, dgh, dprev):
        """dstate (dh,) after step t; fills dgx, dgh and dprev (dh_prev,)."""
        (dh,), (dh_prev,) = dstate, dprev
        gh, rzn, h_prev = buf["gh"][t], buf["rzn"][t], buf["h"][t]
        H = dh.shape[0]
        r, z, n = rzn[:H], rzn[H:2 * H], rzn[2 * H:]
        da_rz, da_r, da_z, da_n = dgx[:2 * H], dgx[:H], dgx[H:2 * H], dgx[2 * H:]
        # local derivatives s(1 - s) for r and z
        np.subtract(1.0, rzn[:2 * H], out=da_rz)
        da_rz *= rzn[:2 * H]
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
        da_r *= gh[2 * H:]
        da_r *= da_n
        dgh[:2 * H] = da_rz
        np.multiply(da_n, r, out=dgh[2 * H:])
        np.dot(w.hh_t, dgh, out=dh_prev)
        np.multiply(dh, z, out=dh)  # dh is the caller's scratch
        dh_prev += dh


CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def _transpose(a, out, block=32):
    """out[...] = a.T, a block of rows at a time: measured 2.4-3.4x faster than one
    np.copyto of the transposed view, whose column reads miss the cache."""
    for i in range(0, a.shape[0], block):
        np.copyto(out[:, i:i + block], a[i:i + block].T)
    return out


def prepare(cell, w_ih, w_hh, b_ih, b_hh, batch, alloc=None):
    """Lay out one layer's weights for a window of `batch` streams: returns
    (w_in, b_in, Prepared) where the input projection is gx = w_in @ x + b_in[:, None]
    (or columns of w_in looked up, for one-hot x). Gate blocks are in the cell's `order`
    and sigmoid rows are halved. w_in is W_ih itself where nothing is reordered or scaled
    (the RNN), else a copy. alloc(name, shape, dtype), if given, supplies the arrays to
    write the copies into."""
    alloc = alloc or (lambda name, shape, dtype: np.empty(shape, dtype))
    GH, H = w_hh.shape
    dtype = w_hh.dtype
    b_in = (b_ih + b_hh) if cell.fold_hidden_bias else b_ih.copy()
    if cell.kinds == "t":  # nothing to reorder or scale
        return w_ih, b_in, Prepared(w_hh, _transpose(w_hh, alloc("hh_t", (H, GH), dtype)), None)
    w_in = alloc("w_in", w_ih.shape, dtype)
    hh_s = alloc("hh_s", w_hh.shape, dtype)
    hh_t = alloc("hh_t", (H, GH), dtype)
    b_mine = np.empty_like(b_in)
    bias = None
    if not cell.fold_hidden_bias:  # repeated over the batch: added without broadcasting
        bias = alloc("bias", (GH, batch), dtype)
    for k, (src, kind) in enumerate(zip(cell.order, cell.kinds)):
        mine, theirs = slice(k * H, (k + 1) * H), slice(src * H, (src + 1) * H)
        scale = 0.5 if kind == "s" else 1.0
        np.multiply(w_ih[theirs], scale, out=w_in[mine])
        np.multiply(w_hh[theirs], scale, out=hh_s[mine])
        _transpose(w_hh[theirs], hh_t[:, mine])
        np.multiply(b_in[theirs], scale, out=b_mine[mine])
        if bias is not None:
            bias[mine] = (b_hh[theirs] * scale)[:, None]
    return w_in, b_mine, Prepared(hh_s, hh_t, bias)

