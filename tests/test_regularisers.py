"""Weight drop and locked dropout (AWD-LSTM's regularisers): their masks, their gradients
in both engines, and that training alone draws them."""
import numpy as np
import pytest

from rnnlm import api, engines, evaluate, textbook
from rnnlm.io.data import split
from rnnlm.fast import engine
from rnnlm.params import (CELLS, Spec, dropout_masks, init_params, layer_keys,
                          weight_drop_masks, zero_state)

from conftest import CONFIGS

ENGINES = {"fast": engine, "textbook": textbook}


def test_locked_dropout_holds_one_mask_per_stream_for_the_whole_window():
    spec = Spec("gru", 7, 50, 2)
    masks = dropout_masks(spec, 6, 9, 0.3, np.random.default_rng(0), locked=True)
    assert len(masks) == 2
    for m in masks:
        assert m.shape == (9, 50, 6)  # (T, H, B), as the per-step masks
        assert all(np.array_equal(m[t], m[0]) for t in range(9))  # the same at every step
        assert not all(np.array_equal(m[0][:, b], m[0][:, 0]) for b in range(6))  # per stream
        assert set(np.unique(m)) == {0.0, np.float32(1 / 0.7)}  # inverted: 0 or 1/(1-p)
    step = dropout_masks(spec, 6, 9, 0.3, np.random.default_rng(0))
    assert not np.array_equal(step[0][1], step[0][0])  # today's dropout: a mask per step


def test_weight_drop_masks_are_one_per_layer_of_each_w_hh_shape():
    for cell in CELLS:
        spec = Spec(cell, 7, 40, 2)
        masks = weight_drop_masks(spec, 0.25, np.random.default_rng(1))
        params = init_params(spec, np.random.default_rng(0))
        assert [m.shape for m in masks] == [params[layer_keys(l)[1]].shape for l in range(2)]
        for m in masks:
            assert set(np.unique(m)) == {0.0, np.float32(1 / 0.75)}
            assert abs((m == 0).mean() - 0.25) < 0.03
    assert weight_drop_masks(Spec("rnn", 7, 4, 1), 0.0, np.random.default_rng(1)) is None


def case(cell, seed=3, V=9, H=8, B=3, T=7, layers=2):
    rng = np.random.default_rng(seed)
    spec = Spec(cell, V, H, layers)
    params = init_params(spec, rng, np.float64)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state = [tuple(rng.normal(0, 0.5, (B, H)) for _ in s) for s in zero_state(spec, B)]
    return spec, params, x, y, state, weight_drop_masks(spec, 0.5, rng, np.float64)


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("cell", CELLS)
def test_weight_drop_runs_the_window_on_the_dropped_weights(name, cell, kernel_path):
    """The definition: the loss is the loss of W_hh * M, and dL/dW_hh = dL/d(W_hh * M) * M,
    so a dropped entry gets no gradient at all and a kept one its scaled share."""
    spec, params, x, y, state, masks = case(cell)
    loss, grads, _ = engines.loss_and_grads(name, params, spec, x, y, state, weight_masks=masks)
    dropped = dict(params)
    for layer, m in enumerate(masks):
        dropped[layer_keys(layer)[1]] = params[layer_keys(layer)[1]] * m
    ref_loss, ref_grads, _ = textbook.loss_and_grads(dropped, spec, x, y, state)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for layer, m in enumerate(masks):
        w_hh = layer_keys(layer)[1]
        assert np.all(grads[w_hh][m == 0] == 0)  # exactly: nothing reaches a dropped entry
        assert np.count_nonzero(grads[w_hh][m > 0]) > 0.9 * np.count_nonzero(m)
        np.testing.assert_allclose(grads[w_hh], ref_grads[w_hh] * m, rtol=1e-10, atol=1e-14)
    others = [k for k in grads if k not in {layer_keys(l)[1] for l in range(2)}]
    for k in others:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-10, atol=1e-14)
    assert np.array_equal(params[layer_keys(0)[1]], case(cell)[1][layer_keys(0)[1]])  # untouched


def test_a_run_with_the_regularisers_evaluates_and_samples_without_them(tmp_path, corpus):
    """Masks are for training only: the validation loss the run recorded is the loss of
    its saved weights with no mask, and sampling the same seed twice gives the same text."""
    out = api.train(corpus, tmp_path / "run", config_file=CONFIGS / "tiny.yaml",
                    assignments=("cell=lstm", "layers=2", "dropout=0.4", "dropout_mode=locked",
                                 "weight_drop=0.4", "eval_every=20"))
    model = api.load(out / "best.npz")
    text = corpus.read_text(encoding="utf-8")
    _, val_ids = split(model.vocab.encode(text)[0], model.checkpoint.meta.config["val_fraction"])
    recorded = model.checkpoint.meta.best_val_loss
    again = evaluate.evaluate(model.params, model.spec, val_ids, 4)
    assert again == pytest.approx(recorded, rel=1e-6)
    assert model.sample("t", 50, seed=3) == model.sample("t", 50, seed=3)
