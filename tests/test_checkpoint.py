import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest

from rnnlm import RnnlmError
from rnnlm.io import checkpoint
from rnnlm.config import Config
from rnnlm.io.data import Vocab
from rnnlm.params import Spec, init_params, param_shapes, zero_state


def make(cell="lstm", layers=2):
    cfg = Config(cell=cell, hidden=6, layers=layers, batch_size=3)
    vocab = Vocab("abcdé🙂\n")
    spec = Spec(cell, vocab.size, 6, layers)
    params = init_params(spec, np.random.default_rng(0))
    state = [tuple(np.full((3, 6), i + 0.5, np.float32) for _ in s)
             for i, s in enumerate(zero_state(spec, 3))]
    meta = checkpoint.Meta(config=dataclasses.asdict(cfg), step=7, best_val_loss=1.25)
    slots = {"m.out.bias": np.ones(vocab.size, np.float32), "t": np.array(7)}
    return checkpoint.Checkpoint(params, spec, vocab, meta, slots, state)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_round_trip(tmp_path, cell):
    original = make(cell)
    path = tmp_path / "m.npz"
    checkpoint.save(path, original)
    loaded = checkpoint.load(path)
    assert loaded.spec == original.spec
    assert loaded.vocab == original.vocab
    assert loaded.meta.step == 7 and loaded.meta.version == checkpoint.VERSION
    for name, p in original.params.items():
        np.testing.assert_array_equal(loaded.params[name], p)
        assert loaded.params[name].dtype == np.float32
    assert loaded.slots.keys() == original.slots.keys()
    for a, b in zip(loaded.state, original.state):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left behind


def test_names_and_shapes_are_pytorch_state_dict():
    shapes = param_shapes(Spec("lstm", 65, 128, 2))
    assert shapes == {
        "rnn.weight_ih_l0": (512, 65), "rnn.weight_hh_l0": (512, 128),
        "rnn.bias_ih_l0": (512,), "rnn.bias_hh_l0": (512,),
        "rnn.weight_ih_l1": (512, 128), "rnn.weight_hh_l1": (512, 128),
        "rnn.bias_ih_l1": (512,), "rnn.bias_hh_l1": (512,),
        "out.weight": (65, 128), "out.bias": (65,)}


def test_the_file_is_plain_arrays(tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(path, make())
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        assert "rnn.weight_hh_l1" in npz.files and "optim/t" in npz.files
    assert meta["vocab"] == "\nabcdé🙂" and meta["format"] == "rnnlm-checkpoint"


def save_arrays(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def resave(tmp_path, edit):
    """A valid checkpoint's arrays, edited, written back."""
    good = tmp_path / "good.npz"
    checkpoint.save(good, make())
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    edit(arrays)
    bad = tmp_path / "bad.npz"
    save_arrays(bad, **arrays)
    return bad


def set_meta(**changes):
    def edit(arrays):
        meta = json.loads(str(arrays["meta"]))
        meta.update(changes)
        arrays["meta"] = np.array(json.dumps(meta))
    return edit


@pytest.mark.parametrize("edit,message", [
    (lambda a: a.pop("rnn.weight_hh_l1"), r"missing parameter\(s\): rnn.weight_hh_l1"),
    (lambda a: a.update({"out.bias": np.zeros(3, np.float32)}), r"out.bias has shape \(3,\)"),
    (lambda a: a.pop("meta"), "no meta entry"),
    (lambda a: a.update(meta=np.array("{not json")), "not valid JSON"),
    (set_meta(version=99), "format version 99, newer than the 1"),
    (set_meta(format="something-else"), "not an rnnlm checkpoint"),
    (set_meta(vocab=""), "vocabulary is missing"),
    (set_meta(config={"cell": "lstm", "hidden": -1, "layers": 2}), "invalid hidden -1"),
    (lambda a: a.update({"state/l0/0": np.zeros((3, 5), np.float32)}), "carried state"),
    (set_meta(step=-5), "its meta says step -5, which no training writes"),
    (set_meta(window=1.5), "its meta says window 1.5"),
    (set_meta(best_val_loss=float("nan")), "its meta says best_val_loss nan"),
    (set_meta(lr_scale=0), "its meta says lr_scale 0"),
    (set_meta(elapsed=-1.0), "its meta says elapsed -1.0"),
])
def test_damaged_checkpoints_are_refused(tmp_path, edit, message):
    with pytest.raises(RnnlmError, match=message) as err:
        checkpoint.load(resave(tmp_path, edit))
    assert "bad.npz" in str(err.value)


def test_pickled_objects_are_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled!",))

    path = tmp_path / "evil.npz"
    save_arrays(path, meta=np.array([Boom()], dtype=object))
    with pytest.raises(RnnlmError, match="pickled Python objects; refused"):
        checkpoint.load(path)


def test_absurd_header_is_refused_before_allocating(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("out.weight.npy", buf.getvalue() + b"\0" * 16)
    with pytest.raises(RnnlmError, match="claims 4000000000000 bytes but holds"):
        checkpoint.load(path)


@pytest.mark.parametrize("content,message", [
    (None, "does not exist"),
    (b"", "not an .npz file"),
    (b"hello, I am text", "not an .npz file"),
])
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "x.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RnnlmError, match=message):
        checkpoint.load(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(path, make())
    raw = path.read_bytes()
    for cut in (len(raw) // 3, len(raw) - 10):
        path.write_bytes(raw[:cut])
        with pytest.raises(RnnlmError, match="m.npz"):
            checkpoint.load(path)


def test_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    checkpoint.save(path, make())
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(RnnlmError, match="cannot write checkpoint .*No space left on device"):
        checkpoint.save(path, make("gru", 1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_a_checkpoint_of_the_first_releases_is_read_as_today(tmp_path):
    """Checkpoints from before a run recorded its corpus (one path) and before roll-backs,
    time budgets and fine-tuning (no lr_scale, elapsed, budget_spent, init_from) load, their
    meta upgraded in one place: the corpus as a record, the rest at their neutral values;
    keys a later rnnlm might add are left out."""
    def first_release(arrays):
        meta = json.loads(str(arrays["meta"]))
        for key in ("lr_scale", "elapsed", "budget_spent", "init_from", "corpus"):
            meta.pop(key, None)
        arrays["meta"] = np.array(json.dumps(dict(meta, corpus="shk.txt", someday=1)))

    old = checkpoint.load(resave(tmp_path, first_release))
    assert old.meta.corpus == {"paths": ["shk.txt"], "globs": [], "files": []}
    assert (old.meta.lr_scale, old.meta.elapsed, old.meta.budget_spent) == (1.0, 0.0, 0.0)
    assert old.meta.init_from is None and old.meta.step == 7
    assert not hasattr(old.meta, "someday")
