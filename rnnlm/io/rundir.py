"""The run directory: where rnnlm may write, and one writer at a time.

rnnlm writes only into a directory that is new, empty, or one of its own runs, which it
recognises by its marker file (not by file names a user might have). A fresh run never
goes where a checkpoint already is, and a resumed run never replaces a newer checkpoint
with an older one: resuming from a checkpoint that is not the newest of its run continues
in a new directory. While a run trains, it holds an OS file lock on its directory, so a
second `train` or `--resume` there is refused, and a killed process leaves no stale lock.
"""
import json
import os
from pathlib import Path

from rnnlm.errors import RnnlmError
from rnnlm.io.checkpoint import read_meta

# A run's files, named here alone.
LAST = "last.npz"  # the newest checkpoint: --resume continues from it
BEST = "best.npz"  # the checkpoint of the lowest validation loss: what a run directory means
CONFIG = "config.yaml"  # the resolved settings, and the corpus (works as a --config)
METRICS = "metrics.csv"  # a row per log_every updates and per evaluation
CURVES = "curves.png"  # metrics.csv drawn at each evaluation, where Matplotlib is installed
MARKER = ".rnnlm-run"  # JSON {"format": "rnnlm-run", "version": 1}
LOCK = ".rnnlm-lock"  # holds the writer's process id; locked while it runs
CHECKPOINTS = (LAST, BEST)

try:
    import fcntl

    def _try_lock(fd):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except ImportError:  # Windows
    import msvcrt

    def _try_lock(fd):
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)


def is_run(path):
    return (Path(path) / MARKER).is_file()


def checkpoint_of(target):
    """The checkpoint a path means: a run directory means its best.npz, or its last.npz
    where it has no best (a run without a validation split); a file, itself."""
    target = Path(target)
    if not target.is_dir():
        return target
    best = target / BEST
    return best if best.exists() or not (target / LAST).exists() else target / LAST


def checkpoints(path):
    """The checkpoints a directory holds, by name."""
    return [name for name in CHECKPOINTS if (Path(path) / name).exists()]


def writer(path):
    """The process id of the rnnlm that holds path's lock now, or None."""
    try:
        fd = os.open(Path(path) / LOCK, os.O_RDWR)
    except OSError:
        return None
    try:
        _try_lock(fd)
        return None  # nobody held it; closing lets go of ours
    except OSError:
        return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)


def _in_use(path, pid):
    return (f"{path} is in use by another rnnlm (process {pid}); wait for it to end, or "
            f"choose another --out")


def problem_for_new_run(path, holding=False):
    """Why a fresh run may not write into path, or None if it may. holding: this process
    holds the directory's lock (whose holder is then not another rnnlm)."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_dir():
        return f"{path} is a file, not a directory"
    # An rnnlm that has just made the directory holds its lock before it marks it.
    pid = None if holding or not (is_run(path) or (path / LOCK).exists()) else writer(path)
    if pid:
        return _in_use(path, pid)
    held = checkpoints(path)
    if held:
        return (f"{path} already holds a trained model ({', '.join(held)}); choose another "
                f"--out, or continue it with --resume {path}")
    if not is_run(path) and any(p.name != LOCK for p in path.iterdir()):
        return (f"{path} is not empty and is not an rnnlm run directory; rnnlm writes only "
                f"into a new or empty directory, or one of its own runs")
    return None


def for_new_run(out, default):
    """The directory of a fresh run: out, which must be new, empty or an rnnlm run with no
    checkpoint; or, without out, default, numbered (name-2, name-3 ...) if it is taken."""
    if out is not None:
        problem = problem_for_new_run(out)
        if problem:
            raise RnnlmError(problem)
        return Path(out)
    candidate, n = Path(default), 1
    while problem_for_new_run(candidate):
        n += 1
        candidate = Path(default).with_name(f"{Path(default).name}-{n}")
    return candidate


def for_resume(ckpt_path, step, out=None):
    """(directory, why) for continuing from the checkpoint at ckpt_path, made at `step`:
    its own run directory when it is the newest checkpoint there (why None); else out,
    or a new directory named after the run and the step, and why, for the user. Never a
    directory whose checkpoints are newer, nor one that is not an rnnlm run: a loose
    checkpoint continues in a new run directory."""
    own = Path(ckpt_path).parent
    if not is_run(own):
        if out is not None and _same(out, own):
            raise RnnlmError(f"{own} is not an rnnlm run directory, and rnnlm does not write "
                             f"into it; continue in another --out")
        if out is not None:
            problem = problem_for_new_run(out)
            if problem:
                raise RnnlmError(problem)
            return Path(out), None
        named = own.resolve()
        new = for_new_run(None, named.with_name(f"{named.name or 'run'}-from-{step}"))
        return new, (f"{ckpt_path} is not in an rnnlm run directory: continuing in {new}, "
                     f"a new one")
    pid = writer(own)
    if pid:
        raise RnnlmError(_in_use(own, pid))
    newest = max((_step_of(own / name) for name in checkpoints(own)), default=step)
    if out is not None:
        out = Path(out)
        if _same(out, own) and newest <= step:
            return own, None
        problem = problem_for_new_run(out)
        if problem and _same(out, own):
            problem = (f"{out} holds a newer checkpoint (step {newest}) than the one resumed "
                       f"(step {step}); continue in another --out")
        if problem:
            raise RnnlmError(problem)
        return out, None
    if newest <= step:
        return own, None
    new = for_new_run(None, own.with_name(f"{own.name}-from-{step}"))
    return new, (f"{ckpt_path} (step {step}) is not the newest checkpoint of its run: "
                 f"continuing in {new}, so that the newer one stays")


def _same(a, b):
    return Path(a).resolve() == Path(b).resolve()


def _step_of(path):
    """The step a checkpoint was saved at, read from its meta alone; -1 if unreadable."""
    try:
        step = read_meta(path).step
        return -1 if step is None else int(step)
    except (RnnlmError, TypeError, ValueError):
        return -1


class Claim:
    """Hold a run directory for writing: create it, lock it (one writer), check that it
    may be written, and mark it as rnnlm's. Use as a context manager for the run."""

    def __init__(self, path, fresh):
        self.path, self.fresh, self.fd = Path(path), fresh, None

    def __enter__(self):
        if self.fresh and not is_run(self.path):  # before writing anything, even the lock
            problem = problem_for_new_run(self.path)
            if problem:
                raise RnnlmError(problem)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RnnlmError(f"cannot write to output directory {self.path}: "
                             f"{e.strerror or e}") from None
        try:
            _try_lock(self.fd)
        except OSError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = None
            raise RnnlmError(_in_use(self.path, holder)) from None
        try:
            if self.fresh:  # now that no other rnnlm can be writing here
                problem = problem_for_new_run(self.path, holding=True)
                if problem and (checkpoints(self.path) or is_run(self.path)):
                    raise RnnlmError(problem)
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
            if not is_run(self.path):
                (self.path / MARKER).write_text(
                    json.dumps({"format": "rnnlm-run", "version": 1}) + "\n")
        except OSError as e:
            self.__exit__()
            raise RnnlmError(f"cannot write to output directory {self.path}: "
                             f"{e.strerror or e}") from None
        except BaseException:
            self.__exit__()
            raise
        return self.path

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays, so no one races to make it
            self.fd = None
