"""No sequence of train, --resume and Ctrl-C replaces a checkpoint by an older one or a file
rnnlm did not write; two trainings cannot write one directory; every input is read once;
what a checkpoint claims is checked before it is used."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rnnlm.io import checkpoint
from rnnlm.cli import cli

from conftest import CONFIGS
from helpers import assert_one_line_error, rnnlm_cmd

TINY = ["--config", str(CONFIGS / "tiny.yaml")]


def steps_of(run):
    with open(run / "metrics.csv", newline="") as f:
        return [(int(r["step"]), float(r["elapsed_s"])) for r in csv.DictReader(f)]


# --- where a run may write --------------------------------------------------------------

def test_a_directory_of_the_users_files_is_refused_and_left_alone(runner, corpus, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own settings\n")
    (mine / "metrics.csv").write_text("my,own,numbers\n")
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(mine)] + TINY)
    assert_one_line_error(result, "is not empty and is not an rnnlm run directory")
    assert (mine / "config.yaml").read_text() == "my own settings\n"
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "metrics.csv"]


def test_a_run_whose_last_checkpoint_was_removed_keeps_its_best(runner, trained, corpus):
    (trained / "last.npz").unlink()
    before = (trained / "best.npz").read_bytes()
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(trained)] + TINY)
    assert_one_line_error(result, "already holds a trained model (best.npz)",
                          f"--resume {trained}")
    assert (trained / "best.npz").read_bytes() == before


def test_an_empty_out_is_refused_and_an_empty_directory_is_used(runner, corpus, tmp_path):
    assert_one_line_error(runner.invoke(cli, ["train", str(corpus), "--out", ""] + TINY),
                          "out is an empty path")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(empty), "-q"] + TINY)
    assert result.exit_code == 0, result.output
    assert (empty / "last.npz").exists()


def test_resuming_from_an_older_checkpoint_continues_in_a_new_directory(runner, corpus,
                                                                        tmp_path):
    run = tmp_path / "run"
    settings = TINY + ["--set", "eval_every=5", "-q"]
    assert runner.invoke(cli, ["train", str(corpus), "--out", str(run), "--max-steps", "10"]
                         + settings).exit_code == 0
    at_10 = (run / "last.npz").read_bytes()
    assert runner.invoke(cli, ["train", "--resume", str(run), "--max-steps", "20"]
                         + settings).exit_code == 0
    (run / "best.npz").write_bytes(at_10)  # as when validation was best at step 10
    best = 10
    last_before = (run / "last.npz").read_bytes()
    result = runner.invoke(cli, ["train", "--resume", str(run / "best.npz"),
                                 "--max-steps", str(best + 3)] + settings)
    assert result.exit_code == 0, result.output
    derived = tmp_path / f"run-from-{best}"
    assert f"continuing in {derived}" in result.stderr
    assert (run / "last.npz").read_bytes() == last_before  # the newer checkpoint stays
    assert checkpoint.load(derived / "last.npz").meta.step == best + 3
    steps = [s for s, _ in steps_of(derived)]  # its history up to the checkpoint, then on
    assert steps == sorted(steps) and steps[-1] == best + 3 and steps[0] == 5
    # naming the old run as --out is refused: it holds the newer checkpoint
    again = runner.invoke(cli, ["train", "--resume", str(run / "best.npz"), "--out", str(run),
                                "--max-steps", "30"] + settings)
    assert_one_line_error(again, "holds a newer checkpoint (step 20)")


def test_metrics_of_a_resumed_run_go_forward_in_steps_and_time(runner, corpus, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(cli, ["train", str(corpus), "--out", str(run), "--max-steps", "10",
                               "-q"] + TINY).exit_code == 0
    with open(run / "metrics.csv", "a", newline="") as f:  # rows a killed run logged after
        csv.writer(f).writerow([15, 1, 1, "", 1, 0.01, 1, 99.0])  # its last checkpoint
    assert runner.invoke(cli, ["train", "--resume", str(run), "--max-steps", "20", "-q"]
                         ).exit_code == 0
    rows = steps_of(run)
    assert [s for s, _ in rows] == [5, 10, 15, 20]
    assert [e for _, e in rows] == sorted(e for _, e in rows)
    assert rows[2][1] < 99.0  # the stale row was replaced, not kept


# --- one writer per run directory --------------------------------------------------------

def wait_for_rows(path, rows, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) > rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never had {rows} rows")


def test_two_trainings_cannot_write_one_directory(corpus, tmp_path):
    run = tmp_path / "run"
    long = TINY + ["--set", "max_steps=1000000", "--set", "eval_every=20", "-q"]
    first = subprocess.Popen(rnnlm_cmd("train", str(corpus), "--out", str(run), *long),
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(run / "metrics.csv", 2)
        second = subprocess.run(rnnlm_cmd("train", str(corpus), "--out", str(run), *long),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"is in use by another rnnlm (process {first.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        resumed = subprocess.run(rnnlm_cmd("train", "--resume", str(run), "-q"),
                                 capture_output=True, text=True, timeout=60)
        assert resumed.returncode == 1 and f"process {first.pid}" in resumed.stderr
        assert first.poll() is None  # the first one trains on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    # the lock went with the process: the run resumes
    assert subprocess.run(rnnlm_cmd("train", "--resume", str(run), "--max-steps",
                                    str(checkpoint.load(run / "last.npz").meta.step + 2),
                                    "-q"), timeout=60).returncode == 0


def test_two_trainings_started_at_once_one_runs(corpus, tmp_path):
    run = tmp_path / "run"
    args = rnnlm_cmd("train", str(corpus), "--out", str(run), *TINY, "--max-steps", "40", "-q")
    procs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=120), p.stderr.read()) for p in procs)
    assert [code for code, _ in results] == [0, 1], results
    assert "in use by another rnnlm" in results[1][1] or "already holds" in results[1][1]
    assert checkpoint.load(run / "last.npz").meta.step == 40


def test_a_killed_writer_leaves_no_lock_behind(corpus, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(rnnlm_cmd("train", str(corpus), "--out", str(run), *TINY,
                                      "--set", "max_steps=1000000", "--set", "eval_every=5",
                                      "-q"))
    wait_for_rows(run / "metrics.csv", 3)
    proc.kill()
    proc.wait()
    step = checkpoint.load(run / "last.npz").meta.step
    done = subprocess.run(rnnlm_cmd("train", "--resume", str(run), "--max-steps", str(step + 3),
                                    "-q"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- inputs read once ----------------------------------------------------------------

def test_a_corpus_from_a_pipe_or_standard_input_is_read_once(corpus, tmp_path):
    text = corpus.read_bytes()
    for source in (["-"], ["/dev/stdin"]):
        out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        done = subprocess.run(rnnlm_cmd("train", *source, "--out", str(out), *TINY, "-q"),
                              input=text, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        assert checkpoint.load(out / "last.npz").vocab.chars == "".join(sorted(set(
            text.decode())))


def test_a_fifo_with_a_writer_is_read_once(corpus, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(f"cat {corpus} > {fifo}", shell=True)
    done = subprocess.run(rnnlm_cmd("train", str(fifo), "--out", str(tmp_path / "run"), *TINY,
                                    "-q"), capture_output=True, text=True, timeout=120)
    writer.wait(timeout=10)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("encoding,fragment", [
    ("utf-16", "cannot be decoded as utf-16"),
    ("rot13", "'rot13' is not a text encoding"),
    ("base64", "'base64' is not a text encoding"),
])
def test_encodings_that_cannot_decode_the_text_are_one_line_errors(runner, trained, corpus,
                                                                   tmp_path, encoding, fragment):
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "r"),
                                 "--encoding", encoding] + TINY)
    assert_one_line_error(result, fragment)
    result = runner.invoke(cli, ["eval", "--ckpt", str(trained / "best.npz"), str(corpus),
                                 "--encoding", encoding])
    assert_one_line_error(result, fragment)


def test_a_yaml_key_given_twice_is_an_error_naming_it(runner, corpus, tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("hidden: 16\nlr: 0.1\nhidden: 32\n")
    result = runner.invoke(cli, ["train", str(corpus), "--config", str(path)])
    assert_one_line_error(result, "twice.yaml", "key 'hidden' is given twice", "line 3")


# --- checkpoints checked before use -----------------------------------------------------

def edited(trained, tmp_path, name, **changes):
    with np.load(trained / "best.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"]))
    for key, value in changes.items():
        if key == "meta":
            meta.update(value)
        else:
            arrays[key] = value(arrays[key])
    arrays["meta"] = np.array(json.dumps(meta))
    path = tmp_path / name
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_float16_and_float64_weights_are_converted_and_said(runner, trained, tmp_path, corpus):
    half = edited(trained, tmp_path, "half.npz",
                  **{"out.weight": lambda a: a.astype(np.float16),
                     "rnn.weight_hh_l0": lambda a: a.astype(np.float64)})
    result = runner.invoke(cli, ["sample", "--ckpt", str(half), "-n", "5", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "stored as float16, float64, converted to float32" in result.stderr
    assert len(result.stdout) == 5 + 1  # 5 characters, then "\n"


def test_non_finite_weights_are_refused_naming_the_tensor(runner, trained, tmp_path, corpus):
    def poison(a):
        a = a.copy()
        a.flat[3] = np.nan
        return a

    bad = edited(trained, tmp_path, "nan.npz", **{"rnn.weight_hh_l0": poison})
    for args in (["sample", "--ckpt", str(bad)], ["eval", "--ckpt", str(bad), str(corpus)],
                 ["train", "--resume", str(bad), "--max-steps", "40"]):
        assert_one_line_error(runner.invoke(cli, args), "rnn.weight_hh_l0 holds NaN")


def test_sizes_in_meta_are_checked_against_the_arrays_before_allocating(runner, trained,
                                                                         tmp_path):
    huge = edited(trained, tmp_path, "huge.npz", meta={"config": dict(
        json.loads(str(np.load(trained / "best.npz")["meta"]))["config"], layers=10 ** 9)})
    started = time.perf_counter()
    result = runner.invoke(cli, ["sample", "--ckpt", str(huge)])
    assert_one_line_error(result, "its meta says layers=1000000000, but it holds the "
                                  "weights of 1 layer(s)")
    assert time.perf_counter() - started < 5
    wide = edited(trained, tmp_path, "wide.npz", meta={"config": dict(
        json.loads(str(np.load(trained / "best.npz")["meta"]))["config"], hidden=10 ** 9)})
    assert_one_line_error(runner.invoke(cli, ["sample", "--ckpt", str(wide)]),
                          "but its meta says a vocabulary of")


# --- memory said before it is spent ------------------------------------------------------

def test_a_run_too_large_for_the_machine_is_refused_before_allocating(runner, corpus, tmp_path,
                                                                      monkeypatch):
    from rnnlm.run import memory
    started = time.perf_counter()
    huge = runner.invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "a"),
                               "--set", "hidden=200000"] + TINY)
    assert_one_line_error(huge, "training would need about", "MB available: lower hidden",
                          "--ignore-memory")
    assert time.perf_counter() - started < 10 and not (tmp_path / "a").exists()
    monkeypatch.setattr(memory, "available", lambda: 2 ** 20)  # a machine with 1 MB free
    small = runner.invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "b")] + TINY)
    assert_one_line_error(small, "more than the 1 MB available")
    forced = runner.invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "c"), "-q",
                                 "--ignore-memory"] + TINY)
    assert forced.exit_code == 0, forced.output


def text_with_vocabulary(path, size, length, seed=0):
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, size + 1)
    ids = rng.choice(size, length, p=weights / weights.sum())
    ids[:size] = np.arange(size)  # every character occurs
    path.write_text("".join(chr(0x4E00 + i) for i in ids), encoding="utf-8")
    return path


@pytest.mark.parametrize("vocabulary,settings", [
    (65, ["--set", "hidden=256", "--set", "layers=2"]),  # the defaults' model
    (4000, ["--set", "hidden=128", "--set", "layers=1", "--set", "cell=gru"]),
])
def test_the_estimate_said_is_close_to_the_peak_measured(tmp_path, shakespeare, vocabulary,
                                                          settings):
    corpus = shakespeare if vocabulary == 65 else text_with_vocabulary(
        tmp_path / "c.txt", vocabulary, 150_000)
    args = ["rnnlm", "train", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "6",
            "--set", "eval_every=3", *settings]
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    said = next(line for line in done.stderr.splitlines() if line.startswith("memory: about"))
    estimate = float(said.split()[2].replace(",", ""))
    peak = int(re.search(r"peak-kB\s+(\d+)", done.stderr).group(1)) / 1024  # MB
    assert 0.8 * peak <= estimate <= 1.35 * peak, (said, peak)


MEASURED = """  # rnnlm, saying its own peak resident memory as it exits
import atexit, sys
atexit.register(lambda: sys.stderr.write(
    [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].replace("VmHWM:", "peak-kB")))
sys.argv = sys.argv[1:]
from rnnlm.__main__ import main
main()
"""


def test_a_large_vocabulary_for_the_corpus_is_warned_about(runner, tmp_path):
    corpus = text_with_vocabulary(tmp_path / "rare.txt", 3000, 60_000)
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "r")] + TINY)
    assert result.exit_code == 0, result.output
    assert ("warning: 3,000 distinct characters in 60,000 (seen 20 times each on average): "
            "most are too rare to learn") in result.stderr


def test_resuming_a_checkpoint_outside_any_run_never_adopts_its_folder(runner, corpus,
                                                                         tmp_path):
    """A user's folder holding their own config.yaml, metrics.csv, curves.png and two
    checkpoints copied there: --resume continues in a new run directory, and writes nothing
    of the folder's."""
    run = tmp_path / "run"
    settings = TINY + ["--set", "eval_every=5", "-q"]
    assert runner.invoke(cli, ["train", str(corpus), "--out", str(run), "--max-steps", "10"]
                         + settings).exit_code == 0
    folder = tmp_path / "u"
    folder.mkdir()
    mine = {"config.yaml": "my: settings\n", "metrics.csv": "my,numbers\n",
            "curves.png": "my picture", "last.npz": (run / "best.npz").read_bytes(),
            "model.npz": (run / "last.npz").read_bytes()}
    for name, content in mine.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    result = runner.invoke(cli, ["train", "--resume", str(folder / "model.npz"), "--max-steps",
                                 "13"] + settings)
    assert result.exit_code == 0, result.output
    new = tmp_path / "u-from-10"
    assert f"is not in an rnnlm run directory: continuing in {new}" in result.stderr
    assert checkpoint.load(new / "last.npz").meta.step == 13
    for name, content in mine.items():  # nothing of the user's written over
        raw = content if isinstance(content, bytes) else content.encode()
        assert (folder / name).read_bytes() == raw, name
    assert sorted(p.name for p in folder.iterdir()) == sorted(mine)
    refused = runner.invoke(cli, ["train", "--resume", str(folder / "model.npz"), "--out",
                                  str(folder), "--max-steps", "16"] + settings)
    assert_one_line_error(refused, "is not an rnnlm run directory, and rnnlm does not write")
