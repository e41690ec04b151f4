"""Every setting and its default, once; YAML files and KEY=VALUE overrides on top.

Precedence, lowest first: the defaults below, a YAML file (--config), then --set KEY=VALUE
and the dedicated command-line flags. Unknown keys, wrong types and out-of-range values
raise RnnlmError naming the key.
"""
import dataclasses
import difflib
import inspect
import math
import re
from dataclasses import dataclass

import yaml

from rnnlm import arguments
from rnnlm.errors import RnnlmError
from rnnlm.params import CELLS

# The choices of the settings that name one; optim.OPTIMIZERS and engines.ENGINES have
# one entry for each name here (tested).
OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam")
SCHEDULES = ("constant", "step", "cosine", "linear")
INITS = ("uniform", "orthogonal")
ENGINES = ("fast", "textbook")
PRECISIONS = ("float32", "bf16", "auto")  # of the fast engine's products (fast/blas.py)
DROPOUT_MODES = ("step", "locked")


@dataclass
class Config:
    # model
    cell: str = "gru"  # rnn | lstm | gru: gru learned best in 5 minutes (README)
    hidden: int = 256  # units per layer (H)
    layers: int = 2  # stacked cells
    dropout: float = 0.0  # inverted dropout on every layer's output, training only
    dropout_mode: str = "step"  # step: a new mask every step | locked: one per stream per window
    weight_drop: float = 0.0  # DropConnect on each layer's W_hh, one mask per update
    init: str = "uniform"  # PyTorch's all-uniform, or orthogonal W_hh blocks (README)
    forget_bias: float = 0.0  # LSTM forget-gate bias at init; 1 measured worse here
    # data
    encoding: str = "utf-8"  # of the corpus files
    newline: str = "keep"  # keep | lf: make \r\n and \r line ends \n
    val_fraction: float = 0.1  # the last part of the text, held out for validation
    batch_size: int = 32  # parallel streams (B)
    seq_len: int = 64  # BPTT window (T): gradients flow back at most this far
    windows: str = "shifted"  # shifted: cut elsewhere each pass | fixed: the same every pass
    # optimisation
    optimizer: str = "adam"  # sgd | adagrad | rmsprop | adam
    lr: float = 6e-3  # peak learning rate
    momentum: float = 0.9  # sgd
    beta1: float = 0.9  # adam
    beta2: float = 0.999  # adam
    alpha: float = 0.99  # rmsprop's moving-average decay
    eps: float = 1e-8  # adam, adagrad, rmsprop denominators
    schedule: str = "cosine"  # constant | step | cosine | linear (to min_lr at the end)
    decay_rate: float = 0.97  # step: lr *= decay_rate every decay_every updates
    decay_every: int = 1000  # step
    min_lr: float = 0.0  # cosine, linear: the rate reached at the end of the run
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps
    clip_norm: float = 5.0  # rescale gradients whose global norm exceeds this; 0 = off
    clip_value: float = 0.0  # then clip each entry to +-this (min-char-rnn); 0 = off
    on_divergence: str = "stop"  # stop | rollback: reload last.npz and halve the lr
    # run
    max_steps: int = 0  # updates, each one window of B x T characters; 0 = no limit
    max_seconds: float = 180.0  # wall-clock budget (--time), the final evaluation in it; 0 = none
    eval_every: int = 0  # updates between val loss, sample and checkpoints; 0 = by time
    evaluations: int = 5  # with a time budget: evaluations evenly spaced in it, the last at its end
    log_every: int = 50  # updates between rows of metrics.csv
    sample_length: int = 200  # characters of the sample shown at each eval
    seed: int = 1337  # weights, dropout and samples all come from this
    engine: str = "fast"  # fast | textbook: the same numbers (README, "Read the BPTT")
    precision: str = "float32"  # float32 | bf16: products in bfloat16 (MKL) | auto: where faster


# key -> (check, message): what a value must satisfy beyond its type.
RULES = {
    "cell": (lambda v: v in CELLS, f"one of {', '.join(CELLS)}"),
    "init": (lambda v: v in INITS, f"one of {', '.join(INITS)}"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "engine": (lambda v: v in ENGINES, f"one of {', '.join(ENGINES)}"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "newline": (lambda v: v in ("keep", "lf"), "one of keep, lf"),
    "on_divergence": (lambda v: v in ("stop", "rollback"), "one of stop, rollback"),
    "hidden": (lambda v: v >= 1, ">= 1"),
    "layers": (lambda v: v >= 1, ">= 1"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dropout_mode": (lambda v: v in DROPOUT_MODES, f"one of {', '.join(DROPOUT_MODES)}"),
    "weight_drop": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "seq_len": (lambda v: v >= 1, ">= 1"),
    "windows": (lambda v: v in ("shifted", "fixed"), "one of shifted, fixed"),
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "alpha": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "eps": (lambda v: v > 0, "> 0"),
    "decay_rate": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "decay_every": (lambda v: v >= 1, ">= 1"),
    "min_lr": (lambda v: v >= 0, ">= 0"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "clip_norm": (lambda v: v >= 0, ">= 0"),
    "clip_value": (lambda v: v >= 0, ">= 0"),
    "max_steps": (lambda v: v >= 0, ">= 0"),
    "max_seconds": (lambda v: v >= 0, ">= 0"),
    "eval_every": (lambda v: v >= 0, ">= 0"),
    "evaluations": (lambda v: v >= 1, ">= 1"),
    "log_every": (lambda v: v >= 1, ">= 1"),
    "sample_length": (lambda v: 0 <= v <= 100_000, "from 0 to 100000 (rnnlm sample draws more)"),
    "seed": (lambda v: 0 <= v < 2 ** 63, "in [0, 2**63)"),
}

FIELDS = {f.name: f.type for f in dataclasses.fields(Config)}


def _unknown(key, where):
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return RnnlmError(f"{where}unknown config key {key!r}{hint}")


def coerce(key, value, where=""):
    """Check value's type for key, converting what YAML leaves ambiguous (it reads 1e-3
    as a string). Then check its range."""
    if key not in FIELDS:
        raise _unknown(key, where)
    kind = FIELDS[key]
    bad = RnnlmError(f"{where}{key} must be {_KIND_NAMES[kind]}, got {value!r}")
    if kind is str:
        if not isinstance(value, str):
            raise bad
    elif isinstance(value, bool):  # bool is an int in Python; never a number here
        raise bad
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        value = float(value)
    elif kind is int:
        if isinstance(value, str):
            try:
                value = float(value)  # "1e4" from YAML
            except ValueError:
                raise bad from None
        if isinstance(value, float):
            if not value.is_integer():
                raise bad
            value = int(value)
        if not isinstance(value, int):
            raise bad
    ok, wanted = RULES.get(key, (lambda v: True, ""))
    if not ok(value):
        raise RnnlmError(f"{where}{key} must be {wanted}, got {value!r}")
    return value


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number"}


def parse_assignment(text):
    """'KEY=VALUE' -> (key, value), the value read as YAML (so 'true', '3', 'adam')."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RnnlmError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError, TypeError, RecursionError):
        value = raw  # not YAML: the plain string, checked like any other value
    return key, value


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error
    (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path):
    """The mapping in a YAML config file (empty file: no settings)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise RnnlmError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise RnnlmError(f"config file {path} is a directory") from None
    except UnicodeDecodeError as e:
        raise RnnlmError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise RnnlmError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "cannot parse"
        raise RnnlmError(f"config file {path}: invalid YAML{where}: {problem}") from None
    except (ValueError, TypeError, RecursionError) as e:  # e.g. a date like 2024-13-45
        raise RnnlmError(f"config file {path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RnnlmError(f"config file {path} must hold a mapping of key: value, "
                         f"not a {type(data).__name__}")
    return data


def build(base=None, file=None, assignments=(), **overrides):
    """Resolve a Config: base (defaults if None) < file < assignments < overrides.
    `overrides` holds command-line flags; None means the flag was not given."""
    return resolve(base, file, assignments, **overrides)[0]


def resolve(base=None, file=None, assignments=(), **overrides):
    """build(), and the keys the user gave (in the file, with --set, or as overrides):
    (Config, set of keys)."""
    values = dataclasses.asdict(base) if base is not None else dataclasses.asdict(Config())
    given = set()
    if file is not None:
        file = arguments.path(file, "config_file")
        for key, value in read_yaml(file).items():
            if not isinstance(key, str):
                raise RnnlmError(f"config file {file}: key {key!r} is not a string")
            if key == "corpus":  # a run's record of its corpus (to_yaml): not a setting
                continue
            values[key] = coerce(key, value, f"config file {file}: ")
            given.add(key)
    for text in assignments:
        key, value = parse_assignment(text)
        values[key] = coerce(key, value, "--set: ")
        given.add(key)
    for key, value in overrides.items():
        if value is not None:
            values[key] = coerce(key, value)
            given.add(key)
    _check_end(values)
    return Config(**values), given


def edits(path, cfg, given=()):
    """(key, the file's value, cfg's) for the first setting the YAML file at path sets
    otherwise than cfg, keys in `given` aside; None where they agree (a run's config.yaml
    that the user edited, against the settings a resume would write back over it)."""
    for key, value in read_yaml(path).items():
        if key in FIELDS and key not in given:
            value = coerce(key, value, f"{path}: ")
            if value != getattr(cfg, key):
                return key, value, getattr(cfg, key)
    return None


def _check_end(values):
    """RnnlmError for a run that would never end, or never reach its rate."""
    if values["max_steps"] == 0 and values["max_seconds"] == 0:
        raise RnnlmError("a run needs an end: max_steps or max_seconds (--time), or both")
    if 0 < values["max_steps"] <= values["warmup_steps"]:
        raise RnnlmError(f"warmup_steps={values['warmup_steps']} is as long as the run "
                         f"(max_steps={values['max_steps']}): the rate would never reach lr")


def parse_duration(text):
    """'90', '90s', '5m', '1.5h', '1h30m' -> seconds; a number after a unit counts in the
    next smaller one ('1h30' is 1 h 30 min, '5m30' 5 min 30 s). Units come largest first,
    each once ('30s1m' and '1m1m' are typing slips, not 90 and 120 s). RnnlmError naming
    --time otherwise."""
    units = {"s": 1, "m": 60, "h": 3600}
    smaller = {"h": "m", "m": "s"}
    usage = f"--time expects a duration such as 90s, 5m or 1h30m, got {text!r}"
    total, number, last = 0.0, "", None
    for ch in text.strip().lower():
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            if last is not None and units[ch] >= units[last]:
                raise RnnlmError(f"--time {text!r}: its units must come largest first, "
                                 f"each once (e.g. 1h30m)")
            total, number, last = total + _number(number, text) * units[ch], "", ch
        else:
            raise RnnlmError(usage)
    if number:
        if last == "s":
            raise RnnlmError(usage)
        total += _number(number, text) * units[smaller[last]] if last else _number(number, text)
    elif last is None:
        raise RnnlmError(usage)
    if not 0 < total < math.inf:
        raise RnnlmError(f"--time must be more than 0 seconds, got {text!r}")
    return total


def _number(digits, text):
    try:
        return float(digits)
    except ValueError:
        raise RnnlmError(f"--time expects a duration such as 90s, 5m or 1h30m, "
                         f"got {text!r}") from None


# What a resumed run cannot change: the model's shape, the data layout and the optimizer.
FROZEN_ON_RESUME = ("cell", "hidden", "layers", "batch_size", "seq_len", "windows",
                    "val_fraction", "optimizer", "seed")


def check_resumable(saved, wanted):
    """RnnlmError naming the first setting that differs where a resumed run cannot."""
    for key in FROZEN_ON_RESUME:
        old, new = getattr(saved, key), getattr(wanted, key)
        if old != new:
            raise RnnlmError(f"cannot resume with {key}={new!r}: the checkpoint was trained "
                             f"with {key}={old!r}")


# Settings added after checkpoints had been saved without them, with the value that their
# runs had (so that resuming one stays exact).
BEFORE_THEY_EXISTED = {"windows": "fixed"}


def from_dict(data, where=""):
    """A Config from a plain dict (a checkpoint's), every value checked."""
    values = dataclasses.asdict(Config()) | BEFORE_THEY_EXISTED
    for key, value in data.items():
        if not isinstance(key, str):
            raise RnnlmError(f"{where}config key {key!r} is not a string")
        values[key] = coerce(key, value, where)
    return Config(**values)


def described():
    """(key, default, meaning) of every setting, from the trailing comments of Config's
    fields above: the defaults and their meanings live in one place."""
    comments = {}
    for line in inspect.getsource(Config).splitlines():
        match = re.match(r"\s+(\w+): \w+ = .*?  # (.*)$", line)
        if match:
            comments[match.group(1)] = match.group(2)
    return [(f.name, f.default, comments.get(f.name, "")) for f in dataclasses.fields(Config)]


def to_yaml(cfg, corpus=None):
    """The resolved configuration, and what the run is trained on: the `corpus` section,
    which rnnlm writes and --config ignores."""
    text = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
    if corpus:
        text += "# what the run is trained on (written by rnnlm; ignored by --config):\n"
        text += yaml.safe_dump({"corpus": corpus}, sort_keys=False, allow_unicode=True)
    return text
