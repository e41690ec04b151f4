"""Never lose a model: exact resume, crash safety, interrupts, divergence, a full disk."""
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnlm.io import checkpoint
from rnnlm.run import training as train_mod
from rnnlm.fast import engine as fast_engine
from rnnlm.cli import cli

from conftest import CONFIGS, read_corpus
from helpers import rnnlm_cmd

TINY = str(CONFIGS / "tiny.yaml")


@pytest.mark.parametrize("cell,layers,regularisers", [
    ("rnn", 1, ()), ("lstm", 2, ()), ("gru", 1, ()),
    ("gru", 2, ("dropout_mode=locked", "weight_drop=0.3")),
    ("lstm", 1, ("dropout_mode=locked", "weight_drop=0.3"))])
def test_resume_is_bit_identical_to_an_uninterrupted_run(runner, corpus, tmp_path, cell, layers,
                                                         regularisers, kernel_path):
    common = ["--config", TINY, "--set", f"cell={cell}", "--set", f"layers={layers}",
              "--set", "dropout=0.2", "--set", "batch_size=16", "-q"]
    for setting in regularisers:  # locked dropout and weight drop draw from the run's RNG too
        common += ["--set", setting]
    whole, split = tmp_path / "whole", tmp_path / "split"
    # 40 updates pass the end of the 1,620-character training text three times (16 streams
    # of 11 windows a pass; the split is in the second): streams wrap, each pass cuts its
    # windows elsewhere, state resets and the RNG draws dropout masks throughout
    assert runner.invoke(cli, ["train", str(corpus), "--out", str(whole), "--max-steps", "40"]
                         + common).exit_code == 0
    assert runner.invoke(cli, ["train", str(corpus), "--out", str(split), "--max-steps", "17"]
                         + common).exit_code == 0
    resumed = runner.invoke(cli, ["train", "--resume", str(split), "--max-steps", "40"] + common)
    assert resumed.exit_code == 0, resumed.output
    a, b = checkpoint.load(whole / "last.npz"), checkpoint.load(split / "last.npz")
    assert a.meta.step == b.meta.step == 40
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
    for name in a.slots:
        assert np.array_equal(a.slots[name], b.slots[name]), name
    for sa, sb in zip(a.state, b.state):
        for u, v in zip(sa, sb):
            assert np.array_equal(u, v)
    assert a.meta.rng == b.meta.rng
    steps = [int(line.split(",")[0]) for line in (split / "metrics.csv").read_text().split()[1:]]
    assert steps == sorted(steps) and steps[-1] == 40  # metrics.csv appended, not restarted


def test_resume_errors(runner, trained, corpus, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("completely different text, with new letters: XYZ 123\n" * 40)
    cases = [
        (["--resume", str(trained), str(other)], "corpus.txt is no longer in the corpus"),
        (["--resume", str(trained), "--set", "hidden=32"],
         "cannot resume with hidden=32: the checkpoint was trained with hidden=16"),
        (["--resume", str(trained), "--set", "cell=gru"], "cannot resume with cell='gru'"),
        (["--resume", str(trained)], "is at step 20, and max_steps is 20: nothing to do"),
        (["--resume", str(tmp_path / "nowhere")], "does not exist"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, ["train"] + args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output, result.stderr


def test_resume_finds_the_corpus_and_keeps_the_config(runner, trained):
    result = runner.invoke(cli, ["train", "--resume", str(trained / "last.npz"),
                                 "--max-steps", "25", "--set", "lr=0.005"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 20" in result.stderr
    ckpt = checkpoint.load(trained / "last.npz")
    assert ckpt.meta.step == 25
    assert ckpt.meta.config["hidden"] == 16 and ckpt.meta.config["lr"] == 0.005


KILLPOINT = str(Path(__file__).with_name("killpoint.py"))
# (phase, occurrence): between two updates, and every moment of a save, at the first and at
# later saves of a run; each run resumes from what the previous kill left.
KILLS = [("update", 7), ("open", 1), ("written", 2), ("rename", 1), ("renamed", 2),
         ("open", 3), ("written", 1), ("rename", 3), ("renamed", 1), ("update", 2)]


def test_sigkill_inside_a_save_never_corrupts_a_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    settings = ["--config", TINY, "--set", "hidden=64", "--set", "eval_every=3",
                "--set", "max_steps=100000", "-q"]
    steps_seen = []
    for phase, n in KILLS:
        resume = (out / "last.npz").exists()
        args = ["train", "--resume", str(out)] if resume else ["train", str(corpus), "--out", str(out)]
        proc = subprocess.Popen([sys.executable, KILLPOINT, phase, str(n), *args, *settings],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = proc.stderr.readline()  # the child stops where it says, until killed
        assert line == f"AT {phase} {n}\n", line + proc.stderr.read()
        proc.kill()
        assert "Traceback" not in proc.communicate()[1]
        if phase in ("open", "written", "rename"):  # killed inside a save: a temporary is left
            assert list(out.glob(".*.tmp"))
        ckpt = checkpoint.load(out / "last.npz")  # must load, whatever the moment
        assert all(np.isfinite(p).all() for p in ckpt.params.values())
        steps_seen.append(ckpt.meta.step)
        if (out / "best.npz").exists():
            checkpoint.load(out / "best.npz")
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]
    subprocess.run(rnnlm_cmd("train", "--resume", str(out), "--max-steps",
                             str(steps_seen[-1] + 1), "-q"), check=True)
    assert not list(out.glob(".*.tmp"))  # the next run cleans up what a kill left


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_saves_and_exits(corpus, tmp_path, signum, code):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        rnnlm_cmd("train", str(corpus), "--out", str(out), "--config", TINY,
                  "--set", "max_steps=1000000", "--set", "eval_every=1000000"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline and len((out / "metrics.csv").read_text().splitlines()
                                         if (out / "metrics.csv").exists() else []) < 3:
        time.sleep(0.1)  # wait until it has logged a few rows: it is training
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"saved {out / 'last.npz'}" in err and "rnnlm train --resume" in err
    assert checkpoint.load(out / "last.npz").meta.step >= 10


def test_divergence_stops_without_saving_nan(runner, corpus, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(out), "--config", TINY,
                                 "--set", "optimizer=sgd", "--set", "lr=1e38",
                                 "--set", "clip_norm=0", "--set", "eval_every=1",
                                 "--set", "max_steps=200"])
    assert result.exit_code == 1
    assert "training diverged" in result.stderr and "Try a lower lr" in result.stderr
    assert "Traceback" not in result.output and "Warning" not in result.output
    for name in ("last.npz", "best.npz"):
        if (out / name).exists():
            ckpt = checkpoint.load(out / name)
            assert all(np.isfinite(p).all() for p in ckpt.params.values())


def test_rollback_reloads_the_last_checkpoint_and_halves_the_rate(corpus, tmp_path, monkeypatch):
    from rnnlm import config
    from rnnlm.io import data

    real = fast_engine.loss_and_grads
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss, grads, state = real(*args, **kwargs)
        return (float("nan") if calls["n"] == 13 else loss), grads, state

    monkeypatch.setattr(fast_engine, "loss_and_grads", flaky)
    cfg = config.build(file=TINY, assignments=["on_divergence=rollback", "max_steps=20"])
    vocab, ids = read_corpus(corpus)
    events = list(train_mod.train(cfg, vocab, ids, tmp_path / "run"))
    rolled = [e for e in events if isinstance(e, train_mod.RolledBack)]
    assert len(rolled) == 1 and rolled[0].step == 13 and rolled[0].to_step == 10
    assert rolled[0].lr_scale == 0.5
    final = checkpoint.load(tmp_path / "run" / "last.npz")
    assert final.meta.step == 20 and final.meta.lr_scale == 0.5


def test_full_disk_keeps_the_previous_checkpoint(trained):
    before = (trained / "last.npz").read_bytes()

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    done = subprocess.run(rnnlm_cmd("train", "--resume", str(trained), "--max-steps", "30",
                                    "-q"), preexec_fn=small_files, capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot write checkpoint" in done.stderr and "File too large" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (trained / "last.npz").read_bytes() == before
    assert not list(trained.glob(".*.tmp"))


def test_sample_into_a_closed_pipe(trained):
    proc = subprocess.run(f"{sys.executable} -m rnnlm sample --ckpt {trained / 'best.npz'} "
                          f"-n 100000 | head -c 10", shell=True, capture_output=True, text=True)
    assert len(proc.stdout) == 10 and "Traceback" not in proc.stderr, proc.stderr


def test_a_run_trained_by_one_engine_resumes_evaluates_and_samples_with_the_other(
        runner, corpus, tmp_path):
    out = tmp_path / "run"
    common = ["--config", TINY, "--set", "cell=lstm", "--set", "layers=2", "--set",
              "dropout=0.2", "-q"]
    trained = runner.invoke(cli, ["train", str(corpus), "--out", str(out), "--max-steps", "10",
                                  "--engine", "textbook"] + common)
    assert trained.exit_code == 0, trained.output
    resumed = runner.invoke(cli, ["train", "--resume", str(out), "--max-steps", "20",
                                  "--engine", "fast"] + common)
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load(out / "last.npz").meta.step == 20
    evals = [runner.invoke(cli, ["eval", "--ckpt", str(out / "last.npz"), str(corpus),
                                 "--engine", e]).stdout for e in ("fast", "textbook")]
    nats = [float(line.split(", ")[1].split()[0]) for line in evals]
    assert nats[0] == pytest.approx(nats[1], abs=1e-4)
    assert nats[0] < np.log(checkpoint.load(out / "last.npz").spec.vocab_size)  # below uniform
    samples = [runner.invoke(cli, ["sample", "--ckpt", str(out / "last.npz"), "-n", "60",
                                   "--seed", "3", "--engine", e]).stdout for e in ("fast", "textbook")]
    assert samples[0] == samples[1] and len(samples[0]) == 61


def test_a_loss_far_above_uniform_guessing_is_divergence_and_never_saved(runner, corpus,
                                                                          tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(out), "--config", TINY,
                                 "--set", "lr=1e3", "--set", "clip_norm=0"])
    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "diverged at step 10: the validation loss is" in message
    assert "far above uniform guessing" in message and "no checkpoint had been saved" in message
    assert not (out / "best.npz").exists() and not (out / "last.npz").exists()


def test_divergence_by_level_rolls_back_and_halves_the_rate_when_asked(runner, trained):
    best_before = (trained / "best.npz").read_bytes()
    result = runner.invoke(cli, ["train", "--resume", str(trained), "--max-steps", "200",
                                 "--set", "lr=1e3", "--set", "clip_norm=0",
                                 "--set", "on_divergence=rollback"])
    assert result.exit_code == 1
    rolled = [line for line in result.stderr.splitlines() if "rolled back to step 20" in line]
    assert len(rolled) == train_mod.MAX_ROLLBACKS
    assert "learning rate now x0.03125" in rolled[-1]
    assert "far above uniform guessing" in result.stderr.strip().splitlines()[-1]
    assert (trained / "best.npz").read_bytes() == best_before


def test_an_edit_of_the_runs_config_is_never_overwritten_in_silence(runner, trained):
    """A run's config.yaml reads as a --config, and a user edits it; resuming rewrites it
    with the settings the run keeps. An edit that would be lost is refused in one line that
    says how to apply it; applied with --set, the file agrees with the run again."""
    from helpers import assert_one_line_error
    config_file = trained / "config.yaml"
    original = config_file.read_text()
    edited = original.replace("lr: ", "lr: 0.5 #", 1)
    config_file.write_text(edited)
    refused = runner.invoke(cli, ["train", "--resume", str(trained), "--max-steps", "30"])
    assert_one_line_error(refused, "config.yaml was edited", "lr: 0.5", "--set lr=0.5")
    assert config_file.read_text() == edited
    applied = runner.invoke(cli, ["train", "--resume", str(trained), "--max-steps", "30",
                                  "--set", "lr=0.5", "-q"])
    assert applied.exit_code == 0, applied.output
    assert checkpoint.load(trained / "last.npz").meta.config["lr"] == 0.5
    config_file.write_text(config_file.read_text().replace("hidden: ", "hidden: 99 #", 1))
    frozen = runner.invoke(cli, ["train", "--resume", str(trained), "--max-steps", "40"])
    assert_one_line_error(frozen, "hidden: 99", "cannot change when a run resumes")


def test_a_resume_says_what_its_schedule_will_do(runner, corpus, tmp_path):
    """A cosine schedule follows the run's end; a resume that moves the end moves it too:
    the rate can jump back up, or sit at its floor. Either way the log says so."""
    out = tmp_path / "run"
    first = runner.invoke(cli, ["train", str(corpus), "--out", str(out), "--config", TINY,
                                "--set", "schedule=cosine", "--max-steps", "40", "-q"])
    assert first.exit_code == 0, first.output
    near_end = runner.invoke(cli, ["train", "--resume", str(out), "--max-steps", "41"])
    assert near_end.exit_code == 0, near_end.output
    line = next(l for l in near_end.stderr.splitlines() if "schedule:" in l)
    assert line.startswith("warning: schedule: cosine") and "barely moves" in line
    further = runner.invoke(cli, ["train", "--resume", str(out), "--max-steps", "100"])
    line = next(l for l in further.stderr.splitlines() if "schedule:" in l)
    assert line.startswith("schedule: cosine, the rate") and "41% of the run done" in line
    assert "where it had reached" in line
