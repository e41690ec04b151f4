"""The fast engine's elementwise kernels compiled with Numba (the optional extra rnnlm[fast]).

Each kernel is one pass over memory: a step's gate activations, state update and, in the
backward step, their derivatives, for every element j of the (H, B) blocks at once. NumPy
needs ten to twenty calls for the same work, each a pass over memory, and its float32 tanh
is not vectorised on CPUs without AVX-512 (measured 4 ns per element here, AVX2).

Two things make LLVM vectorise these loops: fastmath, and error_model="numpy" (the default
Python error model checks every division for zero, which keeps the loop scalar). tanh
itself is a rational approximation in float32 (Eigen's: a 13/6-degree interpolant, within
a few ulp of np.tanh); float64, used for gradient checks, gets the exact np.tanh.

Arrays are flattened: gate k of a (G*H, B) block is the k-th run of n = H*B elements.
Outputs written over an input are that same argument, never a second one that aliases
it: LLVM's runtime check then finds the arrays apart and keeps the loop vectorised (an
aliased second argument measured 3.4x slower, the scalar loop).
"""
import numba
import numpy as np
from numba import njit, types
from numba.extending import overload

from rnnlm.params import CELLS

name = "numba"
# Compiled code is cached in numba.config.CACHE_DIR, which kernels.load() points at
# rnnlm's cache directory, or leaves empty where that cannot be written: in memory then.
OPTIONS = dict(fastmath=True, error_model="numpy", nogil=True, cache=bool(numba.config.CACHE_DIR))


def _tanh(x):
    return np.tanh(x)


@overload(_tanh)
def _tanh_by_type(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def rational(x):  # Eigen's generic_fast_tanh_float
            x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
            x2 = x * x
            p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
            p = p * x2 + np.float32(-8.60467152213735e-11)
            p = p * x2 + np.float32(5.12229709037114e-08)
            p = p * x2 + np.float32(1.48572235717979e-05)
            p = p * x2 + np.float32(6.37261928875436e-04)
            p = p * x2 + np.float32(4.89352455891786e-03)
            q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
            q = q * x2 + np.float32(2.26843463243900e-03)
            q = q * x2 + np.float32(4.89352518554385e-03)
            return x * p / q
        return rational
    return lambda x: np.tanh(x)


def _like(x, value):
    return value


@overload(_like)
def _like_by_type(x, value):
    """value in x's precision: a Python float literal is float64 in Numba, and one in a
    float32 expression would turn it, and its tanh, into float64 (measured 9x slower)."""
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x, value: np.float32(value)
    return lambda x, value: np.float64(value)


@njit(**OPTIONS)
def tanh(a, out):
    """out = tanh(a), elementwise: the approximation above, for tests and measurements."""
    a, out = a.reshape(a.size), out.reshape(out.size)
    for j in range(a.size):
        out[j] = _tanh(a[j])


@njit(**OPTIONS)
def lookup(table, ids, out):
    T, rows, B = out.shape
    for t in range(T):
        for r in range(rows):
            for b in range(B):
                out[t, r, b] = table[r, ids[t, b]]


@njit(**OPTIONS)
def lookup_grad(values, ids, out):
    D, N = values.shape
    out[:] = 0
    for d in range(D):  # a scatter-add into the (D, V) result, row by row: no temporaries
        for n in range(N):
            out[d, ids[n]] += values[d, n]
    return out


@njit(**OPTIONS)
def adam(p, g, m, v, b1, b2, step_size, v_scale, eps):
    p, g, m, v = p.reshape(p.size), g.reshape(g.size), m.reshape(m.size), v.reshape(v.size)
    one, b1, b2 = _like(p[0], 1.0), _like(p[0], b1), _like(p[0], b2)
    lr, vs, e = _like(p[0], step_size), _like(p[0], v_scale), _like(p[0], eps)
    for j in range(p.size):
        gj = g[j]
        m[j] = b1 * m[j] + (one - b1) * gj
        v[j] = b2 * v[j] + (one - b2) * gj * gj
        p[j] -= lr * m[j] / (np.sqrt(v[j]) * vs + e)


@njit(**OPTIONS)
def rnn_forward(a, hh):
    a, hh = a.reshape(a.size), hh.reshape(hh.size)
    for j in range(a.size):
        a[j] = _tanh(a[j] + hh[j])


@njit(**OPTIONS)
def rnn_backward(h, dh):
    h, dh = h.reshape(h.size), dh.reshape(dh.size)
    one = _like(h[0], 1.0)
    for j in range(h.size):
        h[j] = dh[j] * (one - h[j] * h[j])


@njit(**OPTIONS)
def lstm_forward(acts, hh, c_prev, c, h):
    n = c.size
    a, hh = acts.reshape(4 * n), hh.reshape(4 * n)
    c_prev, c, h = c_prev.reshape(n), c.reshape(n), h.reshape(n)
    half = _like(c[0], 0.5)
    for j in range(n):  # sigmoid(a) = (1 + tanh(a / 2)) / 2, the halving done by prepare()
        o = half + half * _tanh(a[j] + hh[j])
        i = half + half * _tanh(a[n + j] + hh[n + j])
        f = half + half * _tanh(a[2 * n + j] + hh[2 * n + j])
        g = _tanh(a[3 * n + j] + hh[3 * n + j])
        a[j], a[n + j], a[2 * n + j], a[3 * n + j] = o, i, f, g
        c_j = f * c_prev[j] + i * g
        c[j] = c_j
        h[j] = o * _tanh(c_j)


@njit(**OPTIONS)
def lstm_backward(acts, c_prev, c, dh, dc_next, dc_prev):
    n = c.size
    a = acts.reshape(4 * n)
    c_prev, c, dh = c_prev.reshape(n), c.reshape(n), dh.reshape(n)
    dc_next, dc_prev = dc_next.reshape(n), dc_prev.reshape(n)
    one = _like(c[0], 1.0)
    for j in range(n):
        o, i, f, g = a[j], a[n + j], a[2 * n + j], a[3 * n + j]
        tanh_c = _tanh(c[j])
        dc = dc_next[j] + dh[j] * o * (one - tanh_c * tanh_c)
        dc_prev[j] = dc * f
        a[j] = dh[j] * tanh_c * o * (one - o)  # the gradients replace the activations
        a[n + j] = dc * g * i * (one - i)
        a[2 * n + j] = dc * c_prev[j] * f * (one - f)
        a[3 * n + j] = dc * i * (one - g * g)


@njit(**OPTIONS)
def gru_forward(rzn, gh, bias, h_prev, h):
    n = h.size
    a, gh, bias = rzn.reshape(3 * n), gh.reshape(3 * n), bias.reshape(3 * n)
    h_prev, h = h_prev.reshape(n), h.reshape(n)
    half = _like(h[0], 0.5)
    for j in range(n):
        gh_r, gh_z = gh[j] + bias[j], gh[n + j] + bias[n + j]
        gh_n = gh[2 * n + j] + bias[2 * n + j]
        gh[j], gh[n + j], gh[2 * n + j] = gh_r, gh_z, gh_n  # kept for the backward step
        r = half + half * _tanh(a[j] + gh_r)
        z = half + half * _tanh(a[n + j] + gh_z)
        n_j = _tanh(a[2 * n + j] + r * gh_n)
        a[j], a[n + j], a[2 * n + j] = r, z, n_j
        h[j] = n_j + z * (h_prev[j] - n_j)


@njit(**OPTIONS)
def gru_backward(rzn, gh, h_prev, dh, dgx, dgh):
    n = dh.size
    a, gh = rzn.reshape(3 * n), gh.reshape(3 * n)
    dgx, dgh = dgx.reshape(3 * n), dgh.reshape(3 * n)
    h_prev, dh = h_prev.reshape(n), dh.reshape(n)
    one = _like(dh[0], 1.0)
    for j in range(n):
        r, z, n_j, d = a[j], a[n + j], a[2 * n + j], dh[j]
        da_n = d * (one - z) * (one - n_j * n_j)
        da_z = d * (h_prev[j] - n_j) * z * (one - z)
        da_r = da_n * gh[2 * n + j] * r * (one - r)
        dgx[j], dgx[n + j], dgx[2 * n + j] = da_r, da_z, da_n
        dgh[j], dgh[n + j], dgh[2 * n + j] = da_r, da_z, da_n * r
        dh[j] = d * z  # the part of dh_prev that skips the GEMM


# One character through the whole network, for sampling (batch 1): one compiled call per
# character instead of a few NumPy calls per layer (measured 68 against 110 us a step of the
# 2-layer LSTM of 256; per-kernel calls do not pay at batch 1). The matrix-vector products
# are loops here too: at one column they stream the weights from cache either way.

@njit(**OPTIONS)
def _gemv_add(W, x, out):
    """out += W @ x."""
    rows, k = W.shape
    for r in range(rows):
        acc = out[r]
        for j in range(k):
            acc += W[r, j] * x[j]
        out[r] = acc


@njit(**OPTIONS)
def _input_side(table, w_in, b_in, h, layer, char_id, a):
    if layer == 0:
        a[:] = table[char_id]
    else:
        a[:] = b_in[layer - 1]
        _gemv_add(w_in[layer - 1], h[layer - 1], a)


@njit(**OPTIONS)
def _output(out_w, out_b, h, logits):
    logits[:] = out_b
    _gemv_add(out_w, h[h.shape[0] - 1], logits)


@njit(**OPTIONS)
def rnn_sample_step(table, w_in, b_in, w_hh, b_hh, h, c, char_id, out_w, out_b, logits, a, gh):
    for layer in range(w_hh.shape[0]):
        _input_side(table, w_in, b_in, h, layer, char_id, a)
        _gemv_add(w_hh[layer], h[layer], a)
        for j in range(a.size):
            h[layer, j] = _tanh(a[j])
    _output(out_w, out_b, h, logits)


@njit(**OPTIONS)
def lstm_sample_step(table, w_in, b_in, w_hh, b_hh, h, c, char_id, out_w, out_b, logits, a, gh):
    H = h.shape[1]
    half = _like(h[0, 0], 0.5)
    for layer in range(w_hh.shape[0]):
        _input_side(table, w_in, b_in, h, layer, char_id, a)
        _gemv_add(w_hh[layer], h[layer], a)
        for j in range(H):  # gates o, i, f, g, sigmoid rows halved
            o = half + half * _tanh(a[j])
            i = half + half * _tanh(a[H + j])
            f = half + half * _tanh(a[2 * H + j])
            g = _tanh(a[3 * H + j])
            c_j = f * c[layer, j] + i * g
            c[layer, j] = c_j
            h[layer, j] = o * _tanh(c_j)
    _output(out_w, out_b, h, logits)


@njit(**OPTIONS)
def gru_sample_step(table, w_in, b_in, w_hh, b_hh, h, c, char_id, out_w, out_b, logits, a, gh):
    H = h.shape[1]
    half = _like(h[0, 0], 0.5)
    for layer in range(w_hh.shape[0]):
        _input_side(table, w_in, b_in, h, layer, char_id, a)
        gh[:] = b_hh[layer]
        _gemv_add(w_hh[layer], h[layer], gh)
        for j in range(H):  # gates r, z, n; r and z rows halved
            r = half + half * _tanh(a[j] + gh[j])
            z = half + half * _tanh(a[H + j] + gh[H + j])
            n = _tanh(a[2 * H + j] + r * gh[2 * H + j])
            h[layer, j] = n + z * (h[layer, j] - n)
    _output(out_w, out_b, h, logits)


def warm_up(dtypes=(np.float32,)):
    """Compile, or load from the cache, every kernel for blocks of these dtypes: float32,
    what training and sampling use (float64, for gradient checks, compiles on first use).
    The first call of a cached kernel also starts LLVM (measured 44 MB): better at load
    than in the middle of a run."""
    for dtype in dtypes:
        one, three, four = (np.zeros((len(CELLS[c].gates), 2), dtype)
                            for c in ("rnn", "gru", "lstm"))  # a block of each cell's gates
        tanh(one, one.copy())
        for ids in (np.zeros((1, 2), np.uint8), np.zeros((1, 2), np.uint16)):
            lookup(one, ids, np.zeros((1, 1, 2), dtype))
            lookup_grad(one, ids[0], one.copy())
        adam(one, one.copy(), one.copy(), one.copy(), 0.9, 0.999, 1e-3, 1.0, 1e-8)
        rnn_forward(one, one.copy())
        rnn_backward(one, one.copy())
        lstm_forward(four, four.copy(), one, one.copy(), one.copy())
        lstm_backward(four, one, one.copy(), one.copy(), one.copy(), one.copy())
        gru_forward(three, three.copy(), three.copy(), one, one.copy())
        gru_backward(three, three.copy(), one, one.copy(), three.copy(), three.copy())
        for cell, step in (("rnn", rnn_sample_step), ("lstm", lstm_sample_step),
                           ("gru", gru_sample_step)):
            G = len(CELLS[cell].gates)
            rows = np.zeros((2, G), dtype)
            step(rows, np.zeros((0, G, 1), dtype), np.zeros((0, G), dtype),
                 np.zeros((1, G, 1), dtype), np.zeros((1, G), dtype), np.zeros((1, 1), dtype),
                 np.zeros((1, 1), dtype), 1, np.zeros((2, 1), dtype), np.zeros(2, dtype),
                 np.zeros(2, dtype), np.zeros(G, dtype), np.zeros(G, dtype))
