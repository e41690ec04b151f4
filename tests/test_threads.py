"""The run's choice of BLAS threads (rnnlm/run/threads.py): it follows the speeds it
measures, and never changes a number the run computes."""
import math

import numpy as np
import pytest

from rnnlm.config import Config
from rnnlm.io.data import Streams, text_corpus
from rnnlm.params import Spec, init_params
from rnnlm.run import threads, training
from rnnlm.run.threads import PROBE_UPDATES, Tuner


class Machine:
    """Seconds an update takes at each thread count: what the tuner sees, set by a test."""

    def __init__(self, seconds):
        self.seconds, self.set = dict(seconds), []

    def run(self, tuner, updates):
        changes = []
        for _ in range(updates):
            change = tuner.observe(self.seconds[tuner.in_use])
            changes += [change] if change else []
        return changes


def test_the_tuner_keeps_the_fastest_count_and_follows_a_slowdown():
    machine = Machine({1: 0.010, 2: 0.020})  # a busy core: two threads stall each other
    tuner = Tuner([1, 2], machine.set.append)
    changes = machine.run(tuner, 2 * (PROBE_UPDATES + 1))  # one probe of each count
    assert tuner.threads == tuner.in_use == 1
    assert [(c.was, c.threads) for c in changes] == [(2, 1)]
    assert changes[0].speed == pytest.approx(100) and changes[0].speed_was == pytest.approx(50)
    assert changes[0].describe(1000) == ("threads: 2 -> 1 (measured 100,000 chars/s on 1, "
                                         "50,000 on 2)")
    machine.seconds = {1: 0.030, 2: 0.015}  # the other program ends; one thread is now slow
    changes = machine.run(tuner, PROBE_UPDATES + 2 * (PROBE_UPDATES + 1))
    assert [(c.was, c.threads) for c in changes] == [(1, 2)] and tuner.in_use == 2


def test_the_tuner_checks_again_after_a_while_even_when_nothing_slowed():
    machine = Machine({1: 0.010, 2: 0.020})
    tuner = Tuner([1, 2], machine.set.append, recheck=1.0)
    machine.run(tuner, 2 * (PROBE_UPDATES + 1))
    assert machine.set == [1, 2, 1]  # probed 1, then 2, chose 1
    assert machine.run(tuner, 120) == []  # past 1 s at 0.01 s an update: probed again
    assert machine.set == [1, 2, 1, 2, 1] and tuner.threads == 1  # and chose the same


def test_changing_threads_during_a_run_changes_no_number_it_computes():
    """Twelve float64 updates of a model large enough that OpenBLAS splits its products
    over threads, the count switching between 1 and 2 every few updates, against the same
    updates on one thread: the parameters equal bit for bit."""
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import ThreadpoolController
    blas = ThreadpoolController().select(user_api="blas")
    if threads.cores() < 2 or not blas.lib_controllers:
        pytest.skip("one core, or no BLAS threadpoolctl can reach")
    vocab, ids = text_corpus("It was the best of times, it was the worst of times. " * 80)
    cfg = Config(cell="gru", hidden=192, layers=2, batch_size=32, seq_len=16, lr=1e-2,
                 max_steps=12, max_seconds=0, seed=3, dropout=0.2, dropout_mode="locked",
                 weight_drop=0.2)

    def trajectory(tuner):
        spec = Spec("gru", vocab.size, cfg.hidden, cfg.layers)
        rng = np.random.default_rng(cfg.seed)
        run = training.Run(cfg, spec, vocab, init_params(spec, rng, np.float64), rng)
        streams = Streams(ids, cfg.batch_size, cfg.seq_len)
        for _ in range(cfg.max_steps):
            *_, why, _, _ = training._update(run, streams, None, False, (0.0, math.inf),
                                             lambda: (False, False, False))
            assert why is None
            if tuner is not None:
                tuner.observe(1.0)
        return run.params

    try:
        blas.limit(limits=1)
        pinned = trajectory(None)
        switching = Tuner([1, 2], lambda n: blas.limit(limits=n), recheck=0.0)
        adapted = trajectory(switching)
    finally:
        blas.limit(limits=threads.cores())
    for name in pinned:
        assert np.array_equal(pinned[name], adapted[name]), name
