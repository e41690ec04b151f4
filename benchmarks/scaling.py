"""Training speed with more cores: one process with BLAS threads against N MPI workers of
one thread each, on a quiet machine and while another process keeps one core busy.

    python benchmarks/scaling.py                    # 1 process; 2 and 4 workers; 150 updates
    python benchmarks/scaling.py --workers 2 4 8 16 --steps 300    # a machine with more cores
    python benchmarks/scaling.py --time-to 2.0      # also the time to a validation loss
    python benchmarks/scaling.py --smoke            # a few updates of each: that it runs (CI)

Each measurement is a real `rnnlm train` of the default model (GRU 2 x 256, 32 streams of
64) on ../shared/data/tinyshakespeare.txt (the built-in corpus where it is absent), in a
process of its own: chars/s is the median of metrics.csv's rows after the first (each the
rate over its log_every updates), memory the largest process's peak RSS (each worker's,
with workers). The sides alternate within each round, and the table gives medians over
the rounds. "busy" runs beside `python -c "while True: pass"`, which keeps one core busy as
other work on a shared machine does. With --time-to L, each side trains for --budget
seconds instead, evaluating every 25 updates, and the table gives the training time at
which the validation loss first reached L: N workers follow the trajectory of one (the same
updates, up to float rounding), so this ratio is the speed's, at equal quality.
"""
import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
BLAS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_extensions():
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    return "+".join(n for f, n in (("avx2", "AVX2"), ("avx512f", "AVX-512")) if f in flags) or "?"


def one_run(workers, steps, budget, time_to, threads):
    """In a process of its own: one `rnnlm train`; its speed, memory and time to a loss."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "rnnlm", "train"] + ([str(CORPUS)] if CORPUS.exists()
                                                             else [])
        command += ["--out", str(out), "-q", "--set", "log_every=10"]
        if time_to:
            command += ["--time", f"{budget}s", "--set", "eval_every=25"]
        else:
            command += ["--max-steps", str(steps), "--set", f"eval_every={steps}"]
        if workers > 1:
            command += ["--workers", str(workers)]
        if threads:
            command += ["--threads", str(threads)]
        env = dict(os.environ)
        if workers > 1:  # rnnlm gives each worker its share of the cores
            for name in BLAS:
                env.pop(name, None)
        subprocess.run(command, check=True, env=env, cwd=ROOT)
        with open(out / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    speeds = [float(r["chars_per_sec"]) for r in rows[1:] if not r["val_loss"]] or \
        [float(r["chars_per_sec"]) for r in rows]
    reached = next((float(r["elapsed_s"]) for r in rows
                    if r["val_loss"] and time_to and float(r["val_loss"]) <= time_to), None)
    return dict(cps=statistics.median(speeds), reached=reached,
                mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def measure(workers, threads, steps, budget, time_to, busy):
    spinner = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None)
    try:
        done = subprocess.run([sys.executable, __file__, "--one", str(workers), str(steps),
                               str(budget), str(time_to or 0), str(threads or 0)],
                              capture_output=True, text=True, cwd=ROOT)
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{workers} worker(s) failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4],
                        help="worker counts beside one process [2 4]")
    parser.add_argument("--steps", type=int, default=150, help="updates of each run [150]")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds [2]")
    parser.add_argument("--time-to", type=float, metavar="LOSS",
                        help="measure the training time to this validation loss instead")
    parser.add_argument("--budget", type=float, default=120, help="seconds, with --time-to")
    parser.add_argument("--no-busy", action="store_true", help="skip the busy-core runs")
    parser.add_argument("--smoke", action="store_true", help="a few updates of each (CI)")
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        workers, steps, budget, time_to, threads = args.one
        print(json.dumps(one_run(int(workers), int(steps), float(budget), float(time_to),
                                 int(threads))))
        return
    if args.smoke:
        args.steps, args.rounds, args.workers, args.time_to = 4, 1, args.workers[:1], None
    cores = os.cpu_count()
    sides = ([("1 process", 1, None), ("1 thread", 1, 1)]
             + [(f"{n} workers", n, None) for n in args.workers])
    conditions = [("quiet", False)] + ([] if args.no_busy else [("busy", True)])
    print(f"machine: {cores} cores ({cpu_extensions()}); the default model on "
          f"{CORPUS.name if CORPUS.exists() else 'the built-in corpus'}; "
          + (f"time to val {args.time_to} within {args.budget:g} s" if args.time_to
             else f"{args.steps} updates") + f"; medians of {args.rounds} round(s)")
    print(f"1 process: BLAS threads = {cores} cores (the default); 1 thread: --threads 1; "
          f"workers: 1 thread each (the cores shared out where workers are fewer). "
          f"efficiency: the speed over 1 thread's, per worker\n")
    head = f"{'condition':<10}{'side':<12}{'chars/s':>10}{'vs 1 process':>14}{'efficiency':>12}" \
           f"{'MB each':>9}" + (f"{'time to ' + str(args.time_to):>16}" if args.time_to else "")
    print(head)
    print("-" * len(head))
    for condition, busy in conditions:
        rounds = [{label: measure(n, threads, args.steps, args.budget, args.time_to, busy)
                   for label, n, threads in sides} for _ in range(args.rounds)]
        for label, n, _ in sides:
            cps = statistics.median(r[label]["cps"] for r in rounds)
            ratio = statistics.median(r[label]["cps"] / r["1 process"]["cps"] for r in rounds)
            reached = [r[label]["reached"] for r in rounds if r[label]["reached"]]
            alone = statistics.median(r[label]["cps"] / r["1 thread"]["cps"] for r in rounds)
            print(f"{condition:<10}{label:<12}{cps:>10,.0f}{ratio:>13.2f}x"
                  + (f"{alone / n:>12.0%}" if n > 1 else f"{'':>12}")
                  + f"{statistics.median(r[label]['mb'] for r in rounds):>9.0f}"
                  + (f"{(statistics.median(reached) if reached else float('nan')):>15.1f}s"
                     if args.time_to else ""), flush=True)
    if args.smoke:
        print("\nsmoke run: every side ran; its figures are not measurements")


if __name__ == "__main__":
    main()
