"""Files that commands write beside a run (exports, pictures): never over a file rnnlm did
not make, never over the command's own input, and never half-written.

A file counts as rnnlm's own when `is_ours(path)` recognises the mark its writer put in
it (a generator tag, a producer name, a metadata entry): a name alone proves nothing.
"""
import contextlib
import os
from pathlib import Path

from rnnlm import arguments
from rnnlm.errors import RnnlmError


def check_target(path, what, is_ours, inputs=()):
    """Raise RnnlmError unless path may be written as `what`: it is new (in a directory
    that can be written), or an earlier rnnlm output of that kind, and none of `inputs`.
    Returns the file to write: path, or the file a symbolic link at path points to (the
    link stays a link, as after `cp`)."""
    path = _named(path, what)
    if path.is_symlink():  # checked and written where it points, even where nothing is yet
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise RnnlmError(f"{path} is a directory; -o names the {what} to write")
    if not path.exists():
        if not path.parent.is_dir():
            raise RnnlmError(f"cannot write {path}: {path.parent} is not a directory")
        if not os.access(path.parent, os.W_OK):
            raise RnnlmError(f"cannot write {path}: its directory {path.parent} is read-only")
        return path
    if not path.is_file():
        raise RnnlmError(f"{path} is not a regular file (a pipe or a device): rnnlm writes "
                         f"the {what} to a file")
    for source in inputs:
        if source is not None and os.path.exists(source) and os.path.samefile(path, source):
            raise RnnlmError(f"{path} is this command's input ({source}); choose another -o")
    if not is_ours(path):
        raise RnnlmError(f"{path} exists and is not an rnnlm {what}: rnnlm does not write "
                         f"over it (choose another -o, or remove it)")
    if not os.access(path.parent, os.W_OK):
        raise RnnlmError(f"cannot replace {path}: its directory {path.parent} is read-only")
    return path


def _named(path, what):
    """path as a Path (arguments.path: never empty), unless it names standard output,
    which a file that is renamed into place cannot be."""
    path = arguments.path(path, f"the {what}")
    if str(path) == "-":
        raise RnnlmError(f"the {what} is written to a file, not to standard output: "
                         f"name a file instead of -")
    return path


def readable_name(name):
    """A file name as text that can be drawn or written as UTF-8: bytes of the name that
    are not UTF-8 (which Python holds as lone surrogates) written as escapes, e.g. \\xff."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
        _remove(tmp)
        named = f"{what} {path}" if what else str(path)
        raise RnnlmError(f"cannot write {named}: {e.strerror or e}") from None
    except BaseException:
        _remove(tmp)
        raise


def write_atomically(path, data):
    """Write bytes to path, as replacing() does."""
    with replacing(path) as f:
        f.write(data)


def _remove(tmp):
    """Remove a temporary file if it is there. On a read-only file system even removing a
    file that was never made fails (EROFS, not ENOENT): that is no second error."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not every platform lets a directory be opened
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
