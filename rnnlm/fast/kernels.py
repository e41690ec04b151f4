"""The fast engine's elementwise kernels: one interface, one module per implementation.

A cell step is a GEMM (NumPy's BLAS, always) and elementwise work around it: the gates'
activations, the state update, and in the backward step their derivatives. That work is
a kernel, so that the engine's BPTT reads the same whichever implementation runs:

    rnn_forward(a, hh)                             a = tanh(a + hh)
    rnn_backward(h, dh, da)                        da = dh * (1 - h^2)
    lstm_forward(acts, hh, c_prev, c, h)           gates o, i, f, g; c; h
    lstm_backward(acts, c_prev, c, dh, dc_next, da, dc_prev)
    gru_forward(rzn, gh, bias, h_prev, h)          gates r, z, n; h
    gru_backward(rzn, gh, h_prev, dh, dgx, dgh, dh_direct)

Every array is (rows, B) and C-contiguous; gate blocks are H rows each, in the cell's
order (fast/cells.py); the pre-activations of sigmoid gates arrive halved, so that
sigmoid(a) = (1 + tanh(a / 2)) / 2 is one tanh; gradients are with respect to the true
pre-activations. Outputs may alias the inputs where a docstring says so.
"""
from rnnlm.fast import kernels_numpy

active = kernels_numpy
