"""Both engines' gradients against finite differences, and the fast engine against the
textbook engine, the specification."""
import numpy as np
import pytest

from rnnlm import engines, gradcheck, textbook
from rnnlm.run import optim
from rnnlm.io.data import text_corpus
from rnnlm.fast import cells, engine
from rnnlm.params import (CELLS, Spec, dropout_masks, init_params, param_shapes,
                          weight_drop_masks, zero_state)

REGULARISERS = tuple(gradcheck.REGULARISERS)  # none, dropout, locked, weight drop
SETTINGS = [(cell, layers, reg) for cell in CELLS for layers in (1, 2) for reg in REGULARISERS]


def test_gradcheck_passes_for_every_cell_depth_and_regulariser_with_the_textbook_engine():
    assert_gradcheck_passes("textbook")


def test_gradcheck_passes_for_every_cell_depth_and_regulariser_with_the_fast_engine(
        kernel_path, blas_provider):
    assert_gradcheck_passes("fast")


def assert_gradcheck_passes(engine_name):
    rows = gradcheck.check_all(engines=[engine_name])
    tensors = sum(len(param_shapes(Spec(cell, 7, 5, layers))) for cell, layers, _ in SETTINGS)
    assert len(rows) == tensors  # one row per parameter tensor of every setting
    assert {r.case for r in rows} >= {"gru L2 locked" + ("" if engine_name == "fast" else " textbook"),
                                      "lstm L1 weight drop" + ("" if engine_name == "fast" else " textbook")}
    worst = max(rows, key=lambda r: r.max_rel_error)
    assert all(r.ok for r in rows), worst


def test_gradcheck_fails_on_a_wrong_backward(monkeypatch):
    def wrong_rnn_backward(t, buf, w, dstate, dgx, dgh, dprev):
        (dh,), h = dstate, buf["h"][t + 1]
        np.subtract(1.0, h, out=dgx)  # the tanh derivative is 1 - h^2, not 1 - h
        dgx *= dh
        np.dot(w.hh_t, dgx, out=dprev[0])

    monkeypatch.setattr(cells.RNN, "backward", staticmethod(wrong_rnn_backward))
    rows = gradcheck.check("rnn")
    failed = {r.name for r in rows if not r.ok}
    assert {"rnn.weight_hh_l0", "rnn.weight_ih_l0", "rnn.bias_hh_l0"} <= failed
    assert "out.bias" not in failed  # the output layer's own gradient is still right


def test_gradcheck_fails_on_a_wrong_gru_gate(monkeypatch):
    right = cells.GRU.backward

    def wrong_gru_backward(t, buf, w, dstate, dgx, dgh, dprev):
        right(t, buf, w, dstate, dgx, dgh, dprev)
        dgh[...] = dgx  # forgets that r scales the hidden side of n

    monkeypatch.setattr(cells.GRU, "backward", staticmethod(wrong_gru_backward))
    rows = gradcheck.check("gru")
    assert not next(r for r in rows if r.name == "rnn.weight_hh_l0").ok
    assert next(r for r in rows if r.name == "rnn.weight_ih_l0").ok


def test_gradcheck_catches_a_wrong_textbook_step(monkeypatch):
    right = textbook.lstm_cell_backward

    def wrong(ds_next, dc_next, cache):
        g = right(ds_next, dc_next, cache)
        g["dc_prev"] = g["dc_prev"] * 0.5  # a wrong gradient through the cell state
        return g

    monkeypatch.setattr(textbook, "lstm_cell_backward", wrong)
    rows = gradcheck.check("lstm", engine="textbook")
    assert not next(r for r in rows if r.name == "rnn.weight_hh_l0").ok


def random_case(cell, layers, regulariser, seed=5, V=11, H=9, B=4, T=13):
    rng = np.random.default_rng(seed)
    spec = Spec(cell, V, H, layers)
    params = init_params(spec, rng, np.float64)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state = [tuple(rng.normal(0, 0.5, (B, H)) for _ in s) for s in zero_state(spec, B)]
    dropout, mode, weight_drop = gradcheck.REGULARISERS[regulariser]
    masks = dropout_masks(spec, B, T, dropout, rng, np.float64, mode == "locked")
    weight_masks = weight_drop_masks(spec, weight_drop, rng, np.float64)
    return params, spec, x, y, state, masks, weight_masks


@pytest.mark.parametrize("cell,layers,regulariser",
                         SETTINGS + [(c, 3, "none") for c in CELLS]
                         + [(c, 3, "locked") for c in CELLS] + [(c, 3, "weight drop") for c in CELLS])
def test_fast_engine_equals_the_textbook(cell, layers, regulariser, kernel_path, blas_provider):
    params, spec, x, y, state, masks, weight_masks = random_case(cell, layers, regulariser)
    loss, grads, new_state = engines.loss_and_grads("fast", params, spec, x, y, state, masks,
                                                    weight_masks)
    ref_loss, ref_grads, ref_state = engines.loss_and_grads("textbook", params, spec, x, y,
                                                            state, masks, weight_masks)
    assert loss == pytest.approx(ref_loss, rel=1e-10, abs=0)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    for ours, theirs in zip(new_state, ref_state):
        for u, v in zip(ours, theirs):
            np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
    logits, forward_state = engine.forward(params, spec, x, state)
    ref_logits, _ = textbook.forward(params, spec, x, state)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("module", [engine, textbook], ids=["fast", "textbook"])
@pytest.mark.parametrize("cell", CELLS)
def test_state_carried_across_windows_equals_one_long_window(module, cell):
    rng = np.random.default_rng(0)
    spec = Spec(cell, 6, 8, 2)
    params = init_params(spec, rng, np.float64)
    x, y = rng.integers(0, 6, (3, 20)), rng.integers(0, 6, (3, 20))
    state = zero_state(spec, 3, np.float64)
    whole, _, end_whole = module.loss_and_grads(params, spec, x, y, state)
    first, _, mid = module.loss_and_grads(params, spec, x[:, :12], y[:, :12], state)
    second, _, end = module.loss_and_grads(params, spec, x[:, 12:], y[:, 12:], mid)
    assert (12 * first + 8 * second) / 20 == pytest.approx(whole, rel=1e-12)
    for a, b in zip(end_whole, end):
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_inference_forward_matches_training_forward(cell):
    rng = np.random.default_rng(1)
    spec = Spec(cell, 7, 10, 2)
    params = init_params(spec, rng, np.float64)
    x, y = rng.integers(0, 7, (2, 9)), rng.integers(0, 7, (2, 9))
    state = [tuple(rng.normal(0, 0.5, (2, 10)) for _ in s) for s in zero_state(spec, 2)]
    loss, _, st1 = engine.loss_and_grads(params, spec, x, y, state)
    logits, st2 = engine.forward(params, spec, x, state)
    ce, _ = engine.softmax_cross_entropy(logits.reshape(-1, 7).T.copy(), y.reshape(-1))
    assert ce == pytest.approx(loss, rel=1e-12)
    for a, b in zip(st1, st2):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("cell", CELLS)
def test_overfits_a_short_string(cell):
    vocab, ids = text_corpus("hello world, hello rnn! ")
    spec = Spec(cell, vocab.size, 32, 1)
    rng = np.random.default_rng(0)
    params = init_params(spec, rng)
    opt = optim.Adam(params, beta1=0.9, beta2=0.999, eps=1e-8)
    x, y = ids[None, :-1], ids[None, 1:]
    for _ in range(300):
        loss, grads, _ = engine.loss_and_grads(params, spec, x, y, zero_state(spec, 1))
        optim.clip_gradients(grads, 5.0)
        opt.step(params, grads, 1e-2)
    assert loss < 0.05  # from log(V) = 2.6: the string is memorised


@pytest.mark.parametrize("cell", CELLS)
def test_reused_window_buffers_leak_nothing_between_calls(cell):
    """The fast engine keeps its window buffers from one call to the next (buffers.scratch):
    what a call returns must not change when later calls, of other shapes and dtypes, reuse
    them, and repeating a call must repeat its results exactly."""
    rng = np.random.default_rng(2)
    spec = Spec(cell, 7, 10, 2)
    params = init_params(spec, rng, np.float64)
    x, y = rng.integers(0, 7, (3, 8)), rng.integers(0, 7, (3, 8))
    state = [tuple(rng.normal(0, 0.5, (3, 10)) for _ in s) for s in zero_state(spec, 3)]
    masks = dropout_masks(spec, 3, 8, 0.3, rng, np.float64)
    loss, grads, new_state = engine.loss_and_grads(params, spec, x, y, state, masks)
    kept = {k: g.copy() for k, g in grads.items()}
    kept_state = [tuple(a.copy() for a in s) for s in new_state]

    engine.loss_and_grads(params, spec, y, x, new_state, masks)  # same shapes, other data
    params32 = {k: v.astype(np.float32) for k, v in params.items()}  # other dtype and shapes
    engine.loss_and_grads(params32, spec, x[:2, :5], y[:2, :5], zero_state(spec, 2))
    engine.forward(params, spec, x[:1], zero_state(spec, 1, np.float64))

    for name in grads:
        np.testing.assert_array_equal(grads[name], kept[name], err_msg=name)
    for a, b in zip(new_state, kept_state):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    again, grads_again, _ = engine.loss_and_grads(params, spec, x, y, state, masks)
    assert again == loss
    for name in grads:
        np.testing.assert_array_equal(grads_again[name], kept[name], err_msg=name)
