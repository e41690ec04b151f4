"""The fast engine's elementwise kernels in NumPy: always available.

Each function is one step's elementwise work, in place on (rows, B) arrays (see
kernels.py for the contract). NumPy cannot fuse them, so each is a handful of ufunc calls
with `out=`, over contiguous blocks, into kept scratch arrays.

A trick for speed: sigmoid(a) = (1 + tanh(a / 2)) / 2. The sigmoid gates' pre-activations
arrive halved (the weights' rows were halved once per window), so one np.tanh call over
all of a step's gate rows yields every gate.
"""
import numpy as np

from rnnlm.fast.buffers import scratch

name = "numpy"


def _to_sigmoid(block):
    """tanh(a / 2) -> sigmoid(a), in place."""
    block *= 0.5
    block += 0.5


def lookup(table, ids, out):
    """out[t] = the columns of table (rows, V) that ids[t] (B,) name, for every step t:
    one-hot x_t times W_ih, for the window (T, rows, B)."""
    for t in range(len(ids)):
        np.take(table, ids[t], axis=1, out=out[t], mode="wrap")  # ids < V: "wrap" never
        # wraps, and measured 1.6x faster than the default "raise"


def lookup_grad(values, ids, out):
    """The gradient of the lookup: out (D, V), column j the sum of the columns of values
    (D, N) whose id is j. np.add.at is the obvious way and measured here several times
    slower than either of these: a one-hot GEMM while the vocabulary is small, else
    np.bincount over flat indices (whose float64 sums cost 2 x D x V x 8 bytes)."""
    D, N = values.shape
    V = out.shape[1]
    if V <= 512:
        onehot = scratch("k.onehot", (N, V), values.dtype)
        onehot.fill(0)
        onehot[np.arange(N), ids] = 1
        return np.matmul(values, onehot, out=out)
    flat = (np.arange(D)[:, None] * V + ids.astype(np.intp)).ravel()
    out[...] = np.bincount(flat, weights=values.ravel(), minlength=V * D).reshape(D, V)
    return out


def adam(p, g, m, v, b1, b2, step_size, v_scale, eps):
    """One Adam update of p in place:  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= step_size m / (sqrt(v) v_scale + eps). Through one scratch array: a fresh
    temporary of a few MB page-faults on first touch, and this runs for every parameter
    every step."""
    tmp = scratch("k.adam", p.shape, p.dtype)
    m *= b1
    np.multiply(g, 1.0 - b1, out=tmp)
    m += tmp
    v *= b2
    np.multiply(g, g, out=tmp)
    tmp *= 1.0 - b2
    v += tmp
    np.sqrt(v, out=tmp)
    tmp *= v_scale
    tmp += eps
    np.divide(m, tmp, out=tmp)
    tmp *= step_size
    p -= tmp


def rnn_forward(a, hh):
    """a = tanh(a + hh)."""
    a += hh
    np.tanh(a, out=a)


def rnn_backward(h, dh):
    """h = dh * (1 - h^2): the gradient replaces the activation."""
    np.multiply(h, h, out=h)
    np.subtract(1.0, h, out=h)
    h *= dh  # backprop through tanh


def lstm_forward(acts, hh, c_prev, c, h):
    """acts (4H, B) holds the gates' input side in the order o, i, f, g (sigmoid rows
    halved); adds hh, the hidden side, and leaves the activations there. Then
    c = f * c_prev + i * g,  h = o * tanh(c)."""
    H = c.shape[0]
    ig = scratch("k.lstm", c.shape, c.dtype)
    acts += hh
    np.tanh(acts, out=acts)
    _to_sigmoid(acts[:3 * H])  # o, i, f
    o, i, f, g = acts[:H], acts[H:2 * H], acts[2 * H:3 * H], acts[3 * H:]
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=ig)
    c += ig
    np.tanh(c, out=h)
    h *= o


def lstm_backward(acts, c_prev, c, dh, dc_next, dc_prev):
    """From the activations o, i, f, g, the cell states and dh, dc_next reaching h and c
    after the step: dc_prev, and over acts (4H, B) the gradient of the true (unhalved)
    pre-activations in the order o, i, f, g."""
    H, dtype, da = c.shape[0], c.dtype, acts
    tanh_c, dc, dg = (scratch(f"k.lstm{k}", c.shape, dtype) for k in range(3))
    ds = scratch("k.lstm_ds", (3 * H,) + c.shape[1:], dtype)
    np.tanh(c, out=tanh_c)  # recomputed rather than kept for the window: memory
    o, i, f, g = acts[:H], acts[H:2 * H], acts[2 * H:3 * H], acts[3 * H:]
    da_o, da_i, da_f, da_g = da[:H], da[H:2 * H], da[2 * H:3 * H], da[3 * H:]
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
    np.multiply(ds, acts[:3 * H], out=da[:3 * H])
    da_o *= tanh_c
    da_o *= dh
    da_i *= g
    da_f *= c_prev
    np.multiply(dg, dc, out=da_g)  # g is not needed after this
    da[H:3 * H].reshape(2, H, -1)[...] *= dc  # i, f


def gru_forward(rzn, gh, bias, h_prev, h):
    """rzn (3H, B) holds the gates' input side r, z, n (r, z rows halved), gh the hidden
    side's product W_hh h_prev. Adds bias (b_hh over the batch) to gh and keeps it, then
    r, z = sigmoid(.), n = tanh(gx_n + r * gh_n), h = (1 - z) * n + z * h_prev."""
    H = h.shape[0]
    rgh = scratch("k.gru", h.shape, h.dtype)
    gh += bias
    rz, n = rzn[:2 * H], rzn[2 * H:]
    rz += gh[:2 * H]
    np.tanh(rz, out=rz)
    _to_sigmoid(rz)
    np.multiply(rzn[:H], gh[2 * H:], out=rgh)
    n += rgh
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=h)
    h *= rzn[H:2 * H]
    h += n


def gru_backward(rzn, gh, h_prev, dh, dgx, dgh):
    """From the activations r, z, n, the hidden side gh and dh reaching h: dgx, the
    gradient of the input side's pre-activations, dgh, the hidden side's (they differ
    because r scales gh_n), and over dh, dh * z: the part of dh_prev that skips the
    GEMM."""
    H = dh.shape[0]
    tmp = scratch("k.gru", dh.shape, dh.dtype)
    r, z, n = rzn[:H], rzn[H:2 * H], rzn[2 * H:]
    da_rz, da_r, da_z, da_n = dgx[:2 * H], dgx[:H], dgx[H:2 * H], dgx[2 * H:]
    # local derivatives s(1 - s) for r and z
    np.subtract(1.0, rzn[:2 * H], out=da_rz)
    da_rz *= rzn[:2 * H]
    # da_n = dh * (1 - z) * (1 - n^2)      (backprop through tanh)
    np.multiply(n, n, out=da_n)
    np.subtract(1.0, da_n, out=da_n)
    np.subtract(1.0, z, out=tmp)
    da_n *= tmp
    da_n *= dh
    # da_z = dh * (h_prev - n) * z(1 - z);  da_r = da_n * gh_n * r(1 - r)
    np.subtract(h_prev, n, out=tmp)
    da_z *= tmp
    da_z *= dh
    da_r *= gh[2 * H:]
    da_r *= da_n
    dgh[:2 * H] = da_rz
    np.multiply(da_n, r, out=dgh[2 * H:])
    dh *= z


# One character through the whole network, for sampling (batch 1). The same signature for
# every cell; what a cell does not use (c, b_hh, gh) it ignores. Weights as the Stepper
# lays them out: table (V, G*H) the first layer's looked-up rows, bias included; w_in
# (L-1, G*H, H) and b_in (L-1, G*H) the deeper layers' input side; w_hh (L, G*H, H) and
# b_hh (L, G*H) as prepare() lays them out; states h, c (L, H); logits (V,) out.

def _input_side(table, w_in, b_in, h, layer, char_id, a):
    if layer == 0:
        np.copyto(a, table[char_id])
    else:
        np.dot(w_in[layer - 1], h[layer - 1], out=a)
        a += b_in[layer - 1]


def _output(out_w, out_b, h, logits):
    np.dot(out_w, h[-1], out=logits)
    logits += out_b


def rnn_sample_step(table, w_in, b_in, w_hh, b_hh, h, c, char_id, out_w, out_b, logits, a, gh):
    for layer in range(len(w_hh)):
        _input_side(table, w_in, b_in, h, layer, char_id, a)
        np.dot(w_hh[layer], h[layer], out=gh)
        rnn_forward(a, gh)
        h[layer] = a
    _output(out_w, out_b, h, logits)


def lstm_sample_step(table, w_in, b_in, w_hh, b_hh, h, c, char_id, out_w, out_b, logits, a, gh):
    for layer in range(len(w_hh)):
        _input_side(table, w_in, b_in, h, layer, char_id, a)
        np.dot(w_hh[layer], h[layer], out=gh)
        lstm_forward(a[:, None], gh[:, None], c[layer][:, None], c[layer][:, None],
                     h[layer][:, None])
    _output(out_w, out_b, h, logits)


def gru_sample_step(table, w_in, b_in, w_hh, b_hh, h, c, char_id, out_w, out_b, logits, a, gh):
    for layer in range(len(w_hh)):
        _input_side(table, w_in, b_in, h, layer, char_id, a)
        np.dot(w_hh[layer], h[layer], out=gh)
        gru_forward(a[:, None], gh[:, None], b_hh[layer][:, None], h[layer][:, None],
                    h[layer][:, None])
    _output(out_w, out_b, h, logits)
