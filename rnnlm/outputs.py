"""Files that commands write beside a run (exports, pictures): never over a file rnnlm did
not make, never over the command's own input, and never half-written.

A file counts as rnnlm's own when `is_ours(path)` recognises the mark its writer put in
it (a generator tag, a producer name, a metadata entry): a name alone proves nothing.
"""
import os
from pathlib import Path

from rnnlm import RnnlmError


def check_target(path, what, is_ours, inputs=()):
    """Raise RnnlmError unless path may be written as `what`: it is new (in an existing
    directory), or an earlier rnnlm output of that kind, and none of `inputs`."""
    path = Path(path)
    if path.is_dir():
        raise RnnlmError(f"{path} is a directory; -o names the {what} to write")
    if not path.exists():
        if not path.parent.is_dir():
            raise RnnlmError(f"cannot write {path}: {path.parent} is not a directory")
        return
    for source in inputs:
        if source is not None and os.path.exists(source) and os.path.samefile(path, source):
            raise RnnlmError(f"{path} is this command's input ({source}); choose another -o")
    if not is_ours(path):
        raise RnnlmError(f"{path} exists and is not an rnnlm {what}: rnnlm does not write "
                         f"over it (choose another -o, or remove it)")


def head(path, size=4096):
    """The first bytes of a file, or b"" where it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def write_atomically(path, data):
    """Write bytes to path through a temporary file in its directory, flushed, fsynced and
    renamed into place: a crash or a full disk leaves the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RnnlmError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
