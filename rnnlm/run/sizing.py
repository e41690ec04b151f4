"""A new run's model sized to its text, its budget and this machine: the whole rule.

A new run gets the settings in SIZED that its user did not set from what its budget buys:
how many updates each candidate width would make on this machine (its speed, measured at
the start: speed()), and how many times ("passes") that reads the training text. The
widest candidate that still makes MIN_UPDATES updates wins (a wider model that makes fewer
has not learned enough by the end); its passes, and its width, set its regularisation (a
text read more often, by a wider model, is learned by heart sooner). Fitted on
benchmarks/sweep.py --passes (benchmarks/passes.csv; docs/results.md, "A model sized to
the text, the budget and the machine"): passes and updates, not seconds, carry over
between machines.

Nothing in it jumps: the regularisation grows continuously with the passes, and the widths
are close enough that a speed measured 5% off chooses a neighbour (a model that, at that
budget, ends near the same loss) rather than a different kind of model.
"""
import dataclasses
import math
import time

import numpy as np

from rnnlm import engines
from rnnlm.io import data
from rnnlm.params import Spec, count, init_params, zero_state
from rnnlm.run import memory, workers
from rnnlm.run.plan import Plan
from rnnlm.run.training import EVAL_SHARE

SIZED = ("cell", "hidden", "layers", "dropout", "dropout_mode", "weight_drop", "lr")
# The candidates, GRU 2 x H, each 14 to 25% wider than the last, so that a choice at a
# budget's edge, where a speed measured a few percent off decides, is between neighbours
# that end near the same loss. Steps of 64 below 256 were too coarse: on the first 300 KB
# of Shakespeare in 3 minutes the 2 x 256 (2,800 updates) ended 0.019 below the 2 x 192
# (4,500), two seeds each, and the 2 x 224 between them (3,650) level with the 256. No
# 288: at either rate it ended 0.011 or more behind both neighbours at 5 minutes of the
# whole text (docs/results.md, "Stable choices").
HIDDEN_SIZES = (128, 160, 192, 224, 256, 320, 384, 448, 512)
MIN_UPDATES = 2500
# The regularisation's strength (0: none, 1: locked dropout 0.35 and weight drop 0.3)
# against the passes a model of 256 reads, a wider model's passes counting as many times
# more as the square root of how much wider it is: (passes, strength) points, straight
# lines between them in log(passes). The sweep's (benchmarks/passes.csv, GRU 2 x 256, four
# texts): none was best at 8 passes on three of four, locked 0.2 + weight drop 0.2
# (strength 0.6) at 16 on three of four, and 0.35 + 0.3 at 40 (docs/results.md). The
# width's share, measured on a GRU 2 x 512 at 8 passes of tiny Shakespeare (3,900 updates,
# what 15 minutes buy here), two seeds each: none overfitted (1.514), strength 0.6 (the
# share counted in full) 1.458, strength 0.3 (its square root) 1.444.
STRENGTH = ((8, 0.0), (16, 0.6), (40, 1.0))
MOST_DROPOUT, MOST_WEIGHT_DROP = 0.35, 0.3
STEADY = 0.15  # two windows in a row this close in time: the machine shows its speed
# A candidate whose measured updates fall short of MIN_UPDATES by less than this share is
# measured again. Eleven fresh `rnnlm config` processes on a quiet machine measured the
# 2 x 320 at 19,500 to 24,800 chars/s: once 18% below the usual, which chose the 2 x 256.
CLOSE = 0.75
# The most parameters a text of n training characters gets: PARAMS_FOR_TEXT * n ** 1.15,
# a few times its characters for a few hundred (a 300-byte text: about 1,000), 10 for
# 100 KB (a 2 x 256 fits, as on the sweep's smallest slices), never binding on a text of
# a megabyte. Below the narrowest candidate, the rule shrinks the model to fit.
PARAMS_FOR_TEXT = 1.7
SMALLEST_HIDDEN = 8  # the narrowest model the rule makes for a very small text


def strength(passes, hidden=256):
    """How strongly a model of `hidden` units a layer that reads its text `passes` times is
    regularised, 0 (none) to 1 (locked dropout MOST_DROPOUT, weight drop MOST_WEIGHT_DROP)."""
    exposure = passes * math.sqrt(hidden / 256)
    return float(np.interp(math.log(max(exposure, 1e-9)), [math.log(p) for p, _ in STRENGTH],
                           [s for _, s in STRENGTH]))


def regularisation(passes, hidden=256):
    """(dropout, dropout_mode, weight_drop) for a model of `hidden` units a layer that reads
    its text `passes` times: continuous in both, none up to 8 passes of a 2 x 256."""
    level = strength(passes, hidden)
    if level <= 0:
        return (0.0, "step", 0.0)
    return (round(MOST_DROPOUT * level, 2), "locked", round(MOST_WEIGHT_DROP * level, 2))


def learning_rate(hidden):
    """The rule's peak learning rate for a width (the sweep's)."""
    return 6e-3 if hidden <= 256 else 4e-3


def candidates(cfg, given, vocab_size=None, train_chars=None):
    """The models the rule chooses among, narrowest first, as Configs: cfg's cell and
    layers where given, else a GRU of 2 layers; each width of HIDDEN_SIZES, or cfg's. Given
    a text (its vocabulary's size and training characters), none with more parameters
    than most_params() allows it, and where that leaves none, the narrowest made to fit."""
    shape = {k: v for k, v in (("cell", "gru"), ("layers", 2)) if k not in given}
    base = dataclasses.replace(cfg, **shape)
    hiddens = [cfg.hidden] if "hidden" in given else HIDDEN_SIZES
    models = [dataclasses.replace(base, hidden=h) for h in hiddens]
    if vocab_size is None:
        return models
    most = most_params(train_chars)
    small = [m for m in models if count(Spec.of(m, vocab_size)) <= most]
    return small or [_shrunk(models[0], given, vocab_size, most)]


def most_params(train_chars):
    """The most parameters the rule gives a model of a text of train_chars characters."""
    return PARAMS_FOR_TEXT * max(train_chars, 1) ** 1.15


def _shrunk(model, given, vocab_size, most):
    """model, narrowed (and made one layer) until it has at most `most` parameters, in
    what its user left to the rule; SMALLEST_HIDDEN units at least."""
    if "hidden" in given:
        return model
    shapes = [(layers, hidden) for layers in sorted({model.layers, 1}, reverse=True)
              if layers == model.layers or "layers" not in given
              for hidden in range(model.hidden, SMALLEST_HIDDEN - 1, -SMALLEST_HIDDEN)]
    for layers, hidden in shapes:
        small = dataclasses.replace(model, layers=layers, hidden=hidden)
        if count(Spec.of(small, vocab_size)) <= most:
            return small
    return dataclasses.replace(model, layers=shapes[-1][0], hidden=SMALLEST_HIDDEN)


def rule(cfg, given, updates, train_chars, vocab_size=None):
    """The rule. updates: {hidden: the updates the budget buys that candidate (of
    candidates(), for the text of train_chars characters and vocab_size symbols, where
    given)}. Returns the Config, every SIZED setting not in `given` chosen, its model in
    words, and its passes."""
    fits = [h for h in updates if updates[h] >= MIN_UPDATES]
    hidden = max(fits) if fits else min(updates)
    passes = updates[hidden] * cfg.batch_size * cfg.seq_len / max(train_chars, 1)
    models = candidates(cfg, given, vocab_size, train_chars)
    chosen = dataclasses.asdict(next(m for m in models if m.hidden == hidden))
    chosen["dropout"], chosen["dropout_mode"], chosen["weight_drop"] = regularisation(passes, hidden)
    chosen["lr"] = learning_rate(hidden)
    cfg = dataclasses.replace(cfg, **{k: chosen[k] for k in SIZED if k not in given})
    return cfg, f"{model_words(cfg)}, lr {cfg.lr:g}", passes


def model_words(cfg):
    """'GRU 2 x 192, locked dropout 0.3, weight drop 0.2'"""
    words = [Spec.of(cfg).name]
    if cfg.dropout > 0:
        words.append(f"{'locked ' if cfg.dropout_mode == 'locked' else ''}dropout {cfg.dropout:g}")
    if cfg.weight_drop > 0:
        words.append(f"weight drop {cfg.weight_drop:g}")
    if cfg.dropout == 0 and cfg.weight_drop == 0:
        words.append("no dropout")
    return ", ".join(words)


def sized(cfg, given, text, began=None, check_memory=True):
    """A new run's model chosen for its text (corpus.Corpus), its budget and this machine
    by rule(), every setting in `given` kept: each candidate's speed is measured here,
    unless the budget is in updates only. Returns the Config, the choice in one line, and
    the updates the budget is to buy it (plan.Plan; None where the budget is in updates)."""
    began = time.perf_counter() if began is None else began
    train_chars = len(data.split(text.ids, cfg.val_fraction)[0])
    fitting = _fitting(candidates(cfg, given, text.vocab.size, train_chars), cfg, text,
                       check_memory)
    plans = _plans(cfg, fitting, text, began)
    budget = f"{_duration(cfg.max_seconds)} here" if cfg.max_seconds else f"{cfg.max_steps:,} updates"
    cfg, words, passes = rule(cfg, given, {h: p.updates for h, p in plans.items()},
                              train_chars, text.vocab.size)
    plan = plans[cfg.hidden] if cfg.max_seconds else None
    made = f" ({plan.updates:,} updates)" if plan else ""
    return cfg, (f"{_size(train_chars)} to train on, about {passes:.1f} passes{made} in "
                 f"{budget}: {words}{_small(cfg, text.vocab.size, train_chars)} "
                 f"(settings you give win: rnnlm config)"), plan


def _small(cfg, vocab_size, train_chars):
    """What the choice line says of a text too small for the rule's candidates."""
    narrowest = candidates(cfg, set())[0]
    if count(Spec.of(narrowest, vocab_size)) <= most_params(train_chars):
        return ""
    return (f"; a very small text: {count(Spec.of(cfg, vocab_size)):,} parameters for "
            f"{train_chars:,} characters (a larger model would learn it by heart)")


def _fitting(candidates, cfg, text, check_memory):
    """The candidates to measure: one where the budget is in updates (they say nothing of
    the machine), and none that training would refuse for memory."""
    if not cfg.max_seconds:  # cfg's width, or the widest below it that the text allows
        candidates = [max((c for c in candidates if c.hidden <= cfg.hidden),
                          key=lambda c: c.hidden, default=candidates[0])]
    has = memory.available() if check_memory else None
    if has is None:
        return candidates
    fitting = [c for c in candidates
               if sum(memory.estimate(c, Spec.of(c, text.vocab.size)).values()) <= has]
    return fitting or candidates[:1]


def _plans(cfg, candidates, text, began):
    """{hidden: the updates the budget buys a candidate and its speed (Plan)}, of the
    candidates measured: the narrowest, and then, where it makes MIN_UPDATES, the widest
    that does found by halving (a wider model is slower): about half of the 9 measured.
    The narrowest that falls short by less than CLOSE is measured a second time, its
    faster speed kept: a measurement is only ever slowed by the machine (another program,
    a core's clock), and the choice between neighbours should not rest on one moment."""
    plans, looks = {}, {}

    def enough(candidate):
        made, rate = cfg.max_steps or float("inf"), None
        if cfg.max_seconds > 0:
            # worker 0's clock, as speed() gives worker 0's speed: every worker must plan
            # alike, or one measures another candidate while the others train
            elapsed = workers.group().bcast(time.perf_counter() - began)
            seconds = cfg.max_seconds * (1 - EVAL_SHARE) - elapsed
            rate = speed(candidate, text.ids, text.vocab.size)
            if candidate.hidden in plans:
                rate = max(rate, plans[candidate.hidden].chars_per_sec)
            made = min(made, round(rate * max(seconds, 0.0) / (cfg.batch_size * cfg.seq_len)))
        plans[candidate.hidden] = Plan(made, rate)
        looks[candidate.hidden] = looks.get(candidate.hidden, 0) + 1
        return made >= MIN_UPDATES

    fits, most = 0, len(candidates) - 1  # the widest that fits is among fits..most
    if not enough(candidates[0]):
        return plans
    while fits < most:
        middle = (fits + most + 1) // 2
        fits, most = (middle, most) if enough(candidates[middle]) else (fits, middle - 1)
    while fits + 1 < len(candidates):  # the next wider, unless it fell short by far or twice
        wider = candidates[fits + 1].hidden
        if wider in plans and (looks[wider] > 1 or plans[wider].updates < CLOSE * MIN_UPDATES):
            break
        if enough(candidates[fits + 1]):
            fits += 1
    return plans


def speed(cfg, ids, vocab_size, most=12):
    """Characters per second of training updates of cfg's model on this machine and these
    workers: each worker times windows of its share of the streams, the reduction
    included, until two in a row agree within STEADY (or `most` windows), and worker 0's
    fastest is everyone's, so that every worker sizes the run alike. Until then the
    machine is not yet showing its speed: the first run on a machine compiles the kernels
    for the text's dtype, measured here to take several windows, and another process may
    take a core for a moment. The first characters of ids, the text's (its dtype, which
    the kernels are compiled for), and random weights."""
    group, rng = workers.group(), np.random.default_rng(0)
    rows = workers.rows(cfg.batch_size, group.rank, group.size)
    spec = Spec.of(cfg, vocab_size)
    params = init_params(spec, rng, np.float32, cfg.init, cfg.forget_bias)
    x = np.resize(ids, (rows.stop - rows.start, cfg.seq_len))
    state, flat = zero_state(spec, x.shape[0], np.float32), np.zeros(count(spec), np.float32)
    engine, times, steady = engines.get(cfg.engine), [], np.zeros(1)
    while not steady[0]:
        began = time.perf_counter()
        engine.loss_and_grads(params, spec, x, x, state)
        group.allreduce(flat)
        times.append(time.perf_counter() - began)
        steady[0] = len(times) >= most or (len(times) >= 3 and  # the first one warms up
                                           abs(times[-1] - times[-2]) <= STEADY * times[-2])
        group.allreduce(steady)  # every worker stops with the others
    fastest = np.array([min(times[1:])]) if group.rank == 0 else np.zeros(1)
    group.allreduce(fastest)
    return cfg.batch_size * cfg.seq_len / float(fastest[0])


def _size(chars):
    if chars < 1000:
        return f"{chars} characters"
    return f"{chars / 1e6:.3g}M characters" if chars >= 1e6 else f"{chars / 1e3:.3g}K characters"


def _duration(seconds):
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
