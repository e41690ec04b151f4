"""Files that commands write beside a run (exports, pictures): never over a file rnnlm did
not make, never over the command's own input, and never half-written.

A file counts as rnnlm's own when `is_ours(path)` recognises the mark its writer put in
it (a generator tag, a producer name, a metadata entry): a name alone proves nothing.
"""
import contextlib
import os
from pathlib import Path

from rnnlm.errors import RnnlmError


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


@contextlib.contextmanager
def replacing(path, what=None):
    """Write path through a temporary file beside it: the block writes to the open binary
    file yielded; then it is flushed, fsynced and renamed over path, and the directory
    fsynced. A crash at any moment leaves the old file or the new one, never half of one;
    on an error the temporary file goes (an OSError becomes an RnnlmError naming `what`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        named = f"{what} {path}" if what else str(path)
        raise RnnlmError(f"cannot write {named}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path, data):
    """Write bytes to path, as replacing() does."""
    with replacing(path) as f:
        f.write(data)


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not every platform lets a directory be opened
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
