"""The library that runs the fast engine's matrix products (fast/blas.py): MKL's CBLAS
called on the arrays as the engine lays them out gives NumPy's products; the choice
between the libraries is measured once per machine, remembered, and forced by
$RNNLM_BLAS."""
import re

import numpy as np
import pytest

from rnnlm.errors import RnnlmError
from rnnlm.fast import blas
from tests.conftest import CONFIGS


def layouts(rng, dtype):
    """(a, b) pairs as the engine multiplies them: contiguous, transposed, a block of
    columns of a wider array, and a vector-like edge."""
    wide = rng.standard_normal((9, 40)).astype(dtype)
    return [
        (rng.standard_normal((12, 7)).astype(dtype), rng.standard_normal((7, 5)).astype(dtype)),
        (rng.standard_normal((7, 12)).astype(dtype).T, rng.standard_normal((5, 7)).astype(dtype).T),
        (rng.standard_normal((6, 9)).astype(dtype), wide[:, 10:30]),
        (rng.standard_normal((6, 20)).astype(dtype), wide[:, 10:30].T),
        (rng.standard_normal((1, 9)).astype(dtype), wide[:, 3:4]),
    ]


@pytest.mark.parametrize("dtype,tolerance", [(np.float32, 1e-5), (np.float64, 1e-13)])
def test_mkl_gives_numpys_products_on_every_layout_the_engine_passes(mkl, dtype, tolerance):
    rng = np.random.default_rng(0)
    for a, b in layouts(rng, dtype):
        expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
        out = np.full(expected.shape, np.nan, dtype)
        assert mkl.matmul(a, b, out) is out
        np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(mkl.matmul(a, b), expected, rtol=tolerance, atol=tolerance)
    a, stack = rng.standard_normal((4, 3)), rng.standard_normal((5, 3, 2))  # W_ih by each x_t
    out = np.empty((5, 4, 2))
    np.testing.assert_allclose(mkl.matmul(a, stack, out), np.matmul(a, stack), rtol=1e-13)


def test_the_choice_is_measured_once_per_machine_and_remembered(mkl, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("RNNLM_BLAS", raising=False)
    monkeypatch.setattr(blas, "active", blas.active)  # put back after the test
    heard = []
    first = blas.load(notify=heard.append)
    assert len(heard) == 1 and heard[0].startswith("matrix products: ")
    assert heard[0].endswith(f"using {first.name}")
    memo, = tmp_path.glob("blas-*")
    assert memo.read_text().split()[0] == first.name
    again = blas.load(notify=heard.append)
    assert again.name == first.name and len(heard) == 1  # not measured again


def test_rnnlm_blas_forces_a_library_and_a_wrong_one_is_a_one_line_error(
        mkl, runner, corpus, tmp_path, monkeypatch):
    from rnnlm.cli import cli

    monkeypatch.setattr(blas, "active", blas.active)
    monkeypatch.setenv("RNNLM_BLAS", "mkl")
    result = runner.invoke(cli, ["train", str(corpus), "--config", str(CONFIGS / "tiny.yaml"),
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "products by MKL " in result.stderr
    monkeypatch.setenv("RNNLM_BLAS", "atlas")
    result = runner.invoke(cli, ["train", str(corpus), "--config", str(CONFIGS / "tiny.yaml"),
                                 "--out", str(tmp_path / "other")])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: RNNLM_BLAS must be one of openblas, mkl, got 'atlas'")


def test_without_mkl_asking_for_it_says_what_to_install(monkeypatch):
    monkeypatch.setattr(blas, "find_mkl", lambda: None)  # a machine without it
    with pytest.raises(RnnlmError, match=r"pip install 'rnnlm\[mkl\]'"):
        blas.provider("mkl")
    assert [lib.name for lib in blas.available()] == ["openblas"]


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_bf16_products_keep_the_loss_and_gradients_near_float32s(mkl, cell, monkeypatch):
    """bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 = 2e-3): the products'
    operands are rounded so, their sums accumulate in float32. Stated tolerance: the loss
    within 1e-4 of float32's, each gradient within 2% (relative norm of the difference);
    and not equal, so the path ran. float64 (gradient checks) is never rounded."""
    from rnnlm.fast import engine
    from rnnlm.params import Spec, init_params, zero_state

    spec, rng = Spec(cell, 30, 64, 2), np.random.default_rng(0)
    x, y = rng.integers(0, 30, (8, 20)), rng.integers(0, 30, (8, 20))
    for dtype in (np.float32, np.float64):
        params, state = init_params(spec, rng, dtype), zero_state(spec, 8, dtype)
        monkeypatch.setattr(blas, "active", blas.NumPyBLAS())
        loss, grads, _ = engine.loss_and_grads(params, spec, x, y, state)
        grads = {k: g.copy() for k, g in grads.items()}
        monkeypatch.setattr(blas, "active", blas.bf16())
        loss16, grads16, _ = engine.loss_and_grads(params, spec, x, y, state)
        differences = {k: np.linalg.norm(grads16[k] - g) / np.linalg.norm(g)
                       for k, g in grads.items()}
        if dtype == np.float64:
            assert loss16 == pytest.approx(loss, rel=1e-13) and max(differences.values()) < 1e-12
            continue
        assert loss16 == pytest.approx(loss, rel=1e-4)
        assert max(differences.values()) < 0.02, differences
        assert max(differences.values()) > 1e-5  # bfloat16 ran


def test_a_run_in_bf16_says_so_and_records_it(mkl, runner, corpus, tmp_path, monkeypatch):
    from rnnlm.cli import cli

    monkeypatch.setattr(blas, "active", blas.active)
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(corpus), "--config", str(CONFIGS / "tiny.yaml"),
                                 "--out", str(out), "--set", "precision=bf16"])
    assert result.exit_code == 0, result.output
    assert "products by MKL" in result.stderr and "in bfloat16" in result.stderr
    assert "precision: bf16" in (out / "config.yaml").read_text()


def test_precision_auto_is_recorded_as_what_the_run_computed_in(runner, corpus, tmp_path,
                                                                monkeypatch):
    from rnnlm.cli import cli

    monkeypatch.setattr(blas, "active", blas.active)
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(corpus), "--config", str(CONFIGS / "tiny.yaml"),
                                 "--out", str(out), "--set", "precision=auto"])
    assert result.exit_code == 0, result.output
    recorded = re.search(r"^precision: (\w+)$", (out / "config.yaml").read_text(), re.M)
    assert recorded.group(1) in ("float32", "bf16")


def test_bf16_where_it_cannot_run_is_a_one_line_error(runner, corpus, tmp_path, monkeypatch):
    from rnnlm.cli import cli

    result = runner.invoke(cli, ["train", str(corpus), "--config", str(CONFIGS / "tiny.yaml"),
                                 "--out", str(tmp_path / "run"), "--set", "precision=bf16",
                                 "--set", "engine=textbook"])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: precision bf16 is the fast engine's (engine=textbook computes in float32 or "
        "float64)")
    monkeypatch.setattr(blas, "find_mkl", lambda: None)  # a machine without MKL
    with pytest.raises(RnnlmError, match=r"precision bf16 runs on Intel's MKL: pip install"):
        blas.bf16()
