"""A new run's model sized to its text, its budget and this machine: the whole rule.

A new run gets the settings in SIZED that its user did not set from what its budget buys:
how many updates each candidate width would make on this machine (its speed, measured at
the start: speed()), and how many times ("passes") that reads the training text. The
widest candidate that still makes MIN_UPDATES updates wins (a wider model that makes fewer
has not learned enough by the end); its passes set its regularisation (a text read more
often is learned by heart sooner). Fitted on benchmarks/sweep.py --passes
(benchmarks/passes.csv; docs/results.md, "A model sized to the text, the budget and the
machine"): passes and updates, not seconds, carry over between machines.
"""
import dataclasses
import time

import numpy as np

from rnnlm import engines
from rnnlm.io import data
from rnnlm.params import Spec, count, init_params, zero_state
from rnnlm.run import memory, workers
from rnnlm.run.plan import Plan
from rnnlm.run.training import EVAL_SHARE

SIZED = ("cell", "hidden", "layers", "dropout", "dropout_mode", "weight_drop", "lr")
HIDDEN_SIZES = (128, 192, 256, 384, 512)  # the candidates, GRU 2 x H
MIN_UPDATES = 2500
# (passes at least, (dropout, dropout_mode, weight_drop)): the sweep's best level
REGULARISATION = ((0, (0.0, "step", 0.0)),
                  (10, (0.2, "locked", 0.2)),
                  (40, (0.35, "locked", 0.3)))
STEADY = 0.15  # two windows in a row this close in time: the machine shows its speed
# A candidate with more parameters than this per training character is not measured: on
# a text of a few hundred characters every candidate makes its updates, and the widest
# (1.3 million parameters for 270 characters) would learn the text by heart. Set far
# above what the sweep's texts (30 KB and more) reach, so that it decides for tiny texts
# alone.
MAX_PARAMS_PER_CHAR = 50


def regularisation(passes):
    """(dropout, dropout_mode, weight_drop) for a model that reads its text `passes` times."""
    return [level for at_least, level in REGULARISATION if passes >= at_least][-1]


def learning_rate(hidden):
    """The rule's peak learning rate for a width (the sweep's)."""
    return 6e-3 if hidden <= 256 else 4e-3


def candidates(cfg, given):
    """The models the rule chooses among, narrowest first, as Configs: cfg's cell and
    layers where given, else a GRU of 2 layers; each width of HIDDEN_SIZES, or cfg's."""
    shape = {k: v for k, v in (("cell", "gru"), ("layers", 2)) if k not in given}
    base = dataclasses.replace(cfg, **shape)
    hiddens = [cfg.hidden] if "hidden" in given else HIDDEN_SIZES
    return [dataclasses.replace(base, hidden=h) for h in hiddens]


def rule(cfg, given, updates, train_chars):
    """The rule. updates: {hidden: the updates the budget buys that candidate (of
    candidates())}; train_chars: the characters of the training text. Returns the Config,
    every SIZED setting not in `given` chosen, its model in words, and its passes."""
    fits = [h for h in updates if updates[h] >= MIN_UPDATES]
    hidden = max(fits) if fits else min(updates)
    passes = updates[hidden] * cfg.batch_size * cfg.seq_len / max(train_chars, 1)
    chosen = dataclasses.asdict(candidates(cfg, given)[0])
    chosen["hidden"] = hidden
    chosen["dropout"], chosen["dropout_mode"], chosen["weight_drop"] = regularisation(passes)
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
    fitting = _fitting(candidates(cfg, given), cfg, text, check_memory)
    plans = _plans(cfg, _not_too_big(fitting, text.vocab.size, train_chars), text, began)
    budget = f"{_duration(cfg.max_seconds)} here" if cfg.max_seconds else f"{cfg.max_steps:,} updates"
    cfg, words, passes = rule(cfg, given, {h: p.updates for h, p in plans.items()}, train_chars)
    plan = plans[cfg.hidden] if cfg.max_seconds else None
    made = f" ({plan.updates:,} updates)" if plan else ""
    tiny = (f"; a tiny text: {count(Spec.of(cfg, text.vocab.size)):,} parameters for "
            f"{train_chars:,} characters learn it by heart more than they model it"
            if _too_big(cfg, text.vocab.size, train_chars) else "")
    return cfg, (f"{_size(train_chars)} to train on, about {passes:.1f} passes{made} in "
                 f"{budget}: {words}{tiny} (settings you give win: rnnlm config)"), plan


def _not_too_big(candidates, vocab_size, train_chars):
    """The candidates within MAX_PARAMS_PER_CHAR of the text; the narrowest at least."""
    small = [c for c in candidates if not _too_big(c, vocab_size, train_chars)]
    return small or candidates[:1]


def _too_big(cfg, vocab_size, train_chars):
    return count(Spec.of(cfg, vocab_size)) > MAX_PARAMS_PER_CHAR * train_chars


def _fitting(candidates, cfg, text, check_memory):
    """The candidates to measure: cfg's width alone where the budget is in updates (they
    say nothing of the machine), and none that training would refuse for memory."""
    if not cfg.max_seconds:
        candidates = [c for c in candidates if c.hidden == cfg.hidden]
    has = memory.available() if check_memory else None
    if has is None:
        return candidates
    fitting = [c for c in candidates
               if sum(memory.estimate(c, Spec.of(c, text.vocab.size)).values()) <= has]
    return fitting or candidates[:1]


def _plans(cfg, candidates, text, began):
    """{hidden: the updates the budget buys each candidate and its speed (Plan)},
    narrowest first: where one makes too few, wider ones (slower) would too, and are not
    measured."""
    window = cfg.batch_size * cfg.seq_len
    plans = {}
    for candidate in candidates:
        made, rate = cfg.max_steps or float("inf"), None
        if cfg.max_seconds > 0:
            seconds = cfg.max_seconds * (1 - EVAL_SHARE) - (time.perf_counter() - began)
            rate = speed(candidate, text.ids, text.vocab.size)
            made = min(made, round(rate * max(seconds, 0.0) / window))
        plans[candidate.hidden] = Plan(made, rate)
        if made < MIN_UPDATES:
            break
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
