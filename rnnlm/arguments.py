"""What the public functions accept, checked in one place: the Python API calls these, and
the command line's own types (cli.PathType) do too, so that `m.sample("a", "10")` and
`rnnlm sample -n x` are each one line naming the argument, never a ValueError from deep
inside NumPy.

Each check returns the value as the library uses it (a Path, an int) or raises
RnnlmError naming the argument and what it takes.
"""
import math
import numbers
import os
from pathlib import Path

from rnnlm.errors import RnnlmError


def _kind(value):
    return type(value).__name__


def path(value, name):
    """A file or directory named by a str or os.PathLike; never empty (an unset variable
    in `rnnlm train "$CORPUS"` would otherwise mean the current directory)."""
    if isinstance(value, bytes):
        raise RnnlmError(f"{name} must be a path as str or pathlib.Path, got bytes: decode "
                         f"it (os.fsdecode)")
    if not isinstance(value, (str, os.PathLike)):
        raise RnnlmError(f"{name} must be a path (str or pathlib.Path), got {_kind(value)} "
                         f"{value!r}")
    text = os.fspath(value)
    if isinstance(text, bytes):
        return path(text, name)
    if not text.strip():
        raise RnnlmError(f"{name} is an empty path (is a variable unset?)")
    return Path(text)


def text(value, name):
    """A str (a prime, a text to score); bytes are not text until decoded."""
    if isinstance(value, bytes):
        raise RnnlmError(f"{name} must be a str, got bytes: decode it first "
                         f"(e.g. data.decode('utf-8'))")
    if not isinstance(value, str):
        raise RnnlmError(f"{name} must be a str, got {_kind(value)} {value!r}")
    return value


def integer(value, name, minimum=None):
    """A whole number (not a bool, not 2.5, not "10"), at least minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise RnnlmError(f"{name} must be a whole number, got {_kind(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise RnnlmError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def number(value, name):
    """A finite real number (an int or a float, not a str, not nan)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RnnlmError(f"{name} must be a number, got {_kind(value)} {value!r}")
    if not math.isfinite(value):
        raise RnnlmError(f"{name} must be a finite number, got {value}")
    return float(value)


def seed(value):
    """A random seed: None (fresh entropy), a whole number >= 0, or a list of them."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [integer(v, "seed", minimum=0) for v in value]
    return integer(value, "seed", minimum=0)
