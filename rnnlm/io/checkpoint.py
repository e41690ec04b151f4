"""Checkpoints: one .npz of plain arrays plus a JSON `meta` entry. Never pickle.

Keys:
  rnn.weight_ih_l0, ..., out.weight, out.bias   parameters, named and shaped as PyTorch's
                                                state_dict of nn.RNN/LSTM/GRU + nn.Linear
  optim/<slot>                                  optimizer state (e.g. optim/m.out.weight)
  state/l<layer>/<i>                            carried hidden state of every stream
  meta                                          JSON text: format version, config, vocabulary,
                                                step, epoch, best val loss, data cursor, RNG

Writes are atomic: a temporary file in the same directory, flushed and fsynced, then
renamed over the target, so a crash leaves the old checkpoint or the new one, never half.
"""
import json
import math
import os
import re
import zipfile
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.version import __version__
from rnnlm.io import outputs
from rnnlm.io.data import Vocab
from rnnlm.params import CELLS, Spec, check_params, param_shapes

FORMAT = "rnnlm-checkpoint"
VERSION = 1
MAX_ENTRIES = 10_000


@dataclass
class Meta:
    """What a checkpoint says beside its arrays (JSON in its `meta` entry, with the format,
    its version and the vocabulary): written, checked, upgraded and read here alone."""

    config: dict  # the resolved settings (config.Config) as a plain dict
    corpus: object = None  # what it was trained on: corpus.Corpus.record(), None for the built-in
    step: int = None  # updates done
    epoch: int = None  # passes completed
    window: int = None  # the next window within the pass
    best_val_loss: float = None  # nats/char, None without a validation split
    lr_scale: float = 1.0  # halved at each roll-back after a divergence
    rng: dict = None  # the run's generator's state
    elapsed: float = 0.0  # seconds of training, every process of the run together
    init_from: dict = None  # {"path", "step"} of the model a fine-tuned run started from
    budget_spent: float = 0.0  # the time budget (s) the run ended by having spent
    planned_updates: int = None  # what its time budget was to buy (run/plan.py)
    planned_speed: float = None  # chars/s: the speed measured at the start, behind that plan
    written_by: str = None  # the rnnlm version that wrote it
    version: int = None  # its format's version

    @classmethod
    def from_json(cls, meta):
        """A Meta from a checked meta dict, upgraded: a corpus recorded as one path (the
        first checkpoints) becomes a record; keys this rnnlm does not know are dropped."""
        known = {f.name for f in dataclasses.fields(cls)} - {"written_by"}
        values = {k: v for k, v in meta.items() if k in known}
        corpus = values.get("corpus")
        if corpus is not None and not isinstance(corpus, dict):
            values["corpus"] = {"paths": [str(corpus)], "globs": [], "files": []}
        for key in ("lr_scale", "elapsed", "budget_spent"):  # absent from older ones
            if values.get(key) is None:
                values.pop(key, None)
        return cls(**values, written_by=meta.get("rnnlm"))

    def to_json(self, vocab):
        meta = {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None and k not in ("written_by", "version")}  # None: not known
        return dict(meta, format=FORMAT, version=VERSION, rnnlm=__version__, vocab=vocab.chars)

    def training_state(self):
        """(step, epoch, window, rng) for an exact resume, or None where one is missing."""
        state = (self.step, self.epoch, self.window, self.rng)
        return None if any(v is None for v in state) else state


@dataclass
class Checkpoint:
    params: dict
    spec: Spec
    vocab: Vocab
    meta: Meta
    slots: dict = field(default_factory=dict)  # optimizer state
    state: list = None  # per-layer tuples of (B, H) arrays, or None
    notes: list = field(default_factory=list)  # what loading changed, for the user
    path: str = None  # where it was loaded from

    @property
    def encoding(self):
        """The encoding its corpus was read in: the default for a text it reads now."""
        return self.meta.config.get("encoding") or "utf-8"


def save(path, ckpt):
    """Write ckpt to path atomically. Raises RnnlmError (the old file intact) on failure."""
    path = Path(path)
    arrays = dict(ckpt.params)
    arrays.update({f"optim/{k}": v for k, v in ckpt.slots.items()})
    for layer, tensors in enumerate(ckpt.state or ()):
        arrays.update({f"state/l{layer}/{i}": a for i, a in enumerate(tensors)})
    arrays["meta"] = np.array(json.dumps(ckpt.meta.to_json(ckpt.vocab)))
    with outputs.replacing(path, "checkpoint") as f:
        np.savez(f, **arrays)


def _check_headers(path, archive):
    """Refuse object arrays and arrays whose header promises more bytes than the entry
    holds, before anything is allocated or unpickled."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise RnnlmError(f"checkpoint {path} has {len(infos)} entries; not an rnnlm checkpoint")
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise RnnlmError(f"checkpoint {path} holds {info.filename!r}, which is not an array")
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            reader = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise RnnlmError(f"checkpoint {path}: entry {info.filename} uses array "
                                 f"format {version}, which rnnlm does not read")
            shape, _, dtype = reader(f, max_header_size=10_000)
            if dtype.hasobject:
                raise RnnlmError(f"checkpoint {path}: entry {info.filename} holds pickled "
                                 f"Python objects; refused (rnnlm never unpickles)")
            size = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if size > info.file_size:
                raise RnnlmError(f"checkpoint {path}: entry {info.filename} claims "
                                 f"{size} bytes but holds {info.file_size}; corrupt")


def read_arrays(path):
    """Every array of an .npz, checked before it is read. Returns dict name -> array."""
    path = Path(path)
    if path.is_dir():
        raise RnnlmError(f"checkpoint {path} is a directory, not a file")
    if path.exists() and not path.is_file():  # /dev/zero, a FIFO: would be read for ever
        raise RnnlmError(f"checkpoint {path} is not a regular file")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_headers(path, archive)
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise RnnlmError(f"checkpoint {path} does not exist") from None
    except zipfile.BadZipFile:
        raise RnnlmError(f"checkpoint {path} is not an .npz file, or is truncated") from None
    except (ValueError, EOFError, OSError, zipfile.LargeZipFile) as e:
        raise RnnlmError(f"checkpoint {path} is unreadable or corrupt: {e}") from None


def load(path):
    """Read and validate a checkpoint written by save(). A checkpoint is input from
    outside: what its meta claims is checked against the arrays it holds before anything
    is sized from it, and weights must be finite floating-point numbers (float16 and
    float64 are converted to float32, and a note says so)."""
    arrays = read_arrays(path)
    meta = _read_meta(path, arrays.pop("meta", None))
    spec = _spec_of(path, meta, arrays)
    params = {k: arrays.pop(k) for k in param_shapes(spec) if k in arrays}
    try:
        check_params(params, spec)
    except RnnlmError as e:
        raise RnnlmError(f"checkpoint {path}: {e}") from None
    notes = []
    stored = sorted({str(p.dtype) for p in params.values()} - {"float32"})
    for name, p in params.items():
        if p.dtype.kind != "f":
            raise RnnlmError(f"checkpoint {path}: {name} has dtype {p.dtype}, not floating point")
        with np.errstate(over="ignore"):
            params[name] = p.astype(np.float32, copy=False)
        if not np.isfinite(params[name]).all():
            raise RnnlmError(f"checkpoint {path}: {name} holds NaN or infinite values "
                             f"(a diverged run?); refused")
    if stored:
        notes.append(f"checkpoint {path}: parameters stored as {', '.join(stored)}, "
                     f"converted to float32")
    slots = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    state = _read_state(path, arrays, spec)
    batch = meta["config"].get("batch_size")
    if state is not None and any(a.shape[0] != batch for s in state for a in s):
        raise RnnlmError(f"checkpoint {path}: its carried state is not of the "
                         f"batch_size={batch!r} its meta says")
    return Checkpoint(params, spec, Vocab(meta["vocab"]), Meta.from_json(meta), slots, state,
                      notes, str(path))


def read_meta(path):
    """A checkpoint's Meta alone, without reading its arrays."""
    if Path(path).exists() and not Path(path).is_file():
        raise RnnlmError(f"checkpoint {path} is not a regular file")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_headers(path, archive)
            with archive.open("meta.npy") as f:
                raw = np.lib.format.read_array(f, allow_pickle=False)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        raise RnnlmError(f"checkpoint {path} is unreadable or not an rnnlm checkpoint") from None
    return Meta.from_json(_read_meta(path, raw))


def _read_meta(path, raw):
    if raw is None or raw.shape != () or raw.dtype.kind != "U":
        raise RnnlmError(f"checkpoint {path} has no meta entry; not an rnnlm checkpoint")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError:
        raise RnnlmError(f"checkpoint {path}: its meta entry is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RnnlmError(f"checkpoint {path} is not an rnnlm checkpoint")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        raise RnnlmError(f"checkpoint {path} has an invalid format version {version!r}")
    if version > VERSION:
        raise RnnlmError(f"checkpoint {path} has format version {version}, newer than the "
                         f"{VERSION} this rnnlm {__version__} reads; upgrade rnnlm")
    if not isinstance(meta.get("vocab"), str) or not meta["vocab"]:
        raise RnnlmError(f"checkpoint {path}: its vocabulary is missing")
    if len(set(meta["vocab"])) != len(meta["vocab"]):
        raise RnnlmError(f"checkpoint {path}: its vocabulary repeats characters")
    if not isinstance(meta.get("config"), dict):
        raise RnnlmError(f"checkpoint {path}: its config is missing")
    _check_counts(path, meta)
    return meta


# What training writes into meta, where present: counts from 0, and finite measures.
COUNTS = ("step", "epoch", "window", "planned_updates")
MEASURES = {"best_val_loss": (0.0, True), "lr_scale": (0.0, False), "elapsed": (0.0, True),
            "budget_spent": (0.0, True), "planned_speed": (0.0, False)}  # key: (bound, may equal the bound)


def _check_counts(path, meta):
    """RnnlmError for a training state no run writes: a negative step, a NaN loss."""
    for key in COUNTS:
        value = meta.get(key)
        if key in meta and not (isinstance(value, int) and not isinstance(value, bool)
                                and value >= 0):
            raise RnnlmError(f"checkpoint {path}: its meta says {key} {value!r}, which no "
                             f"training writes (a count from 0); refused")
    for key, (bound, inclusive) in MEASURES.items():
        value = meta.get(key)
        if value is None:
            continue
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and (value >= bound if inclusive else value > bound))
        if not ok:
            raise RnnlmError(f"checkpoint {path}: its meta says {key} {value!r}, which no "
                             f"training writes; refused")


def _spec_of(path, meta, arrays):
    """The model's shape, from meta, once the arrays present agree with it."""
    cfg, vocab_size = meta["config"], len(meta["vocab"])
    cell, hidden, layers = cfg.get("cell"), cfg.get("hidden"), cfg.get("layers")
    if cell not in CELLS:
        raise RnnlmError(f"checkpoint {path}: unknown cell {cell!r}")
    for key, value in (("hidden", hidden), ("layers", layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RnnlmError(f"checkpoint {path}: invalid {key} {value!r}")
    held = sum(1 for name in arrays if re.fullmatch(r"rnn\.weight_ih_l\d+", name))
    if layers != held:
        raise RnnlmError(f"checkpoint {path}: its meta says layers={layers}, but it holds "
                         f"the weights of {held} layer(s)")
    out = arrays.get("out.weight")
    if out is not None and out.shape != (vocab_size, hidden):
        raise RnnlmError(f"checkpoint {path}: out.weight has shape {out.shape}, but its meta "
                         f"says a vocabulary of {vocab_size} and hidden={hidden}")
    return Spec(cell, vocab_size, hidden, layers)


def _read_state(path, arrays, spec):
    if not any(k.startswith("state/") for k in arrays):
        return None
    state = []
    for layer in range(spec.layers):
        tensors = []
        for i in range(spec.state_size):
            a = arrays.get(f"state/l{layer}/{i}")
            if a is None or a.ndim != 2 or a.shape[1] != spec.hidden:
                raise RnnlmError(f"checkpoint {path}: carried state state/l{layer}/{i} "
                                 f"is missing or misshapen")
            tensors.append(a)
        state.append(tuple(tensors))
    return state


def shown(chars):
    """Characters as a person can read them: invisible ones (\\n, \\t, other spaces,
    control characters) escaped, the rest as they are."""
    return "".join(ch if ch == " " or (ch.isprintable() and not ch.isspace())
                   else ch.encode("unicode_escape").decode("ascii") for ch in chars)


def summary(ckpt):
    """What a checkpoint holds, as a plain dict (rnnlm info)."""
    meta, spec = ckpt.meta, ckpt.spec
    best = meta.best_val_loss
    return {
        "file": ckpt.path,
        "size_bytes": os.path.getsize(ckpt.path) if ckpt.path else None,
        "format": f"{FORMAT} version {meta.version}, written by rnnlm {meta.written_by}",
        "model": spec.name,
        "parameters": sum(int(p.size) for p in ckpt.params.values()),
        "vocabulary_size": spec.vocab_size,
        "vocabulary": shown(ckpt.vocab.chars),
        "step": meta.step,
        "epoch": meta.epoch,
        "best_val_loss": None if best is None else {
            "nats_per_char": round(best, 4), "bits_per_char": round(best / math.log(2), 4)},
        "training_seconds": round(meta.elapsed, 1),
        "updates": None if meta.planned_updates is None else {  # of a time budget
            "planned": meta.planned_updates, "made": meta.step,  # (up to this checkpoint)
            "planned_at_chars_per_sec": round(meta.planned_speed)},
        "init_from": meta.init_from,
        "corpus": meta.corpus,
        "config": meta.config,
    }
