import contextlib
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SHARED_DATA = ROOT.parent / "shared" / "data"


def read_corpus(path, encoding="utf-8"):
    """(vocabulary, ids) of one text file, as `rnnlm train` reads it."""
    from rnnlm.io import corpus
    text = corpus.read([path], encoding)
    return text.vocab, text.ids


@pytest.fixture
def shakespeare():
    path = SHARED_DATA / "tinyshakespeare.txt"
    if not path.exists():
        pytest.skip("../shared/data is absent")
    return path


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def corpus(tmp_path):
    """A small corpus with enough text for the tiny config."""
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog.\n" * 40, encoding="utf-8")
    return path


@pytest.fixture
def trained(runner, corpus, tmp_path):
    """A run directory with a checkpoint trained by the tiny config."""
    from rnnlm.cli import cli

    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(corpus), "--config", str(CONFIGS / "tiny.yaml"),
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(params=["numpy", "numba"])
def kernel_path(request, monkeypatch):
    """Run the test with each implementation of the fast engine's kernels (fast/kernels.py),
    in this process and in any rnnlm it starts. The numba one skips where Numba is absent."""
    if request.param == "numba":
        pytest.importorskip("numba", reason="Numba is not installed (pip install 'rnnlm[fast]')")
    from rnnlm.fast import kernels
    monkeypatch.setenv("RNNLM_KERNELS", request.param)
    previous = kernels.__dict__.get("active")
    kernels.load(request.param)
    yield request.param
    if previous is not None:
        kernels.active = previous


@pytest.fixture
def mkl():
    """Intel's MKL as fast/blas.py runs it; the test skips where it is absent."""
    from rnnlm.fast import blas
    if blas.find_mkl() is None:
        pytest.skip("MKL is not installed (pip install 'rnnlm[mkl]')")
    return blas.provider("mkl")


@pytest.fixture(params=["openblas", "mkl"])
def blas_provider(request, monkeypatch):
    """Run the test with each library that can run the fast engine's matrix products
    (fast/blas.py), in this process and in any rnnlm it starts. MKL's skips where it is
    absent (pip install 'rnnlm[mkl]')."""
    from rnnlm.fast import blas
    library = request.getfixturevalue("mkl") if request.param == "mkl" else blas.NumPyBLAS()
    monkeypatch.setenv("RNNLM_BLAS", request.param)
    monkeypatch.setattr(blas, "active", library)
    yield request.param


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@contextlib.contextmanager
def chromium_page():
    """A page in headless Chromium (Debian's, driven by Playwright), and the lists its
    console errors and its requests are gathered in: (page, errors, requests). Skips
    where Playwright or Chromium is absent."""
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium here (Debian's chromium package; .ci/run installs it)")
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            yield page, errors, requests
        finally:
            browser.close()
