"""The run's choice of BLAS threads (rnnlm/run/threads.py): it follows the speeds it
measures, and never changes a number the run computes."""
import csv
import math
import re
import time

import numpy as np
import pytest

from rnnlm import engines
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


def test_the_tuner_checks_again_soon_after_a_change_and_ever_later_while_nothing_changes():
    machine = Machine({1: 0.010, 2: 0.020})
    tuner = Tuner([1, 2], machine.set.append, soon=1.0, latest=3.0)
    machine.run(tuner, 1 + PROBE_UPDATES + 2)  # 1 timed fully; 2 hopeless after one update
    assert machine.set == [1, 2, 1] and tuner.threads == 1  # probed 1, then 2, chose 1
    waited, probing = [], False
    for _ in range(1000):  # 10 s at 0.01 s an update, nothing changing
        machine.run(tuner, 1)
        if tuner.queue and not probing:  # a probe begins: after how long?
            waited.append(round(tuner.since_probe, 1))
        probing = bool(tuner.queue)
    assert waited == [1.0, 2.0, 3.0, 3.0]  # soon after the change, then twice, then latest
    assert tuner.threads == 1


def test_a_probe_of_a_hopeless_count_costs_one_timed_update():
    machine = Machine({1: 0.010, 2: 0.050})  # a busy core: two threads five times as slow
    tuner = Tuner([1, 2], machine.set.append)
    on_two = 0
    for _ in range(2 * (PROBE_UPDATES + 1)):
        on_two += tuner.in_use == 2
        machine.run(tuner, 1)
    assert on_two == 2  # the update that wakes the pool, and one timed
    assert tuner.threads == 1 and tuner.measured == {1: 0.010, 2: 0.050}


def test_the_tuner_probes_at_once_when_another_program_ends():
    """One thread beside a busy core runs as fast as alone, so its speed cannot tell that
    the other program has ended: the CPU time of other programs on the run's cores can."""
    machine = Machine({1: 0.010, 2: 0.030})
    beside = [1.0]  # cores that other programs keep busy
    tuner = Tuner([1, 2], machine.set.append, soon=1000, latest=1000,
                  neighbours=lambda: beside[0])
    machine.run(tuner, PROBE_UPDATES + 3)
    assert tuner.threads == 1
    machine.run(tuner, 300)  # 3 s: the readings agree, no probe
    assert machine.set == [1, 2, 1]
    beside[0], machine.seconds = 0.0, {1: 0.010, 2: 0.006}  # the other program ends
    changes = machine.run(tuner, 100 + 2 * (PROBE_UPDATES + 1))  # within a reading's second
    assert [(c.was, c.threads) for c in changes] == [(1, 2)] and tuner.in_use == 2


def test_changing_threads_during_a_run_changes_no_number_it_computes():
    """Twelve float64 updates of a model large enough that OpenBLAS splits its products
    over threads, the count switching between 1 and 2 every few updates, against the same
    updates on one thread: the parameters equal bit for bit."""
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import ThreadpoolController
    blas = ThreadpoolController().select(user_api="blas")
    if engines.cores() < 2 or not blas.lib_controllers:
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
        switching = Tuner([1, 2], lambda n: blas.limit(limits=n), soon=0.0, latest=0.0)
        adapted = trajectory(switching)
    finally:
        blas.limit(limits=engines.cores())
    for name in pinned:
        assert np.array_equal(pinned[name], adapted[name]), name


def test_a_run_on_threads_that_slow_down_switches_and_says_so(corpus, tmp_path, runner,
                                                               monkeypatch):
    """A simulated machine where two threads are slow (each update run on two sleeps 20 ms
    more): the run probes both counts, keeps one, logs the change with the two speeds, and
    metrics.csv shows the count of every interval. A later probe (at an interval, or where
    a busy machine slows an update) tries two again for at most two updates."""
    from rnnlm.cli import cli
    from tests.conftest import CONFIGS

    count = {}
    monkeypatch.setattr(threads, "tuner", lambda: Tuner([1, 2], lambda n: count.update(now=n)))
    real = training._gradients

    def gradients(run, streams):
        if count.get("now") == 2:
            time.sleep(0.02)
        return real(run, streams)

    monkeypatch.setattr(training, "_gradients", gradients)
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(corpus), "--config", str(CONFIGS / "tiny.yaml"),
                                 "--out", str(out), "--set", "log_every=1"])
    assert result.exit_code == 0, result.output
    said = re.findall(r"threads: 2 -> 1 \(measured ([\d,]+) chars/s on 1, ([\d,]+) on 2\)",
                      result.stderr)
    assert len(said) == 1
    on_one, on_two = (int(s.replace(",", "")) for s in said[0])
    assert on_one > 2 * on_two  # 20 ms is far longer than the tiny model's update
    shown = [r["threads"] for r in csv.DictReader(open(out / "metrics.csv"))]
    probe = ["1"] * (PROBE_UPDATES + 1) + ["2"] * 2  # two: the count proved hopeless at once
    assert shown[:len(probe)] == probe
    later = "".join(shown[len(probe):])
    assert later.startswith("1") and all(len(run) <= 2 for run in re.findall("2+", later))
