"""Models that leave Python (rnnlm export): each format checked against rnnlm's own numbers
in the runtime it targets: onnxruntime, safetensors and PyTorch, a real Chromium."""
import json
import re
import struct
import sys

import numpy as np
import pytest

import rnnlm
from rnnlm.cli import cli
from rnnlm.export import html as export_html
from rnnlm.fast import engine
from rnnlm.params import zero_state

from conftest import CONFIGS, chromium_page
from helpers import assert_one_line_error, installed

CASES = [(cell, layers) for cell in ("rnn", "lstm", "gru") for layers in (1, 2)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A briefly trained model of each cell at 1 and 2 layers, from the library API."""
    root = tmp_path_factory.mktemp("models")
    corpus = root / "corpus.txt"
    corpus.write_text("It was the best of times, it was the worst of times;\n" * 30)
    return {(cell, layers): rnnlm.train(corpus, root / f"{cell}{layers}",
                                        config_file=CONFIGS / "tiny.yaml", cell=cell,
                                        layers=layers, hidden=12, max_steps=40)
            for cell, layers in CASES}


def export(runner, run_dir, fmt, out, *extra):
    result = runner.invoke(cli, ["export", str(run_dir), "--format", fmt, "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr
    return out


# --- ONNX ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,layers", CASES)
def test_onnx_gives_rnnlms_logits_and_state_for_a_thousand_steps(runner, models, tmp_path,
                                                                   cell, layers):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    path = export(runner, models[cell, layers], "onnx", tmp_path / "model.onnx")
    model = rnnlm.load(models[cell, layers])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec, rng = model.spec, np.random.default_rng(1)
    ids = rng.integers(0, spec.vocab_size, size=(3, 1000))
    state = [tuple(rng.uniform(-0.5, 0.5, (3, spec.hidden)).astype(np.float32)
                   for _ in range(spec.state_size)) for _ in range(spec.layers)]
    expected, expected_state = engine.forward(model.params, spec, ids, state)

    def feeds(x, carried):
        names = ("h0", "c0")[:spec.state_size]
        return {"ids": x.astype(np.int64),
                **{name: np.stack([s[i] for s in carried]) for i, name in enumerate(names)}}

    logits, *new_state = session.run(None, feeds(ids, state))
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)
    for i, a in enumerate(new_state):  # hn (and cn): the state rnnlm carries on with
        np.testing.assert_allclose(a, np.stack([s[i] for s in expected_state]), atol=1e-5)
    first, *carried = session.run(None, feeds(ids[:, :400], state))  # in two calls, the
    carried = [tuple(a[layer] for a in carried) for layer in range(spec.layers)]  # state fed back
    second, *_ = session.run(None, feeds(ids[:, 400:], carried))
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), expected, atol=1e-5)
    import onnx
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["vocab"]) == model.vocab.chars and props["cell"] == cell


def test_without_the_onnx_package_the_export_names_the_extra(runner, models, tmp_path,
                                                             monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now fails
    out = tmp_path / "m.onnx"
    assert_one_line_error(runner.invoke(cli, ["export", str(models["gru", 1]), "--format",
                                              "onnx", "-o", str(out)]), "pip install 'rnnlm[onnx]'")
    assert not out.exists()


# --- safetensors ------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_safetensors_holds_the_checkpoints_tensors_and_loads_into_pytorch(runner, models,
                                                                           tmp_path, cell):
    st = pytest.importorskip("safetensors.numpy", reason="safetensors is not installed")
    path = export(runner, models[cell, 2], "safetensors", tmp_path / "model.safetensors")
    model = rnnlm.load(models[cell, 2])
    tensors = st.load_file(str(path))
    assert tensors.keys() == model.params.keys()
    for name, p in model.params.items():
        assert tensors[name].dtype == np.float32 and np.array_equal(tensors[name], p)
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    assert json.loads(meta["vocab"]) == model.vocab.chars
    assert (meta["cell"], meta["hidden"], meta["layers"]) == (cell, "12", "2")
    half = export(runner, models[cell, 2], "safetensors", tmp_path / "half.safetensors",
                  "--float16")
    assert len(payload(half)) * 2 == len(payload(path))  # half the bytes a weight
    assert st.load_file(str(half))["out.weight"].dtype == np.float16

    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from safetensors.torch import load_file
    V, H = model.params["out.weight"].shape
    rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](V, H, 2)
    net = torch.nn.ModuleDict({"rnn": rnn, "out": torch.nn.Linear(H, V)})
    net.load_state_dict(load_file(str(path)), strict=True)
    ids = np.random.default_rng(0).integers(0, V, size=(2, 50))
    with torch.no_grad():
        onehot = torch.nn.functional.one_hot(torch.from_numpy(ids.T), V).float()  # (T, B, V)
        hidden, _ = net["rnn"](onehot)
        logits = net["out"](hidden).numpy().transpose(1, 0, 2)
    expected, _ = engine.forward(model.params, model.spec, ids, zero_state(model.spec, 2))
    np.testing.assert_allclose(logits, expected, atol=1e-5)


# --- the page that writes in the browser -----------------------------------------------------

@pytest.mark.parametrize("cell,layers", [("rnn", 1), ("lstm", 2), ("gru", 2)])
def test_the_page_writes_with_rnnlms_probabilities_offline(runner, models, tmp_path, cell,
                                                           layers):
    page_file = export(runner, models[cell, layers], "html", tmp_path / "page.html")
    half_file = export(runner, models[cell, layers], "html", tmp_path / "half.html", "--float16")
    model = rnnlm.load(models[cell, layers])
    primes = ["", "It was the ", "worst of t"]
    with chromium_page() as (page, errors, requests):
        page.goto(page_file.as_uri())
        assert page.evaluate("rnnlm.vocab.join('')") == model.vocab.chars
        for prime in primes:
            shown = page.evaluate("prime => rnnlm.probabilities(prime)", prime)
            expected = list(model.probabilities(prime).values())
            np.testing.assert_allclose(shown, expected, atol=1e-4)
        page.fill("#prime", "It was")
        page.fill("#length", "80")
        page.check("#instant")
        page.click("#write")
        page.wait_for_selector("#out[data-done='1']", timeout=20_000)
        written = page.inner_text("#out")
        assert written.startswith("It was") and len(written) == len("It was") + 80
        assert set(written) <= set(model.vocab.chars)
        page.fill("#prime", "It was~")  # '~' is not in the vocabulary
        page.click("#write")
        assert "not in the model's vocabulary" in page.inner_text("#status")
        page.goto(half_file.as_uri())
        shown = page.evaluate("rnnlm.probabilities('It was the ')")
        np.testing.assert_allclose(shown, list(model.probabilities("It was the ").values()),
                                   atol=5e-3)  # float16 weights: close, not equal
    assert errors == []
    assert [u for u in requests if not u.startswith("file:")] == []  # nothing from the network
    html = page_file.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)
    weights = [len(re.search(r'id="weights">(.*?)</script>', f.read_text(), re.S).group(1))
               for f in (half_file, page_file)]
    assert abs(weights[0] * 2 - weights[1]) <= 8  # half the base64 of the float32 weights


def test_the_page_and_the_model_use_the_same_weights(models):
    model = rnnlm.load(models["gru", 2])
    html = export_html.html_page(model)
    facts = json.loads(re.search(r'<script type="application/json" id="model">(.*?)</script>',
                                 html, re.S).group(1))
    import base64
    blob = base64.b64decode(re.search(r'id="weights">(.*?)</script>', html, re.S).group(1))
    weights = np.frombuffer(blob, "<f4")
    for name, (offset, shape) in facts["tensors"].items():
        stored = weights[offset:offset + int(np.prod(shape))].reshape(shape)
        assert np.array_equal(stored, model.params[name])


# --- where an export may be written ---------------------------------------------------------

def test_an_export_never_writes_over_a_file_rnnlm_did_not_make(runner, models, tmp_path):
    best = models["rnn", 1] / "best.npz"  # a checkpoint named, so that only errors are said
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    for fmt in ("html", "onnx", "safetensors"):
        result = runner.invoke(cli, ["export", str(best), "--format", fmt, "-o", str(mine)])
        assert_one_line_error(result, f"{mine} exists and is not an rnnlm {fmt} export")
    assert mine.read_text() == "<p>my notes</p>"
    before = best.read_bytes()
    assert_one_line_error(runner.invoke(cli, ["export", str(best), "--format", "html", "-o",
                                              str(best)]), "is this command's input")
    assert best.read_bytes() == before
    assert_one_line_error(runner.invoke(cli, ["export", str(best), "--format", "html", "-o",
                                              str(tmp_path)]), "is a directory")
    assert_one_line_error(runner.invoke(cli, ["export", str(best), "--format", "pdf", "-o",
                                              str(tmp_path / "x.pdf")]),
                          "unknown export format 'pdf'", "onnx, safetensors, html")
    assert_one_line_error(runner.invoke(cli, ["export", str(best), "--format", "onnx",
                                              "--float16", "-o", str(tmp_path / "x.onnx")]),
                          "--float16 is for html and safetensors")
    assert_one_line_error(runner.invoke(cli, ["export", str(tmp_path / "none"), "--format",
                                              "html"]), "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.html"]  # nothing left behind


def test_an_earlier_export_of_the_same_checkpoint_is_replaced_and_another_refused(
        runner, models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    formats = ["html", "safetensors"] + (["onnx"] if installed("onnx") else [])
    for fmt in formats:
        first = runner.invoke(cli, ["export", str(models["gru", 1]), "--format", fmt])
        assert first.exit_code == 0, first.output
        written = tmp_path / f"gru1.{fmt}"  # the default: the run's name, the format's suffix
        assert f"wrote {written.name}" in first.stderr
        before = written.read_bytes()
        again = runner.invoke(cli, ["export", str(models["gru", 1]), "--format", fmt])
        assert again.exit_code == 0, again.output
        assert f"replaced {written.name}" in again.stderr
        other = runner.invoke(cli, ["export", str(models["lstm", 1] / "best.npz"), "--format",
                                    fmt, "-o", str(written)])
        assert_one_line_error(other, str(written), "another checkpoint", "gru1/best.npz")
        assert written.read_bytes() == before


def test_two_runs_of_one_name_in_different_folders_do_not_replace_each_others_export(
        runner, models, tmp_path, monkeypatch):
    import shutil
    twin = tmp_path / "elsewhere" / "gru1"
    shutil.copytree(models["gru", 1], twin)
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(cli, ["export", str(models["gru", 1]), "--format", "html"]).exit_code == 0
    refused = runner.invoke(cli, ["export", str(twin / "best.npz"), "--format", "html"])
    assert_one_line_error(refused, "gru1.html", "another checkpoint")


def test_a_float16_export_of_weights_beyond_its_range_is_refused(runner, models, tmp_path):
    from rnnlm.io import checkpoint
    ckpt = checkpoint.load(models["rnn", 1] / "best.npz")
    ckpt.params["rnn.weight_hh_l0"] = ckpt.params["rnn.weight_hh_l0"] * 0 + 1e5
    huge = tmp_path / "huge.npz"
    checkpoint.save(huge, ckpt)
    for fmt in ("html", "safetensors"):
        out = tmp_path / f"huge.{fmt}"
        result = runner.invoke(cli, ["export", str(huge), "--format", fmt, "--float16", "-o",
                                     str(out)])
        assert_one_line_error(result, "rnn.weight_hh_l0", "float16", "without --float16")
        assert not out.exists()


def payload(path):
    """The arrays of a safetensors file: what follows its length and JSON header."""
    data = path.read_bytes()
    return data[8 + struct.unpack("<Q", data[:8])[0]:]
