"""The fast engine's elementwise kernels: one interface, one module per implementation.

A cell step is a GEMM (NumPy's BLAS, always) and elementwise work around it: the gates'
activations, the state update, and in the backward step their derivatives. That work is
a kernel, so that the engine's BPTT reads the same whichever implementation runs:

    rnn_forward(a, hh)                             a = tanh(a + hh)
    rnn_backward(h, dh)                            h = dh * (1 - h^2)
    lstm_forward(acts, hh, c_prev, c, h)           acts = gates o, i, f, g; c; h
    lstm_backward(acts, c_prev, c, dh, dc_next, dc_prev)    acts = their gradients; dc_prev
    gru_forward(rzn, gh, bias, h_prev, h)          gh += bias; rzn = gates r, z, n; h
    gru_backward(rzn, gh, h_prev, dh, dgx, dgh)    dgx, dgh; dh = dh * z
    lookup(table, ids, out)                        out[t] = table's columns ids[t]: W_ih x_t
    lookup_grad(values, ids, out)                  its gradient: out[:, j] = sum of columns id j
    adam(p, g, m, v, b1, b2, step_size, v_scale, eps)    one Adam update of p, m, v
    rnn_sample_step(table, w_in, b_in, w_hh, b_hh, h, c, char_id, out_w, out_b, logits, a, gh)
    lstm_sample_step(...), gru_sample_step(...)    one character through the whole network

Every array is (rows, B) and C-contiguous; gate blocks are H rows each, in the cell's
order (fast/cells.py); the pre-activations of sigmoid gates arrive halved, so that
sigmoid(a) = (1 + tanh(a / 2)) / 2 is one tanh; gradients are with respect to the true
pre-activations. An output that replaces an input is written into that argument.

Implementations: kernels_numpy (always) and kernels_numba (where Numba imports: the extra
rnnlm[fast]). `active` is the one in use: chosen by `load()`, or on first use, from
$RNNLM_KERNELS (numpy | numba), else Numba where it imports. Numba's compiled code is
cached on disk (in $RNNLM_CACHE_DIR, else $XDG_CACHE_HOME/rnnlm or ~/.cache/rnnlm), so
that only the first run compiles.
"""
import hashlib
import importlib
import os
import platform
import sys
import time
from pathlib import Path

from rnnlm.errors import RnnlmError

IMPLEMENTATIONS = ("numpy", "numba")


def load(name=None, notify=None, prefer=None):
    """Make an implementation the active one and return it: `name`, else $RNNLM_KERNELS,
    else `prefer`, else the best available. notify(message), if given, hears what a user
    should know: that kernels are being compiled, or why they cannot be cached."""
    global active
    notify = notify or (lambda message: None)
    name = name or os.environ.get("RNNLM_KERNELS") or prefer
    if name is not None and name not in IMPLEMENTATIONS:
        raise RnnlmError(f"RNNLM_KERNELS must be one of {', '.join(IMPLEMENTATIONS)}, "
                         f"got {name!r}")
    if name in (None, "numba"):
        try:
            active = _load_numba(notify)
            return active
        except ImportError:
            if name == "numba":
                raise RnnlmError("the numba kernels need Numba: pip install 'rnnlm[fast]'") from None
    active = importlib.import_module("rnnlm.fast.kernels_numpy")
    return active


def __getattr__(attribute):  # `active` before any load(): choose now
    if attribute == "active":
        return load()
    raise AttributeError(attribute)


def cache_dir():
    base = os.environ.get("RNNLM_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnlm"
    return Path(base)


def _load_numba(notify):
    import numba  # ImportError: no Numba here

    if not os.environ.get("NUMBA_CACHE_DIR"):  # the user's own choice comes first
        where = cache_dir() / "numba"
        try:
            where.mkdir(parents=True, exist_ok=True)
            probe = where / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            numba.config.CACHE_DIR = str(where)
        except OSError as e:
            numba.config.CACHE_DIR = ""  # kernels_numba then compiles in memory
            notify(f"kernel cache {where} cannot be written ({e.strerror or e}): "
                   f"compiling kernels in memory, for this run only")
    module = importlib.import_module("rnnlm.fast.kernels_numba")
    marker = Path(numba.config.CACHE_DIR or ".") / f"compiled-{_signature(module, numba)}"
    if numba.config.CACHE_DIR and not marker.exists():
        notify("compiling kernels, once (they are cached for later runs)")
        started = time.perf_counter()
        module.warm_up()
        marker.write_text(f"{time.perf_counter() - started:.1f} s\n")
    else:  # loaded from the cache (or compiled in memory) now, not in the middle of a run
        module.warm_up()
    return module


def _signature(module, numba):
    """What a compiled kernel depends on: its source, Numba, Python and the machine."""
    source = Path(module.__file__).read_bytes()
    text = f"{numba.__version__} {sys.version} {platform.machine()}".encode()
    return hashlib.sha256(source + text).hexdigest()[:16]
