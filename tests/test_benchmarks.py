"""The benchmarks run, in their smoke mode (a few steps of everything, no figures to quote),
so that they cannot rot unnoticed. Their figures are measured by hand, never asserted."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA
from helpers import benchmark, installed


def smoke(script, *args, timeout=600):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_bench_runs_every_configuration_and_side():
    out = smoke("bench.py", "--memory", "1")
    for name in benchmark("bench").CONFIGS:
        assert f"\n{name} " in out
    assert "numpy" in out and "memory: rnnlm train on a 1 MB corpus" in out
    assert "numba     fast engine, numba kernels, products by " in out  # what each side ran on
    assert out.rstrip().endswith("its figures are not measurements")


def test_bench_gemm_rates_every_library_the_products_can_run_on():
    from rnnlm.fast import blas

    out = smoke("bench.py", "--gemm")
    expected = [f"{lib.describe()}, float32" for lib in blas.available()]
    expected += [f"{blas.provider('mkl').describe()}, bf16"] if blas.find_mkl() else []
    tables = out.split("\nlibrary ")[1:]  # the shapes of issue 31, and a step's by columns
    assert len(tables) == 2
    for table in tables:
        rows = table.split("\n\n")[0].splitlines()[1:]  # below the header
        assert len(rows) == len(expected)
        assert all(row.startswith(label + " ") for row, label in zip(rows, expected))
    assert out.rstrip().endswith("its figures are not measurements")


@pytest.mark.skipif(not (SHARED_DATA / "tinyshakespeare.txt").exists(),
                    reason="../shared/data is absent")
@pytest.mark.parametrize("script,args", [("quality.py", ()), ("quality.py", ("--kb", "100")),
                                         ("sweep.py", ()), ("sweep.py", ("--init",)),
                                         ("sweep.py", ("--passes",)),
                                         ("tried.py", ("--idea", "average"))])
def test_the_quality_benchmark_and_the_sweeps_run(script, args):
    out = smoke(script, *args)
    assert "nats/char" in out or "best val" in out
    assert out.rstrip().endswith("its figures are not measurements")


MPI = installed("mpi4py") and (shutil.which("mpiexec", path=os.path.dirname(sys.executable))
                               or shutil.which("mpiexec"))


@pytest.mark.skipif(not MPI, reason="no MPI here (pip install 'rnnlm[mpi]' and an mpiexec)")
def test_the_scaling_benchmark_runs_every_side_beside_each_load():
    out = smoke("scaling.py")
    for load in ("quiet", "comes and goes"):
        for side in ("default", "--threads 1", "--workers 2"):
            assert f"\n{load:<16}{side:<14}" in out
    assert out.rstrip().endswith("its figures are not measurements")


@pytest.mark.skipif(not MPI, reason="no MPI here (pip install 'rnnlm[mpi]' and an mpiexec)")
def test_the_balance_benchmark_runs_each_split_and_placement():
    out = smoke("balance.py")
    for row in ("quiet     none", "quiet     core", "busy      none", "busy      core"):
        assert row in out
    assert out.rstrip().endswith("its figures are not measurements")
