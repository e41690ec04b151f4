"""`rnnlm` and `python -m rnnlm`: start the command line.

The command's start is noted first (a time budget counts from it, in the workers that
`--workers N` starts too). Two things happen before the command line's modules load
NumPy: the BLAS's thread count (--threads N) is set through its own environment
variables, which it reads only when it loads; and Ctrl-C while they load ends quietly,
with status 130. Then stderr is made one that a reader gone away cannot break.
"""
import os
import sys
import time

from rnnlm.run.threads import THREAD_VARIABLES


def threads_option(argv):
    """The value given to --threads in argv (as --threads N or --threads=N), or None."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.partition("=")[2]
    return None


def apply_threads(argv):
    """Set the BLAS's thread variables from --threads, if argv gives a valid count (an
    invalid one is left for the command line to refuse)."""
    threads = threads_option(argv)
    if threads is not None and threads.isdigit() and int(threads) > 0:
        for name in THREAD_VARIABLES:
            os.environ[name] = threads


class Unbroken:
    """stderr that a reader gone away (`rnnlm train ... 2>&1 | head`) cannot break: what
    follows goes nowhere and the run goes on to its checkpoints (a BrokenPipeError in a
    progress bar's write ended it, with nothing saved)."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def write(self, text):
        return self._unbroken(self.stream.write, text) or len(text)

    def flush(self):
        self._unbroken(self.stream.flush)

    def _unbroken(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())


def main():
    started = time.time()  # a time budget counts from here: loading the libraries too
    try:
        apply_threads(sys.argv[1:])
        from rnnlm.cli import main as run
        from rnnlm.run import workers
    except KeyboardInterrupt:
        sys.exit(130)
    os.environ.setdefault(workers.BEGAN, repr(started))  # the workers it starts inherit it
    sys.stderr = Unbroken(sys.stderr)
    run()


if __name__ == "__main__":
    main()
