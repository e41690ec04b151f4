"""One time step of each cell in the fast engine: where the step's arrays live and which
product it runs. The elementwise work around the product is a kernel (kernels.py).

Equations and gate order are PyTorch's (rnnlm/textbook.py writes them out); the
parameters' gate blocks are PyTorch's, so checkpoints load into nn.RNN/LSTM/GRU.

Layout: feature-major. Inside a window every per-step array is (features, B): a state is
(H, B), the gates of a step are (G*H, B), gate k in rows k*H:(k+1)*H. Two things make
this the fast way round: the recurrent product is then W (G*H, H) @ h (H, B), which
OpenBLAS runs at nearly twice the rate of the (B, H) @ (H, G*H) it replaces (measured: 338
vs 194 GFLOP/s at H=512, B=32), and each gate is a contiguous block of rows, so the
elementwise work runs over contiguous memory instead of strided column slices.

How a step is fed. The input-to-hidden product is computed outside the cell (a lookup for
one-hot input, or one batched GEMM for the whole window), and the engine writes it into
slot t of the cell's `input_slots()` before step t runs:

    gx = W_ih x_t + b_ih  (+ b_hh where it can be folded in)        (G*H, B)

The step adds the recurrent product W_hh h_prev to it. Its backward writes `dgx`, the
gradient with respect to that pre-activation, and `dgh`, the one with respect to the
hidden side `W_hh h_prev + b_hh`. They differ only for the GRU, where r gates the hidden
side of n. The engine turns a window's stacked dgx, dgh into weight gradients with one
GEMM each.

Where a step keeps things. A step reads the previous state from, and writes its
activations into, slot t of `buf`, the window's buffers (a dict of arrays shaped as
`buffer_shapes()` says, most (T or T+1, ..., B)): `buf["h"][t]` is the state before step
t, `buf["h"][t+1]` after it. So state is never copied, the backward pass finds every cache
where the forward left it, and nothing is allocated inside the time loop. Where a cell
allows it (`gradient_buffers()`), the backward pass writes dgx over the activations it has
finished with, which saves a window-sized buffer.

The kernels compute sigmoid(a) as (1 + tanh(a / 2)) / 2, so `prepare` halves the rows of
W_hh, W_ih and the biases that feed sigmoid gates, once per window. A cell may also keep
its gate blocks in another order than PyTorch's (`order`: the parameter block of each of
its blocks); prepare() lays the weights out so, and the engine puts the gradients back in
PyTorch's order.
"""
from typing import NamedTuple

import numpy as np

from rnnlm.fast import blas, kernels
from rnnlm.fast.buffers import transpose
from rnnlm.params import CELLS


class Prepared(NamedTuple):
    """One layer's recurrent weights, laid out once per window for the time loop, gate
    blocks in the cell's order."""

    hh: np.ndarray  # W_hh as the step multiplies it, sigmoid rows halved, (G*H, H)
    hh_t: np.ndarray  # W_hh^T, true values, (H, G*H): dh_prev = hh_t @ da
    bias: np.ndarray  # the GRU's b_hh (r, z rows halved) repeated over the batch (3H, B)


class Step:
    """What a cell's step takes from the table of cells (params.CELLS): its gates, states
    and window buffers. `order` is the step's own arrangement of the gate blocks (the
    parameter block of each of its blocks), which its kernels expect; `kinds` says, in
    that order, which blocks are sigmoid gates ("s", whose rows prepare() halves) and
    which tanh ("t")."""

    def __init_subclass__(cls, cell, order):
        facts = CELLS[cell]
        cls.facts, cls.order = facts, order
        cls.gates, cls.state_names = len(facts.gates), facts.states
        cls.kinds = "".join("s" if facts.activations[g] == "sigmoid" else "t" for g in order)
        cls.fold_hidden_bias = not facts.separate_biases  # b_hh can join b_ih in gx
        cls.buffer_shapes = staticmethod(facts.window_shapes)


class RNN(Step, cell="rnn", order=(0,)):
    """Elman RNN:  h = tanh(gx + W_hh h_prev),   gx = W_ih x + b_ih + b_hh"""

    @staticmethod
    def input_slots(buf):
        """Step t's pre-activation is built where h_t will be: tanh turns it into h_t in
        place, so it needs no window buffer of its own."""
        return buf["h"][1:]

    @staticmethod
    def gradient_buffers(buf):
        """Where backward() writes dgx, dgh: over step t's output, which it reads last."""
        outputs = buf["h"][1:]
        return outputs, outputs

    @staticmethod
    def forward(t, buf, w):
        a = buf["h"][t + 1]  # so far W_ih x_t + b; becomes h_t
        blas.active.matmul(w.hh, buf["h"][t], buf["hh"])
        kernels.active.rnn_forward(a, buf["hh"])

    @staticmethod
    def backward(t, buf, w, dstate, dgx, dgh, dprev):
        """dstate (dh,) reaching h after step t; fills dgx (= dgh here: the step's h,
        which the gradient replaces) and dprev (dh_prev,)."""
        kernels.active.rnn_backward(dgx, dstate[0])
        blas.active.matmul(w.hh_t, dgx, dprev[0])


class LSTM(Step, cell="lstm", order=(3, 0, 1, 2)):
    """LSTM, gates i, f, g, o in the parameters. Inside a step the gates are stacked
    o, i, f, g (`order`), so that the three sigmoid gates are one block of rows, and so
    are the three that scale with dc."""

    @staticmethod
    def input_slots(buf):
        """Where gx goes: into the gates' slot."""
        return buf["acts"]

    @staticmethod
    def gradient_buffers(buf):
        """Where backward() writes dgx, dgh: over the step's activations."""
        return buf["acts"], buf["acts"]

    @staticmethod
    def forward(t, buf, w):
        blas.active.matmul(w.hh, buf["h"][t], buf["hh"])
        kernels.active.lstm_forward(buf["acts"][t], buf["hh"], buf["c"][t], buf["c"][t + 1],
                                    buf["h"][t + 1])

    @staticmethod
    def backward(t, buf, w, dstate, dgx, dgh, dprev):
        """dstate (dh, dc) after step t; fills dgx (= dgh here: the step's activations,
        which the gradients replace) and dprev (dh_prev, dc_prev)."""
        (dh, dc_next), (dh_prev, dc_prev) = dstate, dprev
        kernels.active.lstm_backward(dgx, buf["c"][t], buf["c"][t + 1], dh, dc_next, dc_prev)
        blas.active.matmul(w.hh_t, dgx, dh_prev)


class GRU(Step, cell="gru", order=(0, 1, 2)):
    """GRU, gates r, z, n (PyTorch's formula: b_hn sits inside r * (...)). Its hidden
    side gh, W_hh h_prev + b_hh, keeps its r and z rows halved."""

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
        gh, h_prev = buf["gh"][t], buf["h"][t]
        blas.active.matmul(w.hh, h_prev, gh)
        kernels.active.gru_forward(buf["rzn"][t], gh, w.bias, h_prev, buf["h"][t + 1])

    @staticmethod
    def backward(t, buf, w, dstate, dgx, dgh, dprev):
        """dstate (dh,) after step t, which it uses as scratch; fills dgx, dgh and
        dprev (dh_prev,)."""
        (dh,), (dh_prev,) = dstate, dprev
        kernels.active.gru_backward(buf["rzn"][t], buf["gh"][t], buf["h"][t], dh, dgx, dgh)
        blas.active.matmul(w.hh_t, dgh, dh_prev)
        dh_prev += dh  # now dh * z: h_prev also reaches h directly


STEPS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


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
        return w_ih, b_in, Prepared(w_hh, transpose(w_hh, alloc("w_hh_t", (H, GH), dtype)), None)
    w_in = alloc("w_in", w_ih.shape, dtype)
    hh = alloc("w_hh", w_hh.shape, dtype)  # names apart from the window buffers'
    hh_t = alloc("w_hh_t", (H, GH), dtype)
    b_mine = np.empty_like(b_in)
    bias = None
    if not cell.fold_hidden_bias:  # repeated over the batch: added without broadcasting
        bias = alloc("b_hh", (GH, batch), dtype)
    for k, (src, kind) in enumerate(zip(cell.order, cell.kinds)):
        mine, theirs = slice(k * H, (k + 1) * H), slice(src * H, (src + 1) * H)
        scale = 0.5 if kind == "s" else 1.0
        np.multiply(w_ih[theirs], scale, out=w_in[mine])
        np.multiply(w_hh[theirs], scale, out=hh[mine])
        transpose(w_hh[theirs], hh_t[:, mine])
        np.multiply(b_in[theirs], scale, out=b_mine[mine])
        if bias is not None:
            bias[mine] = (b_hh[theirs] * scale)[:, None]
    return w_in, b_mine, Prepared(hh, hh_t, bias)
