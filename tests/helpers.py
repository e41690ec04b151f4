"""What many test files need, once: starting rnnlm as a real process, the shape of a
one-line error, a checkpoint's parameters, a benchmark script's module."""
import importlib.util
import subprocess
import sys

from conftest import CONFIGS, ROOT

TINY = str(CONFIGS / "tiny.yaml")


def rnnlm_cmd(*args):
    """The command line that runs rnnlm in a process of its own, as a user's shell does."""
    return [sys.executable, "-m", "rnnlm", *args]


def run_rnnlm(*args, **options):
    """rnnlm args, run to its end: the CompletedProcess, its output as text."""
    return subprocess.run(rnnlm_cmd(*args), capture_output=True, text=True, **options)


def assert_one_line_error(result, *fragments):
    """A command refused: a non-zero exit, no traceback, one line 'Error: ...' on stderr
    holding each fragment."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def params_of(path):
    """The parameters of the checkpoint at path."""
    from rnnlm.io import checkpoint
    return checkpoint.load(path).params


def installed(module):
    """Whether module imports here (an optional extra's, whose tests it gates)."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def benchmark(name):
    """benchmarks/<name>.py as a module (a script, not a package), for its tables and lists."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
