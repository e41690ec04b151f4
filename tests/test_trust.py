"""Inputs that rnnlm used to accept without a word, read for ever, or answer with nonsense
(issue 19): each is now a one-line error, a warning, or the right answer."""
import csv
import math

import pytest

from rnnlm.io import checkpoint
from rnnlm import plots
from rnnlm.cli import cli
from rnnlm.config import parse_duration
from rnnlm.errors import RnnlmError

from conftest import CONFIGS
from helpers import assert_one_line_error

TINY = ["--config", str(CONFIGS / "tiny.yaml")]


def test_unreadable_devices_are_refused_at_once(runner, trained, corpus, tmp_path):
    assert_one_line_error(runner.invoke(cli, ["info", "/dev/zero"]), "not a regular file")
    assert_one_line_error(runner.invoke(cli, ["sample", "--ckpt", "/dev/zero"]),
                          "not a regular file")
    assert_one_line_error(runner.invoke(cli, ["sample", "--ckpt", str(trained), "--prime-file",
                                              "/dev/zero"]), "--prime-file /dev/zero")
    assert_one_line_error(runner.invoke(cli, ["train", "/dev/zero", *TINY, "--out",
                                              str(tmp_path / "z")]),
                          "corpus /dev/zero looks binary: NUL byte at byte 0")


@pytest.mark.parametrize("text,settings,fragment", [
    ("a" * 2000, [], "one distinct character, 'a': there is nothing to predict"),
    ("\n" * 2000, [], "one distinct character"),
    (None, ["--set", "warmup_steps=1000000000"], "warmup_steps=1000000000 is as long as the run"),
])
def test_runs_that_could_learn_nothing_are_refused(runner, corpus, tmp_path, text, settings,
                                                   fragment):
    if text is not None:
        corpus.write_text(text)
    result = runner.invoke(cli, ["train", str(corpus), *TINY, "--out", str(tmp_path / "r"),
                                 *settings])
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "r" / "last.npz").exists()


def test_the_same_file_twice_is_refused(runner, corpus, tmp_path):
    result = runner.invoke(cli, ["train", str(corpus), str(corpus), *TINY, "--out",
                                 str(tmp_path / "r")])
    assert_one_line_error(result, f"corpus {corpus} is given twice")


def test_a_number_after_a_unit_counts_in_the_next_smaller_one():
    assert parse_duration("1h30") == 5400 and parse_duration("5m30") == 330
    assert parse_duration("1h30m") == 5400 and parse_duration("90") == 90


@pytest.mark.parametrize("slip", ["30s1m", "1m1m", "1h2h", "5s30", "1m30s5", ""])
def test_a_duration_with_its_units_out_of_order_or_repeated_is_refused(slip):
    with pytest.raises(RnnlmError, match="--time"):
        parse_duration(slip)


def test_a_byte_order_mark_reads_the_same_in_eval_as_in_train(runner, trained, corpus,
                                                               tmp_path):
    marked = tmp_path / "marked.txt"
    marked.write_bytes(b"\xef\xbb\xbf" + corpus.read_bytes())
    ckpt = str(trained / "best.npz")
    plain = runner.invoke(cli, ["eval", "--ckpt", ckpt, str(corpus)])
    with_bom = runner.invoke(cli, ["eval", "--ckpt", ckpt, str(marked)])
    assert with_bom.exit_code == 0, with_bom.output
    assert with_bom.stdout.split(": ", 1)[1] == plain.stdout.split(": ", 1)[1]


def test_a_run_without_validation_samples_from_its_last_checkpoint(runner, corpus, tmp_path):
    out = tmp_path / "no val"
    done = runner.invoke(cli, ["train", str(corpus), *TINY, "--out", str(out), "--set",
                               "val_fraction=0"])
    assert done.exit_code == 0, done.output
    assert f"rnnlm sample --ckpt '{out / 'last.npz'}'" in done.stderr  # shell-quoted
    assert not (out / "best.npz").exists()
    sampled = runner.invoke(cli, ["sample", "--ckpt", str(out), "-n", "20", "--seed", "1"])
    assert sampled.exit_code == 0
    assert f"using {out / 'last.npz'} (the run has no best.npz)" in sampled.stderr
    info = runner.invoke(cli, ["info", str(out), "--json"])
    assert info.exit_code == 0 and '"step": 20' in info.stdout


def test_plot_draws_what_is_finite_and_says_when_there_is_nothing(runner, trained, tmp_path):
    pytest.importorskip("matplotlib")
    path = trained / "metrics.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1]["train_loss"], rows[1]["val_loss"] = "nan", "inf"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)
    m = plots.read_metrics(trained)
    assert m["val"][1] is None
    smoothed = plots.smooth(m["train"])
    assert all(math.isfinite(v) for v in smoothed)  # the curve goes on past the NaN
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text(path.read_text().splitlines()[0] + "\n")
    assert_one_line_error(runner.invoke(cli, ["plot", str(empty), "-o",
                                              str(tmp_path / "e.png")]), "has no rows yet")
    checkpoint.load(trained / "last.npz")


def test_the_shipped_chinese_poems_train_with_the_defaults(runner, tmp_path):
    """203 characters, too short for 32 streams of 64: the streams shrink, and it says so."""
    from conftest import ROOT
    result = runner.invoke(cli, ["train", str(ROOT / "data" / "tang-poems.txt"), "--out",
                                 str(tmp_path / "poems"), "--max-steps", "30"])
    assert result.exit_code == 0, result.output
    assert "the text is short (203 characters) for 32 streams of 64: training 2 of 64" \
        in result.stderr
    assert checkpoint.load(tmp_path / "poems" / "last.npz").meta.config["batch_size"] == 2


def test_samples_in_the_log_never_send_control_characters_to_the_terminal():
    from rnnlm.sample import printable
    assert printable("ab\x1b[31mc\x07d\ne\tf") == "ab\\x1b[31mc\\x07d\ne\tf"
    assert printable("江雪\u3000柳宗元") == "江雪\u3000柳宗元"  # a space of its script stays


def test_a_run_killed_before_its_first_checkpoint_leaves_a_directory_to_train_into(corpus,
                                                                                   tmp_path):
    import subprocess
    import sys
    import time
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rnnlm", "train", str(corpus), *TINY, "--out", str(out)]
    job = subprocess.Popen(command + ["--set", "max_steps=10000000", "--set",
                                      "eval_every=10000000", "-q"])
    deadline = time.monotonic() + 60
    while not (out / "metrics.csv").exists() or len((out / "metrics.csv").read_text()
                                                     .splitlines()) < 3:
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.05)
    job.kill()
    job.wait()
    assert not (out / "last.npz").exists()
    again = subprocess.run(command + ["-q"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # not "in use by another rnnlm"
    assert checkpoint.load(out / "last.npz").meta.step == 20


def test_a_signal_during_an_evaluation_is_acted_on_at_once(corpus, tmp_path):
    """A long sample at an evaluation (100,000 characters, one readable step at a time with
    the textbook engine: several seconds): SIGTERM saves and stops within the second, not
    at the end of it."""
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-m", "rnnlm", "train", str(corpus), *TINY,
                            "--out", str(out), "--max-steps", "1000", "--set", "hidden=256",
                            "--engine", "textbook", "--set", "eval_every=10", "--set",
                            "log_every=5", "--set", "sample_length=100000", "-q"],
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "metrics.csv").exists() or len((out / "metrics.csv").read_text()
                                                     .splitlines()) < 2:  # step 5's row
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.02)
    time.sleep(0.3)  # step 10's evaluation is drawing its sample now
    signalled = time.monotonic()
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert time.monotonic() - signalled < 2.0, err
    assert job.returncode == 128 + signal.SIGTERM, err
    assert checkpoint.load(out / "last.npz").meta.step == 10


def test_a_sample_too_long_for_a_log_is_refused(runner, corpus, tmp_path):
    assert_one_line_error(runner.invoke(cli, ["train", str(corpus), *TINY, "--out",
                                              str(tmp_path / "r"), "--set",
                                              "sample_length=1000000000"]),
                          "sample_length", "from 0 to 100000")


def test_a_new_run_whose_set_up_spends_its_budget_still_makes_a_model(runner, corpus, tmp_path):
    """Reading the corpus, loading the kernels and sizing the model count against a time
    budget; where they spend all of it, the run still makes the three updates that measure
    the machine (as every budget does), saves them and says so, instead of refusing a
    checkpoint it never had."""
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "run"),
                                 "--config", str(CONFIGS / "tiny.yaml"), "--time", "0.001s"])
    assert result.exit_code == 0, result.output
    assert "only 3 updates fitted in the time budget" in result.stderr
    assert checkpoint.load(tmp_path / "run" / "last.npz").meta.step == 3


def test_eval_of_a_model_far_worse_than_guessing_says_its_perplexity_is_infinite(runner, trained,
                                                                                 corpus):
    """A loss above 709 nats/char has a perplexity beyond any float: said as inf."""
    from rnnlm.cli import cli
    from rnnlm.io import checkpoint
    ckpt = checkpoint.load(trained / "best.npz")
    ckpt.params["out.bias"][:] = 0.0
    ckpt.params["out.bias"][ckpt.vocab.chars.index("z")] = 1e4  # sure of the rarest letter
    bad = trained.parent / "sure.npz"
    checkpoint.save(bad, ckpt)
    result = runner.invoke(cli, ["eval", "--ckpt", str(bad), str(corpus)])
    assert result.exit_code == 0, result.output
    assert "perplexity inf" in result.stdout and "Traceback" not in result.output


def test_a_reader_of_the_log_that_goes_away_does_not_end_the_run(corpus, tmp_path):
    """`rnnlm train ... 2>&1 | head -2`: once head has its lines, every write to the log
    is a broken pipe. The run goes on, quietly, to its last checkpoint."""
    import subprocess
    from helpers import rnnlm_cmd
    out = tmp_path / "run"
    job = subprocess.Popen(rnnlm_cmd("train", str(corpus), *TINY, "--max-steps", "60",
                                     "--set", "eval_every=20", "--out", str(out)),
                           stderr=subprocess.PIPE)
    job.stderr.readline()
    job.stderr.close()  # the reader goes away
    assert job.wait(timeout=120) == 0
    assert checkpoint.load(out / "last.npz").meta.step == 60
