"""Many workers, one model: data-parallel truncated BPTT over MPI. The one module that
imports mpi4py (the extra rnnlm[mpi]).

Worker r of N owns a contiguous block of the B streams, and their carried state. Each
worker computes the loss and gradients of its own streams, scaled by its share of them
(B_r / B), so that one Allreduce (a sum) of one flat buffer per update gives every
worker the global mean's gradient. The buffer carries the decisions too (stop for a
signal, an evaluation due, the end of a time budget), so that every worker acts on the
same ones at the same update without a second round trip. Clipping and the optimizer then
run identically everywhere, so parameters never travel after the start; a checksum at
each evaluation proves that they have not drifted. Worker 0 alone writes (checkpoints,
metrics, the progress bar).

With one worker (a process that MPI did not start) the group is `Solo`, where every
collective operation is the identity: the training loop reads the same either way.
"""
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.run.threads import THREAD_VARIABLES

# Set by the launchers in each process they start: Open MPI, MPICH's Hydra (and Intel
# MPI), Slurm's srun.
LAUNCH_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS")
EXTRA = "the workers need MPI for Python: pip install 'rnnlm[mpi]'"


def launched_size():
    """How many processes an MPI launcher started this one among (1 when none did)."""
    for name in LAUNCH_SIZES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


def rows(total, rank, size):
    """The contiguous block of `total` streams that worker `rank` of `size` owns."""
    bounds = np.linspace(0, total, size + 1).round().astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


class Solo:
    """One process: the identity of every collective operation."""

    rank, size = 0, 1

    def allreduce(self, buffer):
        """Sum buffer (a NumPy array) over the workers, in place; returns it."""
        return buffer

    def allgather(self, value):
        return [value]

    def gather(self, value):
        """[every worker's value] at worker 0, None at the others."""
        return [value]

    def bcast(self, value):
        """Worker 0's value, everywhere."""
        return value

    def abort(self, code=1):
        raise SystemExit(code)


class Group(Solo):
    """The workers of an MPI job (MPI.COMM_WORLD)."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError:
            raise RnnlmError(f"this process was started by an MPI launcher, but {EXTRA}") from None
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def allreduce(self, buffer):
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return buffer

    def allgather(self, value):
        return self.comm.allgather(value)

    def gather(self, value):
        return self.comm.gather(value, root=0)

    def bcast(self, value):
        return self.comm.bcast(value, root=0)

    def abort(self, code=1):
        self.comm.Abort(code)


_group = None


def current():
    """The group made so far, or None (the error path asks without making one)."""
    return _group


def group():
    """This process's group of workers: MPI's where a launcher started several, else Solo.
    Workers that `rnnlm train --workers N` started end with it (tie_to_launcher)."""
    global _group
    if _group is None:
        _group = Group() if launched_size() > 1 else Solo()
        if _group.size > 1:
            tie_to_launcher()
    return _group


def decided(compute):
    """compute() at worker 0 alone, and its result (or its RnnlmError) at every worker:
    for what one process must decide, such as which directory the run writes into."""
    workers = group()
    if workers.size == 1:
        return compute()
    outcome = None
    if workers.rank == 0:
        try:
            outcome = ("ok", compute())
        except RnnlmError as e:
            outcome = ("error", str(e))
    kind, value = workers.bcast(outcome)
    if kind == "error":
        raise RnnlmError(value)
    return value


class Reduction:
    """What every worker adds to an update, summed in one Allreduce of one flat buffer:
    the loss and gradients of its streams, each scaled by its share of the streams
    (share = B_r / B) so that the sum is the global mean's; flags any worker raised
    (decisions: any worker's is everyone's); and numbers worker 0 alone gives (its clock),
    so that every worker acts on the same ones at the same update without a second round
    trip. With one worker it hands everything back as it is."""

    def __init__(self, group, share):
        self.group, self.share, self.flat = group, share, None

    def __call__(self, loss, grads, flags, numbers):
        """(the loss, the gradients (views of the buffer, until the next call), the flags,
        worker 0's numbers), summed over the workers."""
        if self.group.size == 1:
            return loss, grads, flags, numbers
        n = sum(g.size for g in grads.values())
        extra = 1 + len(flags) + len(numbers)
        if self.flat is None or self.flat.size != n + extra:
            self.flat = np.empty(n + extra, next(iter(grads.values())).dtype)
        flat, offset, views = self.flat, 0, {}
        for name, g in grads.items():
            views[name] = flat[offset:offset + g.size].reshape(g.shape)
            np.multiply(g, self.share, out=views[name])
            offset += g.size
        flat[offset] = loss * self.share
        flat[offset + 1:offset + 1 + len(flags)] = [float(bool(f)) for f in flags]
        flat[offset + 1 + len(flags):] = numbers if self.group.rank == 0 else 0.0
        self.group.allreduce(flat)
        raised = tuple(bool(v > 0) for v in flat[offset + 1:offset + 1 + len(flags)])
        return (float(flat[offset]), views, raised,
                tuple(float(v) for v in flat[offset + 1 + len(flags):]))


WORKER_ERROR = r"Error: worker (\d+) of \d+: (.*)"  # a worker's last line, as error_line says it


def error_line(group, message):
    """The line a worker that fails says its error in; run_locally reads it back."""
    return f"Error: worker {group.rank} of {group.size}: {message}"


def check_streams(batch, size):
    """RnnlmError unless batch streams split evenly over `size` workers."""
    if size <= 1:
        return
    if size > batch:
        raise RnnlmError(f"{size} workers for batch_size={batch} streams: each worker needs a "
                         f"stream at least; use at most {batch} workers, or raise batch_size")
    if batch % size:
        fits = [b for b in range(size, 4 * batch + 1, size)]
        near = sorted(fits, key=lambda b: abs(b - batch))[:3]
        raise RnnlmError(f"batch_size={batch} streams do not split evenly over {size} workers: "
                         f"use a multiple of {size}, such as "
                         + " or ".join(str(b) for b in sorted(near)))


# --- Starting the workers on this machine (rnnlm train --workers N) ----------------------

def mpiexec():
    """The MPI launcher to start local workers with: the one beside this Python (the
    openmpi or mpich package of rnnlm[mpi] puts it there), else the system's. RnnlmError,
    naming the extra, where MPI for Python or a launcher is missing."""
    try:
        import mpi4py  # noqa: F401  (imported here only to know that the workers can)
    except ImportError:
        raise RnnlmError(f"--workers: {EXTRA}") from None
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if found is None:
        raise RnnlmError(f"--workers: no mpiexec found; {EXTRA}")
    return found


def local_command(n, argv):
    """(command, environment) that starts n workers of `rnnlm argv` on this machine, each
    with 1 BLAS thread, or the cores shared out where there are more of them (unless
    --threads says otherwise)."""
    launcher = mpiexec()
    command = [launcher, "-n", str(n)]
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True).stdout
    env = dict(os.environ)
    if "Open MPI" in version:
        # Every worker where the OS puts it (Open MPI binds to cores otherwise), and more
        # workers than cores where asked; as root only because the user runs rnnlm so.
        command += ["--bind-to", "none"] + (["--oversubscribe"] if n > os.cpu_count() else [])
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "--threads" not in " ".join(argv):
        threads = str(max(1, (os.cpu_count() or 1) // n))
        env.update({name: threads for name in THREAD_VARIABLES})
    return command + [sys.executable, "-m", "rnnlm", *argv], env


# What stops a run, saving: Ctrl-C, SIGTERM, a closed terminal (SIGHUP), and SIGUSR1, the
# one that Open MPI's mpiexec forwards to the workers (it ends the job on the others).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
RELAYED = "RNNLM_WORKERS_LAUNCHED"  # set in the workers that run_locally starts
LAUNCHER = "RNNLM_LAUNCHER_PID"  # the process those workers live and die with
BEGAN = "RNNLM_BEGAN"  # when the command began (time.time()): rnnlm/__main__.py sets it


def began(now):
    """When this command began, on time.perf_counter's clock: where the `rnnlm` command
    noted its start, then (in the workers it starts too: a time budget counts loading
    the libraries, mpiexec's start-up and the workers' own, about a second of 10 s);
    else (the Python API, a test's in-process run) now."""
    try:
        return now - min(max(0.0, time.time() - float(os.environ[BEGAN])), 60.0)
    except (KeyError, ValueError):
        return now


def relayed(signum):
    """Whether signum is the stop that run_locally relays (and says) itself."""
    return signum == signal.SIGUSR1 and bool(os.environ.get(RELAYED))


def run_locally(n, argv, write, notify):
    """Run `rnnlm argv` as n MPI workers on this machine and return its exit status. The
    workers' output passes through to write(text); mpiexec's own reports become one line
    (an RnnlmError where the job failed). A first Ctrl-C, SIGTERM or SIGHUP reaches the
    workers as SIGUSR1 (which mpiexec forwards: they save and stop together), and
    notify(message) says so; a second ends the job at once."""
    command, env = local_command(n, argv)
    env[RELAYED], env[LAUNCHER] = "1", str(os.getpid())
    job = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, start_new_session=True)
    signals = []

    def forward(signum, frame):
        signals.append(signum)
        if len(signals) == 1:
            notify(f"\n{signal.Signals(signum).name}: the workers save at the end of this "
                   f"step (again to quit without saving)")
        job.send_signal(signal.SIGUSR1 if len(signals) == 1 else signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS[:3]}
    try:
        relay = _WorkerOutput(write)
        for chunk in iter(lambda: os.read(job.stderr.fileno(), 65536), b""):
            relay.feed(chunk.decode("utf-8", "replace"))
        code = job.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    relay.close()
    if signals:
        return 128 + signals[0]
    if code == 0:
        return 0
    raise RnnlmError(relay.failure(n) or f"the workers' MPI job failed (mpiexec exit {code})")


def tie_to_launcher():
    """In a worker that run_locally started: when the launcher dies, even by SIGKILL,
    which it cannot relay (mpiexec and the workers would train on, invisibly, holding the
    run's lock), stop as at a relayed signal: every worker saves at the same update and
    ends, and mpiexec with them. A thread waits on the launcher's pidfd: no polling."""
    pid = int(os.environ.get(LAUNCHER) or 0)
    if pid:
        threading.Thread(target=_stop_when_gone, args=(pid,), daemon=True,
                         name="rnnlm-launcher-watch").start()


def _stop_when_gone(pid):
    try:
        fd = os.pidfd_open(pid)  # Linux 5.3+; it becomes readable when the process ends
        select.select([fd], [], [])
    except ProcessLookupError:
        pass  # gone already
    except (AttributeError, OSError):  # no pidfds here: ask every half second
        while _alive(pid):
            time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGUSR1)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, and another user's
    return True


class _WorkerOutput:
    """Passes the workers' stderr through as it comes (progress bars included), keeping
    back Open MPI's reports (blocks between lines of dashes, PMIx's lines) and the
    workers' error lines, which failure() turns into one."""

    DIED = re.compile(r"rank (\d+).*?exited on signal (\d+)(?: \(([^)]*)\))?", re.S)

    def __init__(self, write):
        self.write = write
        self.pending, self.in_report, self.report, self.errors = "", False, [], {}
        self.mid_line = False  # the last thing passed through did not end its line

    def feed(self, text):
        self.pending += text.replace("\0", "")  # prterun ends its output with a NUL
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            self._line(line)
        if self.pending and not self.in_report and not self.pending.startswith(("-", "[", "E")):
            self.write(self.pending)  # a progress bar's update, as it comes
            self.pending, self.mid_line = "", True

    def _line(self, line):
        error = re.match(WORKER_ERROR, line)
        if line.startswith("-----"):
            self.in_report = not self.in_report
        elif self.in_report or "PMIX ERROR" in line or line.startswith("[") and "prte" in line:
            self.report.append(line)
        elif error:
            self.errors.setdefault(error.group(2), []).append(int(error.group(1)))
        else:
            self.write(line + "\n")
            self.mid_line = False

    def close(self):
        if self.pending:
            self._line(self.pending)
            self.pending = ""
        if self.mid_line:  # what is said next starts a line of its own
            self.write("\n")

    def failure(self, n):
        """The job's failure as one line: the workers' error, or the worker that died."""
        if self.errors:
            message, ranks = next(iter(self.errors.items()))
            return message if len(ranks) == n or 0 in ranks else f"worker {ranks[0]}: {message}"
        died = self.DIED.search(" ".join(self.report))
        if died:
            rank, number, name = died.groups()
            return (f"worker {rank} died (signal {number}{', ' + name if name else ''}), and "
                    f"the job with it; the checkpoints on disk are intact")
        return None
