"""Numerical gradient checking: analytic BPTT gradients against centred finite differences.

A tiny random model in float64 with a non-zero carried-in state; every entry of every
parameter tensor is perturbed by +-eps and the loss re-evaluated. For each tensor we report
the largest relative error  |a - n| / max(|a| + |n|, floor);  the floor keeps entries whose
true gradient is ~0 from turning rounding noise into a huge relative error.
"""
from dataclasses import dataclass

import numpy as np

from rnnlm import engines
from rnnlm.params import CELLS, Spec, dropout_masks, init_params, weight_drop_masks, zero_state

TOLERANCE = 1e-6
FLOOR = 1e-3  # |a| + |n| below this counts as zero: the error is then judged as absolute
EPS = 2e-5  # balances truncation (eps^2) against rounding (1/eps), measured on 288 checks

# The regularisers checked, each at rate 0.3 with its masks drawn once and held fixed:
# name -> (dropout, dropout_mode, weight_drop).
REGULARISERS = {"none": (0.0, "step", 0.0), "dropout": (0.3, "step", 0.0),
                "locked": (0.3, "locked", 0.0), "weight drop": (0.0, "step", 0.3)}


@dataclass
class Row:
    case: str  # e.g. "lstm L2 locked"
    name: str  # parameter name
    shape: tuple
    max_rel_error: float

    @property
    def ok(self):
        return self.max_rel_error <= TOLERANCE


def relative_error(analytic, numeric, floor=FLOOR):
    return float(np.max(np.abs(analytic - numeric) /
                        np.maximum(np.abs(analytic) + np.abs(numeric), floor)))


def check(cell="rnn", layers=1, regulariser="none", hidden=5, vocab=7, seq_len=6, batch=3,
          seed=0, engine="fast", eps=EPS):
    """Check every parameter of one configuration with one engine ("fast" or
    "textbook") and one of REGULARISERS. Returns one Row per tensor."""
    rng = np.random.default_rng(seed)
    spec = Spec(cell, vocab, hidden, layers)
    params = init_params(spec, rng, np.float64)
    # Larger weights than at init, so that no gate saturates or sits at zero by accident.
    for p in params.values():
        p += rng.normal(0.0, 0.3, p.shape)
    x = rng.integers(0, vocab, (batch, seq_len))
    y = rng.integers(0, vocab, (batch, seq_len))
    state = [tuple(rng.normal(0.0, 0.5, (batch, hidden)) for _ in s)
             for s in zero_state(spec, batch, np.float64)]
    dropout, mode, weight_drop = REGULARISERS[regulariser]
    masks = dropout_masks(spec, batch, seq_len, dropout, rng, np.float64, mode == "locked")
    weight_masks = weight_drop_masks(spec, weight_drop, rng, np.float64)

    def loss_at():
        return engines.loss_and_grads(engine, params, spec, x, y, state, masks, weight_masks)[0]

    _, grads, _ = engines.loss_and_grads(engine, params, spec, x, y, state, masks, weight_masks)
    case = (f"{cell} L{layers}" + ("" if regulariser == "none" else f" {regulariser}")
            + ("" if engine == "fast" else f" {engine}"))
    rows = []
    for name, p in params.items():
        numeric = np.zeros_like(p)
        for ix in np.ndindex(p.shape):
            old = p[ix]
            p[ix] = old + eps
            plus = loss_at()
            p[ix] = old - eps
            minus = loss_at()
            p[ix] = old
            numeric[ix] = (plus - minus) / (2 * eps)
        rows.append(Row(case, name, p.shape, relative_error(grads[name], numeric)))
    return rows


def check_all(cells=tuple(CELLS), layer_counts=(1, 2), regularisers=tuple(REGULARISERS),
              engines=("fast",), **sizes):
    """Every engine x cell x depth x regulariser, as one list of rows."""
    rows = []
    for engine in engines:
        for cell in cells:
            for layers in layer_counts:
                for regulariser in regularisers:
                    rows += check(cell, layers, regulariser, engine=engine, **sizes)
    return rows


def report(rows):
    """A line a tensor (FAIL where it is off), and the count within TOLERANCE."""
    lines = [f"{'case':<27} {'parameter':<18} {'shape':<10} {'max rel error':>13}"]
    for r in rows:
        shape = "x".join(map(str, r.shape))
        lines.append(f"{r.case:<27} {r.name:<18} {shape:<10} {r.max_rel_error:>13.2e}"
                     + ("" if r.ok else "  FAIL"))
    failed = sum(not r.ok for r in rows)
    return lines + [f"{len(rows) - failed} of {len(rows)} tensors within tolerance "
                    f"{TOLERANCE:g}" + (f"; {failed} FAILED" if failed else "")]
