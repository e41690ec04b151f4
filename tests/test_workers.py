"""Many workers, one model (rnnlm/run/workers.py): real MPI jobs, mpiexec -n 2 and -n 4
oversubscribed, and rnnlm train --workers N, which starts them itself. N workers follow
the trajectory of one; a checkpoint of N resumes with M; a signal stops them together
and saves once; a killed worker ends the job with one line, its checkpoints intact."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rnnlm.io import checkpoint
from rnnlm.cli import cli

from conftest import CONFIGS, ROOT
from helpers import assert_one_line_error, params_of

pytest.importorskip("mpi4py", reason="MPI for Python is not installed (pip install 'rnnlm[mpi]')")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec here", allow_module_level=True)
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
TINY = ["--config", str(CONFIGS / "tiny.yaml")]


def mpiexec(n, *args, **kwargs):
    extra = ["--oversubscribe"] if n > (os.cpu_count() or 1) else []
    return [MPIEXEC, "-n", str(n), "--bind-to", "none", *extra, sys.executable, *args]


def rnnlm(*args):
    return [sys.executable, "-m", "rnnlm", *args]


def run(command, cwd=ROOT, timeout=120):
    return subprocess.run(command, env=ENV, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("cell,mode", [("lstm", "step"), ("gru", "locked")])
def test_n_workers_follow_the_trajectory_of_one_in_float64(tmp_path, cell, mode):
    """With dropout a mask each step (lstm), and locked dropout with weight drop (gru)."""
    script = str(ROOT / "tests" / "mpi_trajectory.py")
    results = {}
    for n in (1, 2, 4):
        out = tmp_path / f"{n}.npz"
        command = [sys.executable, script] if n == 1 else mpiexec(n, script)
        done = run(command + [str(out), cell, mode])
        assert done.returncode == 0, done.stderr
        results[n] = np.load(out)
    one = results[1]
    for n in (2, 4):
        for name in one.files:
            np.testing.assert_allclose(results[n][name], one[name], rtol=0, atol=1e-10,
                                       err_msg=f"{name}, {n} workers")


def train_args(out, *extra):
    return ["train", "corpus.txt", *TINY, "--out", str(out), "--max-steps", "20",
            "--set", "cell=lstm", "--set", "layers=2", "--set", "dropout=0.3", "-q", *extra]


@pytest.fixture
def text(tmp_path, monkeypatch):
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 80)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_same_model(a, b, atol=1e-5):  # float32, sums in another order
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=atol, err_msg=name)


def test_mpiexec_and_workers_train_the_model_one_process_trains(text, runner):
    assert runner.invoke(cli, train_args(text / "one")).exit_code == 0
    one = checkpoint.load(text / "one" / "last.npz")
    for name, command in [("two", rnnlm(*train_args(text / "two", "--workers", "2"))),
                          ("four", mpiexec(4, "-m", "rnnlm", *train_args(text / "four")))]:
        done = run(command, cwd=text)
        assert done.returncode == 0, done.stderr
        many = checkpoint.load(text / name / "last.npz")
        assert many.meta.step == 20
        assert_same_model(one.params, many.params)
        for s, t in zip(one.state, many.state):  # every stream's state, gathered
            for a, b in zip(s, t):
                np.testing.assert_allclose(a, b, atol=1e-5)
        assert many.meta.best_val_loss == pytest.approx(one.meta.best_val_loss, abs=1e-5)
        files = sorted(p.name for p in (text / name).iterdir())  # one writer, no strays
        assert files == sorted(p.name for p in (text / "one").iterdir())
        rows = (text / name / "metrics.csv").read_text().splitlines()
        assert len(rows) == len((text / "one" / "metrics.csv").read_text().splitlines())


def test_a_run_saved_by_n_workers_resumes_with_m(text, runner):
    assert runner.invoke(cli, train_args(text / "straight")).exit_code == 0
    straight = params_of(text / "straight" / "last.npz")
    for first, then in [(2, 1), (1, 2)]:
        out = text / f"{first}-then-{then}"
        half = train_args(out, "--workers", str(first))
        half[half.index("--max-steps") + 1] = "10"
        done = run(rnnlm(*half), cwd=text) if first > 1 else None
        if done is None:
            assert runner.invoke(cli, half).exit_code == 0
        else:
            assert done.returncode == 0, done.stderr
        more = ["train", "--resume", str(out), "--max-steps", "20", "-q", "--workers", str(then)]
        done = run(rnnlm(*more), cwd=text)
        assert done.returncode == 0, done.stderr
        assert_same_model(straight, params_of(out / "last.npz"))


def test_a_time_budget_sets_one_learning_rate_for_every_worker(text):
    """A schedule over wall-clock time, where each worker's clock differs: worker 0's is
    everyone's, so the parameters never drift apart (the checksum at each evaluation)."""
    done = run(rnnlm("train", "corpus.txt", *TINY, "--out", "run", "--time", "8s", "--set",
                     "schedule=cosine", "--set", "evaluations=3", "--set", "eval_every=0",
                     "--workers", "2", "-q"),
               cwd=text)
    assert done.returncode == 0, done.stderr
    rows = (text / "run" / "metrics.csv").read_text().splitlines()
    # every evaluation passed the checksum (how many fit depends on how long MPI took to
    # start, which the budget counts)
    assert sum(1 for row in rows[1:] if row.split(",")[3]) >= 2
    lrs = [float(row.split(",")[5]) for row in rows[1:]]
    assert lrs[-1] < lrs[0] / 10  # annealed over the budget


def test_workers_size_a_run_alike(text):
    """A run that leaves its model to the rule: the workers measure the machine together
    and worker 0's speed decides for all, so they train one model (the checksum at every
    evaluation), the one the log names."""
    done = run(rnnlm("train", "corpus.txt", "--out", "run", "--time", "8s", "--set",
                     "batch_size=4", "--set", "seq_len=8", "--workers", "2"), cwd=text)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "passes" in line]
    assert len(said) == 1 and "in 8 s here: GRU 2 x " in said[0]  # worker 0 alone says it
    hidden = int(said[0].split("GRU 2 x ")[1].split(",")[0])
    assert f"hidden: {hidden}\n" in (text / "run" / "config.yaml").read_text()
    assert checkpoint.load(text / "run" / "last.npz").spec.hidden == hidden


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def start_long_run(text, out):
    command = rnnlm("train", "corpus.txt", *TINY, "--out", str(out), "--max-steps", "1000000",
                    "--set", "eval_every=100", "--workers", "2")
    job = subprocess.Popen(command, env=ENV, cwd=text, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "last.npz").exists():  # the first checkpoint: the workers are training
        assert job.poll() is None, job.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return job


def test_a_signal_stops_every_worker_at_the_same_update_and_saves_once(text):
    out = text / "run"
    job = start_long_run(text, out)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=30)
    assert job.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: the workers save at the end of this step" in err
    saved = checkpoint.load(out / "last.npz")
    assert f"stopped: saved {out / 'last.npz'}; continue with: rnnlm train --resume {out}" in err
    assert [a.shape[0] for s in saved.state for a in s] == [4]  # every stream's state
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_killed_worker_ends_the_job_with_one_line_and_harms_no_checkpoint(text):
    out = text / "run"
    job = start_long_run(text, out)
    launcher_children = children(job.pid)
    workers = children(launcher_children[0])
    assert len(workers) == 2
    killed = time.monotonic()
    os.kill(workers[1], signal.SIGKILL)
    _, err = job.communicate(timeout=30)
    assert time.monotonic() - killed < 15  # never a hang
    assert job.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: worker ") and "died (signal 9" in last, err
    assert "checkpoints on disk are intact" in last and "prterun" not in err
    checkpoint.load(out / "last.npz")  # intact
    checkpoint.load(out / "best.npz")


def test_worker_counts_the_streams_cannot_be_split_by_are_one_line(text):
    for n, fragment in [("3", "do not split evenly over 3 workers: use a multiple of 3, "
                              "such as 3 or 6"),
                        ("8", "8 workers for batch_size=4 streams")]:
        done = run(rnnlm("train", str(text / "corpus.txt"), *TINY, "--out", str(text / "r"),
                         "--workers", n))
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], \
            done.stderr
        assert not lines[0].startswith("Error: worker")  # the launcher refused: none started
    assert not (text / "r").exists()


def test_without_mpi_for_python_workers_name_the_extra(runner, text, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    assert_one_line_error(runner.invoke(cli, train_args(text / "r", "--workers", "2")),
                          "pip install 'rnnlm[mpi]'")


def processes_with(token):
    """The pids of the processes whose environment holds token (the launcher passes its
    environment to mpiexec, and mpiexec to the workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass  # gone meanwhile, or not ours to read
    return found


def test_workers_whose_launcher_is_killed_save_and_end_with_it(text):
    """SIGKILL cannot be relayed: the launcher just vanishes. Its workers (and mpiexec)
    notice, save at one update, end, and leave a run that resumes."""
    out = text / "run"
    token = f"RNNLM_TEST_TOKEN={os.getpid()}-{time.monotonic_ns()}"
    env = dict(ENV, RNNLM_TEST_TOKEN=token.split("=")[1])
    command = rnnlm("train", "corpus.txt", *TINY, "--out", str(out), "--time", "8h", "-q",
                    "--set", "eval_every=0", "--workers", "2")  # quiet: mpiexec writes nothing
    job = subprocess.Popen(command, env=env, cwd=text, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(_lines(out / "metrics.csv")) < 3:  # the workers are training
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    assert len(processes_with(token)) >= 3  # the launcher, mpiexec, two workers
    assert not (out / "last.npz").exists()  # nothing saved yet: the budget is 8 hours
    job.kill()
    job.wait()
    deadline = time.monotonic() + 20  # 5 s on a quiet machine; CI's may be busy
    while processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(token) == []
    checkpoint.load(out / "last.npz")  # saved as they ended
    resumed = run(rnnlm("train", "--resume", str(out), "--max-steps",
                        str(checkpoint.load(out / "last.npz").meta.step + 5)), cwd=text)
    assert resumed.returncode == 0, resumed.stderr


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []
