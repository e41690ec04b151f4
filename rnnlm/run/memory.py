"""How much memory training will take, said before it is spent.

An estimate, in bytes, of the peak a training run reaches: what the process holds already
(interpreter, libraries, the text) plus what training allocates (parameters, optimizer
slots, gradients, the window's buffers, the logits, dropout masks, evaluation), from the
model's shape, the vocabulary and the batch. The fast engine's figures follow its buffers
(the cells' window buffers in params.CELLS, and fast/engine.py's); the textbook engine
keeps every step's arrays in float64.
"""
import math
import os
import resource

from rnnlm import engines
from rnnlm.evaluate import window_length
from rnnlm.params import count
from rnnlm.run.optim import OPTIMIZERS

FLOAT = 4
# Large vocabularies: a warning when there are more characters than this, seen fewer times
# each on average than RARE: most of them are too rare to learn.
MANY_CHARACTERS, RARE = 2000, 300


def _proc_bytes(path, field):
    """A "Field: N kB" line of a Linux /proc file, in bytes; None where there is none."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def in_use():
    """This process's resident memory now, bytes (Linux; elsewhere its peak so far)."""
    rss = _proc_bytes("/proc/self/status", "VmRSS")
    if rss is not None:
        return rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * 1024


def available():
    """Memory the system can give without swapping, bytes, or None where unknown."""
    free = _proc_bytes("/proc/meminfo", "MemAvailable")
    if free is not None:
        return free
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def estimate(cfg, spec):
    """{part: bytes} of what training will allocate, the process's present use included."""
    H, V, L, B, T, G = spec.hidden, spec.vocab_size, spec.layers, cfg.batch_size, cfg.seq_len, spec.gates
    N, P = T * B, count(spec)
    slots = len(OPTIMIZERS[cfg.optimizer].slot_kinds)  # arrays per parameter
    model = P * FLOAT * (1 + slots + 1 + 1)  # params, slots, grads, scratch
    if cfg.engine == "textbook":  # float64, every step's caches and probabilities kept
        window = 8 * (L * T * B * H * (G + 4) + 2 * T * B * V + 2 * P)
    else:
        per_layer = sum(math.prod(shape)  # the cell's window buffers (params.CELLS)
                        for shape in spec.facts.window_shapes(T, B, H).values())
        columns = G * H * N + H * (N + B) + 2 * T * H * B  # and "dout", "dtop" (engine.py)
        if spec.facts.own_gradients:  # dgh's columns, and dgx, dgh of their own
            columns += G * H * N + 2 * T * G * H * B
        logits = min(V * N, max(V, engines.get("fast").LOGITS_BYTES // FLOAT))  # its chunks
        if engines.kernel_name() == "numpy":  # the lookup gradient's one-hot, or its bincount
            logits += N * V if V <= 512 else 2 * G * H * (V + N)  # float64 sums, int64 index
        prepared = L * G * H * (3 * H + 2 * V)  # W_ih, W_hh, its transpose laid out; the table
        window = FLOAT * (L * per_layer + columns + 2 * logits + prepared)
    masks = 0
    if cfg.dropout > 0:  # the masks (one step's where locked) and what they masked
        masks += FLOAT * (L * (1 if cfg.dropout_mode == "locked" else T) + 1) * T * H * B
    if cfg.weight_drop > 0:  # each W_hh's mask and its dropped copy
        masks += FLOAT * 2 * L * G * H * H
    evaluation = 28 * B * V * window_length(B, V, T)
    return {"in use now (interpreter, libraries, text)": in_use(), "model and optimizer": model,
            "window buffers": window, "dropout masks": masks, "evaluation": evaluation}


def describe(parts):
    mb = {k: v / 2 ** 20 for k, v in parts.items()}
    return (f"memory: about {sum(mb.values()):,.0f} MB: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in mb.items() if v >= 0.5))


def rare_vocabulary(spec, n_chars):
    """A warning where the vocabulary is large for the corpus, else None."""
    V = spec.vocab_size
    if V > MANY_CHARACTERS and n_chars / V < RARE:
        return (f"warning: {V:,} distinct characters in {n_chars:,} (seen {n_chars / V:,.0f} "
                f"times each on average): most are too rare to learn, and the output layer "
                f"alone has {V * (spec.hidden + 1):,} parameters")
    return None
