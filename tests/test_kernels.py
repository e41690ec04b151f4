"""The fast engine's kernels: both implementations compute the same step, the compiled one
is chosen, cached and explained as the README says, and rnnlm works without it."""
import os
import subprocess
import sys

import numpy as np
import pytest

from rnnlm import RnnlmError, textbook
from rnnlm.fast import engine, kernels, kernels_numpy
from rnnlm.params import CELLS, Spec, dropout_masks, init_params, zero_state

from conftest import CONFIGS

numba_kernels = pytest.importorskip("rnnlm.fast.kernels_numba",
                                    reason="Numba is not installed (pip install 'rnnlm[fast]')")


def test_float32_tanh_is_within_a_few_ulp_and_float64_is_libm_s():
    x = np.linspace(-12, 12, 1_000_001, dtype=np.float32)
    out = np.empty_like(x)
    numba_kernels.tanh(x, out)
    assert np.abs(out.astype(np.float64) - np.tanh(x.astype(np.float64))).max() < 4e-7
    assert out.max() <= 1 and out.min() >= -1
    x64 = np.linspace(-12, 12, 10_001)
    out64 = np.empty_like(x64)
    numba_kernels.tanh(x64, out64)
    np.testing.assert_allclose(out64, np.tanh(x64), rtol=1e-15, atol=0)  # libm's, to 1 ulp


def blocks(rng, shapes, dtype):
    return [rng.normal(0, 1.5, shape).astype(dtype) for shape in shapes]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
def test_each_kernel_computes_what_the_numpy_one_does(dtype, tol):
    rng = np.random.default_rng(0)
    H, B = 7, 5
    one, three, four = (H, B), (3 * H, B), (4 * H, B)
    cases = {  # kernel: (argument shapes, which arguments it writes)
        "rnn_forward": ([one, one], [0]),
        "rnn_backward": ([one, one], [0]),
        "lstm_forward": ([four, four, one, one, one], [0, 3, 4]),
        "lstm_backward": ([four, one, one, one, one, one], [0, 5]),
        "gru_forward": ([three, three, three, one, one], [0, 1, 4]),
        "gru_backward": ([three, three, one, one, three, three], [3, 4, 5]),
    }
    for name, (shapes, written) in cases.items():
        args = blocks(rng, shapes, dtype)
        mine = [a.copy() for a in args]
        getattr(kernels_numpy, name)(*args)
        getattr(numba_kernels, name)(*mine)
        for k in written:
            np.testing.assert_allclose(mine[k], args[k], rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("cell,layers,dropout",
                         [(c, l, p) for c in CELLS for l, p in ((1, 0.0), (2, 0.3))])
def test_both_paths_agree_with_each_other_and_the_textbook_in_float32(cell, layers, dropout):
    rng = np.random.default_rng(4)
    spec = Spec(cell, 30, 48, layers)
    params = init_params(spec, rng, np.float32)
    x, y = rng.integers(0, 30, (8, 20)), rng.integers(0, 30, (8, 20))
    state = [tuple(rng.normal(0, 0.5, (8, 48)).astype(np.float32) for _ in s)
             for s in zero_state(spec, 8)]
    masks = dropout_masks(spec, 8, 20, dropout, rng)
    results = {}
    for path in ("numpy", "numba"):
        kernels.load(path)
        results[path] = engine.loss_and_grads(params, spec, x, y, state, masks)
    results["textbook"] = textbook.loss_and_grads(params, spec, x, y, state, masks)
    ref_loss, ref_grads, _ = results["textbook"]
    for path in ("numpy", "numba"):
        loss, grads, _ = results[path]
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        for name, g in grads.items():
            scale = np.abs(ref_grads[name]).max()
            assert np.abs(g - ref_grads[name]).max() <= 1e-5 * scale, (path, name)


def test_rnnlm_kernels_chooses_and_an_unknown_name_is_refused(monkeypatch):
    monkeypatch.setenv("RNNLM_KERNELS", "numpy")
    assert kernels.load().name == "numpy"
    monkeypatch.setenv("RNNLM_KERNELS", "numba")
    assert kernels.load(prefer="numpy").name == "numba"  # the variable wins over a preference
    monkeypatch.setenv("RNNLM_KERNELS", "cuda")
    with pytest.raises(RnnlmError, match="RNNLM_KERNELS must be one of numpy, numba, got 'cuda'"):
        kernels.load()


def test_without_numba_the_numpy_kernels_run_and_asking_for_numba_says_what_to_install(
        monkeypatch):
    monkeypatch.delenv("RNNLM_KERNELS", raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    assert kernels.load().name == "numpy"
    with pytest.raises(RnnlmError, match=r"pip install 'rnnlm\[fast\]'"):
        kernels.load("numba")


def rnnlm(args, tmp_path, **env):
    environment = dict(os.environ, **env)
    environment.pop("RNNLM_KERNELS", None)
    return subprocess.run([sys.executable, "-m", "rnnlm", *args], capture_output=True,
                          text=True, env=environment, cwd=tmp_path, timeout=300)


def test_the_first_run_compiles_once_and_says_so_later_runs_load_the_cache(corpus, tmp_path):
    cache = tmp_path / "cache"
    train = ["train", str(corpus), "--config", str(CONFIGS / "tiny.yaml"), "--max-steps", "3"]
    first = rnnlm(train + ["--out", "a"], tmp_path, RNNLM_CACHE_DIR=str(cache))
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("compiling kernels, once") == 1
    assert "RNN 1 x 16" in first.stderr and "fast engine, numba kernels" in first.stderr
    second = rnnlm(train + ["--out", "b"], tmp_path, RNNLM_CACHE_DIR=str(cache))
    assert second.returncode == 0 and "compiling" not in second.stderr
    assert "fast engine, numba kernels" in second.stderr


def test_an_unwritable_cache_still_works_and_says_why_once(corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    run = rnnlm(["train", str(corpus), "--config", str(CONFIGS / "tiny.yaml"), "--out", "a",
                 "--max-steps", "3"], tmp_path, RNNLM_CACHE_DIR=str(blocker / "cache"))
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("cannot be written") == 1
    assert "compiling kernels in memory" in run.stderr and "Traceback" not in run.stderr
