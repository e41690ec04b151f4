"""Every command through Click's runner, good input and bad, and the installed script."""
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnlm.fast import cells
from rnnlm.io import checkpoint
from rnnlm.cli import cli

from conftest import CONFIGS
from helpers import assert_one_line_error

TINY = str(CONFIGS / "tiny.yaml")


@pytest.mark.parametrize("command", [[]] + [[name] for name in cli.commands])
def test_every_command_has_help_with_an_example(runner, command):
    result = runner.invoke(cli, command + ["--help"], prog_name="rnnlm")
    assert result.exit_code == 0
    assert result.output.startswith(" ".join(["Usage: rnnlm"] + command) + " ")
    if command:
        assert "Example" in result.output


def test_version(runner):
    from rnnlm import __version__
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_train_writes_a_run_directory(trained):
    from rnnlm import plots
    assert {p.name for p in trained.iterdir()} == {"last.npz", "best.npz", "config.yaml",
                                                  "metrics.csv", ".rnnlm-run", ".rnnlm-lock"} | (
        {"curves.png"} if plots.available() else set())
    rows = list(csv.DictReader(open(trained / "metrics.csv")))
    assert list(rows[0]) == ["step", "epoch", "train_loss", "val_loss", "grad_norm", "lr",
                             "chars_per_sec", "elapsed_s", "threads"]
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert rows[1]["val_loss"] and rows[3]["val_loss"] and not rows[0]["val_loss"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert "hidden: 16" in (trained / "config.yaml").read_text()


def test_train_logs_to_stderr_only(runner, corpus, tmp_path):
    result = runner.invoke(cli, ["train", str(corpus), "--config", TINY, "--out",
                                 str(tmp_path / "r"), "--set", "sample_length=5"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "val" in result.stderr and "bits/char" in result.stderr
    assert "done: best val" in result.stderr


def test_train_without_a_corpus_uses_the_builtin_one(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["train", "--config", TINY, "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    assert "no corpus given: training on the Python standard library's source" in result.stderr
    assert (tmp_path / "runs" / "stdlib" / "last.npz").exists()
    again = runner.invoke(cli, ["train", "--config", TINY, "--max-steps", "3", "-q"])
    assert again.exit_code == 0
    assert (tmp_path / "runs" / "stdlib-2" / "last.npz").exists()  # the first run is kept


def test_train_refuses_to_overwrite_a_run(runner, trained, corpus):
    before = (trained / "last.npz").read_bytes()
    result = runner.invoke(cli, ["train", str(corpus), "--config", TINY, "--out", str(trained)])
    assert_one_line_error(result, "already holds a trained model")
    assert (trained / "last.npz").read_bytes() == before


def test_flags_override_config(runner, corpus, tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(cli, ["train", str(corpus), "--config", TINY, "--out", str(out),
                                 "--max-steps", "4", "--seed", "9", "--set", "hidden=8", "-q"])
    assert result.exit_code == 0, result.output
    text = (out / "config.yaml").read_text()
    assert "max_steps: 4" in text and "seed: 9" in text and "hidden: 8" in text


def bad_corpus(tmp_path, kind):
    path = tmp_path / "corpus.txt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" * 50)
    elif kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 50)
    elif kind == "latin-1":
        path.write_bytes("ab\n" .encode() * 500 + "café".encode("latin-1"))
    elif kind == "short":
        path.write_text("too short")
    return path


@pytest.mark.parametrize("kernel_path", ["numpy"], indirect=True)  # nothing to compile
def test_a_time_budget_ends_inside_it_evaluated_and_resume_keeps_its_clock(
        runner, corpus, tmp_path, kernel_path):
    def metrics(out):
        with open(out / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    out = tmp_path / "run"
    began = time.perf_counter()
    result = runner.invoke(cli, ["train", str(corpus), "--config", TINY, "--time", "3s",
                                 "--set", "evaluations=3", "--set", "eval_every=0", "--out", str(out), "--quiet"])
    took = time.perf_counter() - began
    assert result.exit_code == 0, result.output
    rows = metrics(out)
    assert int(rows[-1]["step"]) > 20  # --time alone lifts tiny.yaml's 20-step limit
    assert 2.0 < float(rows[-1]["elapsed_s"]) <= 3.0
    assert took < 3.0 + 1.0  # the command's own wall time, with slack for a loaded machine
    evaluated = [row for row in rows if row["val_loss"]]
    assert len(evaluated) == 3 and evaluated[-1] is rows[-1]  # spaced in it, the last at the end
    for name in ("last.npz", "best.npz"):  # the final evaluation's checkpoint, inside the budget
        saved = checkpoint.load(out / name).meta
        assert saved.step == int(evaluated[-1]["step"]) or name == "best.npz"
        assert saved.elapsed <= 3.0

    again = runner.invoke(cli, ["train", "--resume", str(out), "--time", "3s", "--quiet"])
    assert_one_line_error(again, "budget: nothing to do (raise --time)")
    longer = runner.invoke(cli, ["train", "--resume", str(out), "--time", "5s", "--quiet"])
    assert longer.exit_code == 0, longer.output
    resumed = metrics(out)[len(rows):]
    assert int(resumed[0]["step"]) > int(rows[-1]["step"])
    assert float(rows[-1]["elapsed_s"]) <= float(resumed[0]["elapsed_s"])
    assert 4.0 < float(resumed[-1]["elapsed_s"]) <= 5.0  # the 3 s spent count


@pytest.mark.parametrize("kind,fragments", [
    ("missing", ["corpus.txt does not exist"]),
    ("empty", ["corpus.txt is empty"]),
    ("directory", ["corpus.txt holds no text"]),  # an empty directory
    ("binary", ["corpus.txt looks binary: NUL character at character 7"]),
    ("png", ["corpus.txt is not valid utf-8: undecodable byte at offset 0", "binary"]),
    ("latin-1", ["not valid utf-8", "offset 1503"]),
    ("short", ["too short: 9 characters", "need at least 40"]),
])
def test_train_bad_corpus(runner, tmp_path, kind, fragments):
    path = bad_corpus(tmp_path, kind)
    result = runner.invoke(cli, ["train", str(path), "--config", TINY,
                                 "--out", str(tmp_path / "r")])
    assert_one_line_error(result, *fragments)


@pytest.mark.parametrize("args,fragment", [
    (["--set", "hidden=0"], "hidden must be >= 1, got 0"),
    (["--set", "lr=-1"], "lr must be > 0"),
    (["--set", "val_fraction=1"], "val_fraction must be in [0, 1)"),
    (["--set", "seq_len=0"], "seq_len must be >= 1"),
    (["--set", "nope=1"], "unknown config key 'nope'"),
    (["--set", "hidden=big"], "hidden must be an integer"),
    (["--max-steps", "-1"], "max_steps must be >= 0"),
    (["--max-steps", "0"], "a run needs an end: max_steps or max_seconds"),
    (["--time", "5 minutes"], "--time expects a duration such as 90s, 5m or 1h30m"),
    (["--config", "missing.yaml"], "config file missing.yaml does not exist"),
])
def test_train_bad_settings(runner, corpus, tmp_path, args, fragment):
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "r")] + args)
    assert_one_line_error(result, fragment)


def test_train_invalid_yaml(runner, corpus, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cell: rnn\nhidden: [1, 2\n")
    result = runner.invoke(cli, ["train", str(corpus), "--config", str(bad)])
    assert_one_line_error(result, "bad.yaml: invalid YAML at line")


def test_train_unwritable_output(runner, corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(cli, ["train", str(corpus), "--config", TINY,
                                 "--out", str(blocker / "run")])
    assert_one_line_error(result, "cannot write to output directory")


def test_sample_prints_prime_then_generated_text(runner, trained):
    args = ["sample", "--ckpt", str(trained / "best.npz"), "--prime", "the ", "-n", "40",
            "--seed", "3"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("the ")
    assert len(result.stdout) == len("the ") + 40 + 1  # and a final newline
    assert result.stderr == ""
    assert runner.invoke(cli, args).stdout == result.stdout
    assert runner.invoke(cli, args[:-1] + ["4"]).stdout != result.stdout


def test_sample_options(runner, trained):
    ckpt = str(trained / "last.npz")
    a = runner.invoke(cli, ["sample", "--ckpt", ckpt, "--argmax", "-n", "30", "--seed", "1"])
    b = runner.invoke(cli, ["sample", "--ckpt", ckpt, "--argmax", "-n", "30", "--seed", "2"])
    assert a.exit_code == 0 and a.stdout == b.stdout
    c = runner.invoke(cli, ["sample", "--ckpt", ckpt, "--top-k", "1", "-n", "30", "--seed", "5"])
    assert c.stdout == a.stdout  # top-1 is greedy
    d = runner.invoke(cli, ["sample", "--ckpt", ckpt, "-n", "0", "--prime", "fox"])
    assert d.stdout == "fox\n"


@pytest.mark.parametrize("args,fragments", [
    (["--prime", "the ZQ"], ["2 character(s) not in the model's vocabulary", "'Q'", "'Z'"]),
    (["--temperature", "0"], ["temperature must be a number > 0, got 0"]),
    (["--temperature", "-1"], ["temperature must be a number > 0, got -1"]),
])
def test_sample_bad_input(runner, trained, args, fragments):
    result = runner.invoke(cli, ["sample", "--ckpt", str(trained / "best.npz")] + args)
    assert_one_line_error(result, *fragments)
    assert result.stdout == ""


def test_sample_bad_checkpoints(runner, tmp_path):
    missing = runner.invoke(cli, ["sample", "--ckpt", str(tmp_path / "nope.npz")])
    assert_one_line_error(missing, "nope.npz does not exist")
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    assert_one_line_error(runner.invoke(cli, ["sample", "--ckpt", str(junk)]), "not an .npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"a": 1}], dtype=object))
    assert_one_line_error(runner.invoke(cli, ["sample", "--ckpt", str(pickled)]),
                          "pickled Python objects; refused")


def test_eval(runner, trained, corpus, tmp_path):
    result = runner.invoke(cli, ["eval", "--ckpt", str(trained / "best.npz"), str(corpus)])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    parts = line.split(", ")
    nats, bits_, ppl = (float(p.split()[0 if i < 2 else 1])
                        for i, p in enumerate(parts[1:4]))
    assert bits_ == pytest.approx(nats / np.log(2), abs=1e-3)
    assert ppl == pytest.approx(np.exp(nats), rel=1e-3)
    assert "1,800 characters" in line

    other = tmp_path / "other.txt"
    other.write_text("the quick brown fox: 42\n")
    bad = runner.invoke(cli, ["eval", "--ckpt", str(trained / "best.npz"), str(other)])
    assert_one_line_error(bad, "3 character(s) not in the model's vocabulary: '2' '4' ':'")
    skip = runner.invoke(cli, ["eval", "--ckpt", str(trained / "best.npz"), str(other),
                               "--skip-unknown"])
    assert skip.exit_code == 0
    assert "3 unknown characters skipped" in skip.stdout


def test_eval_keeps_context_in_every_stream(runner, trained, corpus):
    """--batch-size 100000 on 1,800 characters would score each in a stream of its own,
    without context: the streams are capped so that each has 256 characters or more."""
    ckpt = str(trained / "best.npz")
    huge = runner.invoke(cli, ["eval", "--ckpt", ckpt, str(corpus), "--batch-size", "100000"])
    seven = runner.invoke(cli, ["eval", "--ckpt", ckpt, str(corpus), "--batch-size", "7"])
    assert "(read in 7 streams: each then has 256 characters of context or more)" in huge.stdout
    assert huge.stdout.split(" (read")[0] == seven.stdout.strip()


def test_eval_bad_text(runner, trained, tmp_path):
    result = runner.invoke(cli, ["eval", "--ckpt", str(trained / "best.npz"),
                                 str(tmp_path / "none.txt")])
    assert_one_line_error(result, "none.txt does not exist")


def test_gradcheck_command(runner):
    result = runner.invoke(cli, ["gradcheck", "--cell", "gru", "--layers", "2"])
    assert result.exit_code == 0, result.output
    for case in ("gru L2 ", "gru L2 dropout", "gru L2 locked", "gru L2 weight drop"):
        assert case + " " in result.stdout  # every regulariser
    assert "rnn.weight_hh_l1" in result.stdout
    assert "40 of 40 tensors within tolerance 1e-06" in result.stdout


def test_gradcheck_command_fails_on_a_wrong_backward(runner, monkeypatch):
    right = cells.LSTM.backward

    def wrong(t, buf, w, dstate, dgx, dgh, dprev):
        right(t, buf, w, dstate, dgx, dgh, dprev)
        np.multiply(dprev[1], 0.5, out=dprev[1])  # a wrong gradient through the cell state

    monkeypatch.setattr(cells.LSTM, "backward", staticmethod(wrong))
    result = runner.invoke(cli, ["gradcheck", "--cell", "lstm", "--layers", "1",
                                 "--regulariser", "none"])
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "FAILED" in result.stdout


def test_installed_console_script_end_to_end(corpus, tmp_path):
    exe = Path(sys.executable).with_name("rnnlm")
    exe = str(exe) if exe.exists() else shutil.which("rnnlm")
    if exe is None:
        pytest.skip("the rnnlm console script is not installed")
    out = tmp_path / "run"
    subprocess.run([exe, "train", str(corpus), "--config", TINY, "--out", str(out), "-q"],
                   check=True, timeout=120)
    sampled = subprocess.run([exe, "sample", "--ckpt", str(out / "best.npz"), "-n", "25",
                              "--prime", "the"], check=True, capture_output=True, text=True)
    assert sampled.stdout.startswith("the") and len(sampled.stdout) == 3 + 25 + 1
    evaluated = subprocess.run([exe, "eval", "--ckpt", str(out / "best.npz"), str(corpus)],
                               check=True, capture_output=True, text=True)
    assert "nats/char" in evaluated.stdout
    module = subprocess.run([sys.executable, "-m", "rnnlm", "--version"], check=True,
                            capture_output=True, text=True)
    assert "rnnlm" in module.stdout
    failed = subprocess.run([exe, "sample", "--ckpt", str(tmp_path / "x.npz")],
                            capture_output=True, text=True)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr


def damaged_checkpoints(trained, tmp_path):
    """(name, path) of checkpoints damaged the ways users and disks damage them."""
    import io
    import json
    import zipfile

    good = trained / "best.npz"
    raw = good.read_bytes()
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def write(name, **changes):
        a = dict(arrays, **changes)
        for k in [k for k, v in changes.items() if v is None]:
            del a[k]
        path = tmp_path / name
        with open(path, "wb") as f:
            np.savez(f, **a)
        return path

    meta = json.loads(str(arrays["meta"]))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (2 ** 40,)})
    absurd = tmp_path / "absurd.npz"
    with zipfile.ZipFile(absurd, "w") as z:
        z.writestr("out.bias.npy", header.getvalue())
    return [
        ("truncated", truncated),
        ("missing-key", write("missing-key.npz", **{"out.bias": None})),
        ("wrong-shape", write("wrong-shape.npz", **{"rnn.weight_hh_l0": np.zeros((3, 3), np.float32)})),
        ("newer", write("newer.npz", meta=np.array(json.dumps(dict(meta, version=2))))),
        ("absurd", absurd),
    ]


@pytest.mark.parametrize("command", ["sample", "eval", "resume"])
def test_damaged_checkpoints_give_one_line_errors(runner, trained, corpus, tmp_path, command):
    for kind, path in damaged_checkpoints(trained, tmp_path):
        args = {"sample": ["sample", "--ckpt", str(path)],
                "eval": ["eval", "--ckpt", str(path), str(corpus)],
                "resume": ["train", "--resume", str(path), "--max-steps", "40"]}[command]
        result = runner.invoke(cli, args)
        assert_one_line_error(result, path.name)


def run_python(code, timeout=60):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)


def test_threads_is_set_before_numpy_loads():
    pytest.importorskip("threadpoolctl")
    done = run_python(
        "import sys\n"
        "from rnnlm.__main__ import apply_threads\n"
        "apply_threads(['train', 'c.txt', '--threads', '1'])\n"
        "import numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1]"


def test_threads_on_the_commands(corpus, tmp_path, runner):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "rnnlm", "train", str(corpus), "--config", TINY,
                           "--out", str(out), "--threads", "1", "-q"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for args in (["sample", "--ckpt", str(out / "last.npz"), "-n", "5"],
                 ["eval", "--ckpt", str(out / "last.npz"), str(corpus)]):
        assert runner.invoke(cli, args + ["--threads", "2"]).exit_code == 0  # in-process
    refused = runner.invoke(cli, ["sample", "--ckpt", str(out / "last.npz"), "--threads", "0"])
    assert refused.exit_code == 2 and "'--threads': 0 is not in the range" in refused.output


def test_ctrl_c_while_starting_up_exits_130_quietly():
    done = run_python(
        "import builtins, os, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal: a\n"
        "# process started in the background (`pytest &`) inherits Ctrl-C ignored\n"
        "real = builtins.__import__\n"
        "def importing(name, *args, **kwargs):\n"
        "    if name == 'numpy':  # Ctrl-C arrives while the command line loads NumPy\n"
        "        builtins.__import__ = real\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = importing\n"
        "sys.argv = ['rnnlm', '--version']\n"
        "from rnnlm.__main__ import main\n"
        "main()")
    assert done.returncode == 130
    assert done.stdout == "" and done.stderr == ""


@pytest.mark.parametrize("args", [["train", ""], ["config", ""], ["gradflow", ""],
                                  ["sample", "--ckpt", ""], ["eval", "", "--ckpt", "x.npz"],
                                  ["train", "--resume", ""]])
def test_an_empty_path_is_refused_never_read_as_the_current_directory(runner, args):
    assert_one_line_error(runner.invoke(cli, args), "is an empty path")
