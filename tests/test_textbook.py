"""The textbook engine's functions, as a student uses them: a worked example small enough to
follow by hand, the exercise's names and shapes, and each cell's backward step against
finite differences."""
import numpy as np
import pytest

from rnnlm import textbook as tb
from rnnlm.params import Spec, init_params

TANH_1 = 0.7615941559557649  # tanh(1)
TANH_TANH_1 = 0.6420149920119997  # tanh(tanh(1))


def delay_line():
    """Two hidden units and a scalar input: unit 1 reads the input, s1 = tanh(x); unit 2
    reads unit 1's previous value, s2 = tanh(s1_prev). No biases; the output layer sums
    the units (a softmax over one class is always 1)."""
    return {"U": np.array([[1.0], [0.0]]), "W": np.array([[0.0, 0.0], [1.0, 0.0]]),
            "ba": np.zeros((2, 1)), "V": np.array([[1.0, 1.0]]), "by": np.zeros((1, 1))}


def test_worked_example_forward_with_state_carried_over_two_passes():
    x = np.array([1.0, -1.0]).reshape(1, 1, 2)  # (m=1, batch=1, T=2)
    s, y, _ = tb.rnn_forward(x, np.zeros((2, 1)), delay_line())
    # pass 1, from s0 = 0:
    #   t=1: s1 = tanh(1) = 0.76159,   s2 = tanh(0) = 0
    #   t=2: s1 = tanh(-1) = -0.76159, s2 = tanh(tanh(1)) = 0.64201
    np.testing.assert_allclose(s[:, 0, :].T, [[TANH_1, 0.0], [-TANH_1, TANH_TANH_1]],
                               rtol=0, atol=1e-15)
    np.testing.assert_array_equal(y, np.ones((1, 1, 2)))
    # pass 2, from the state pass 1 ended in: only unit 2 remembers, so at t=1
    #   s2 = tanh(-0.76159) = -0.64201 where pass 1 had 0
    s_again, _, _ = tb.rnn_forward(x, s[:, :, -1], delay_line())
    np.testing.assert_allclose(s_again[:, 0, :].T, [[TANH_1, -TANH_TANH_1],
                                                    [-TANH_1, TANH_TANH_1]], rtol=0, atol=1e-15)


def test_worked_example_backward_by_hand():
    x = np.array([1.0, -1.0]).reshape(1, 1, 2)
    _, _, caches = tb.rnn_forward(x, np.zeros((2, 1)), delay_line())
    g = tb.rnn_backward(np.ones((2, 1, 2)), caches)  # dL/ds_t = [1, 1] at both steps
    # t=2: ds = [1, 1];  da2 = (1 - s^2) ds = [1 - tanh(1)^2, 1 - tanh(tanh(1))^2]
    da2 = np.array([1 - TANH_1 ** 2, 1 - TANH_TANH_1 ** 2])  # [0.41997, 0.58782]
    #      dx_2 = U^T da2 = da2[0];  ds_prev = W^T da2 = [da2[1], 0]
    # t=1: ds = [1, 1] + [da2[1], 0];  s_1 = [tanh(1), 0]
    da1 = np.array([(1 - TANH_1 ** 2) * (1 + da2[1]), 1.0])  # [0.66684, 1]
    #      dx_1 = da1[0];  ds0 = W^T da1 = [da1[1], 0] = [1, 0]
    # sums over t: dU = da1 x_1 + da2 x_2 = da1 - da2;  dW = da2 s_1^T (s_0 = 0);  dba = da1 + da2
    expected = {"dx": [[da1[0], da2[0]]], "ds0": [[1.0], [0.0]],
                "dU": [[0.24686795258431515], [0.41218324996816813]],
                "dW": [[0.3198500042246123, 0.0], [0.4476778015971538, 0.0]],
                "dba": [[1.0868166358123674], [1.5878167500318319]]}
    np.testing.assert_allclose(np.reshape(da1 - da2, (2, 1)), expected["dU"], atol=1e-15)
    for name, value in expected.items():
        np.testing.assert_allclose(np.squeeze(g[name], axis=1) if name == "dx" else g[name],
                                   value, rtol=0, atol=1e-15, err_msg=name)


def test_exercise_names_and_shapes():
    m, n, batch, T = 5, 3, 4, 6
    rng = np.random.default_rng(0)
    p = {"U": rng.normal(size=(n, m)), "W": rng.normal(size=(n, n)), "ba": rng.normal(size=(n, 1)),
         "V": rng.normal(size=(m, n)), "by": rng.normal(size=(m, 1))}
    x_t, s_prev = rng.normal(size=(m, batch)), rng.normal(size=(n, batch))
    s_next, out_pred, cache = tb.rnn_cell_forward(x_t, s_prev, p)
    assert s_next.shape == (n, batch) and out_pred.shape == (m, batch)
    np.testing.assert_allclose(out_pred.sum(axis=0), 1.0)  # a distribution per column
    assert cache[0] is s_next and cache[1] is s_prev and cache[2] is x_t and cache[3] is p
    assert set(tb.rnn_cell_backward(s_next, cache)) == {"dx_t", "ds_prev", "dU", "dW", "dba"}
    s, y, caches = tb.rnn_forward(rng.normal(size=(m, batch, T)), s_prev, p)
    assert s.shape == (n, batch, T) and y.shape == (m, batch, T)
    g = tb.rnn_backward(rng.normal(size=(n, batch, T)), caches)
    assert {k: v.shape for k, v in g.items()} == {
        "dx": (m, batch, T), "ds0": (n, batch), "dU": (n, m), "dW": (n, n), "dba": (n, 1)}


def numeric_gradient(f, a, eps=1e-6):
    """Centred differences of the scalar f() with respect to every entry of a."""
    grad = np.zeros_like(a)
    for ix in np.ndindex(a.shape):
        old = a[ix]
        a[ix] = old + eps
        plus = f()
        a[ix] = old - eps
        minus = f()
        a[ix] = old
        grad[ix] = (plus - minus) / (2 * eps)
    return grad


def test_rnn_backward_against_finite_differences():
    m, n, batch, T = 4, 3, 2, 5
    rng = np.random.default_rng(1)
    p = {"U": rng.normal(size=(n, m)), "W": rng.normal(size=(n, n)) * 0.5,
         "ba": rng.normal(size=(n, 1)), "V": rng.normal(size=(m, n)), "by": np.zeros((m, 1))}
    x, s0, upstream = rng.normal(size=(m, batch, T)), rng.normal(size=(n, batch)), rng.normal(size=(n, batch, T))

    def J():  # a scalar whose gradient with respect to s is `upstream`
        return float((tb.rnn_forward(x, s0, p)[0] * upstream).sum())

    g = tb.rnn_backward(upstream, tb.rnn_forward(x, s0, p)[2])
    for name, array in [("dU", p["U"]), ("dW", p["W"]), ("dba", p["ba"]), ("dx", x), ("ds0", s0)]:
        np.testing.assert_allclose(g[name], numeric_gradient(J, array), rtol=1e-6, atol=1e-8,
                                   err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_cell_backward_against_finite_differences(cell):
    spec = Spec(cell, 4, 3, 1)
    rng = np.random.default_rng(2)
    (p,), _ = tb.to_textbook(init_params(spec, rng, np.float64), spec)
    for w in p.values():
        w += rng.normal(0, 0.5, w.shape)
    x_t = rng.normal(size=(4, 2))
    state = tuple(rng.normal(size=(3, 2)) for _ in range(2 if cell == "lstm" else 1))
    upstream = tuple(rng.normal(size=(3, 2)) for _ in state)  # dL/ds_next (and dL/dc_next)

    def J():
        new_state, _ = tb.cell_forward(cell, x_t, state, p)
        return sum(float((a * u).sum()) for a, u in zip(new_state, upstream))

    g = tb.cell_backward(cell, upstream, tb.cell_forward(cell, x_t, state, p)[1])
    for name in p:
        np.testing.assert_allclose(g["d" + name], numeric_gradient(J, p[name]), rtol=1e-6,
                                   atol=1e-8, err_msg=name)
    np.testing.assert_allclose(g["dx_t"], numeric_gradient(J, x_t), rtol=1e-6, atol=1e-8)
    for k, s in enumerate(state):
        np.testing.assert_allclose(g["dstate_prev"][k], numeric_gradient(J, s), rtol=1e-6,
                                   atol=1e-8)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_checkpoint_names_map_to_textbook_names_and_back(cell):
    spec = Spec(cell, 6, 4, 2)
    params = init_params(spec, np.random.default_rng(3), np.float64)
    layers, output = tb.to_textbook(params, spec)
    if cell == "rnn":  # U = W_ih, W = W_hh, ba = b_ih + b_hh, V = out.weight, by = out.bias
        np.testing.assert_array_equal(layers[0]["U"], params["rnn.weight_ih_l0"])
        np.testing.assert_array_equal(layers[1]["W"], params["rnn.weight_hh_l1"])
        np.testing.assert_array_equal(layers[0]["ba"][:, 0],
                                      params["rnn.bias_ih_l0"] + params["rnn.bias_hh_l0"])
    if cell == "lstm":  # the forget gate is the second block of H rows
        np.testing.assert_array_equal(layers[1]["U_f"], params["rnn.weight_ih_l1"][4:8])
    if cell == "gru":  # n's biases stay apart: r scales the hidden one
        np.testing.assert_array_equal(layers[0]["b_hn"][:, 0], params["rnn.bias_hh_l0"][8:])
    np.testing.assert_array_equal(output["V"], params["out.weight"])
    back = tb.from_textbook(layers, output, spec)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in params.items()}
    same = {k for k in params if np.array_equal(back[k], params[k])}
    assert set(params) - same <= {k for k in params if "rnn.bias" in k}  # b_ih = ba, b_hh = 0
    x = np.array([[0, 3, 5, 1]])
    state = [(np.zeros((1, 4)),) * spec.state_size] * 2
    np.testing.assert_allclose(tb.forward(back, spec, x, state)[0],
                               tb.forward(params, spec, x, state)[0], rtol=1e-14)
