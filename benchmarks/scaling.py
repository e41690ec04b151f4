"""Training speed with more cores and beside other work: the default (one process that
chooses its BLAS threads as it goes, rnnlm/run/threads.py) against the counts pinned and
against N MPI workers of one thread each, on a quiet machine, beside a process that keeps
one core busy, and beside one that comes and goes.

    python benchmarks/scaling.py                    # 1 process; 2 workers; 300 updates
    python benchmarks/scaling.py --workers 2 4 8 16 --steps 300    # a machine with more cores
    python benchmarks/scaling.py --time-to 2.0      # also the time to a validation loss
    python benchmarks/scaling.py --smoke            # a few updates of each: that it runs (CI)

Each measurement is a real `rnnlm train` of the default model (GRU 2 x 256, 32 streams of
64) on ../shared/data/tinyshakespeare.txt (the built-in corpus where it is absent), in a
process of its own: chars/s is the training characters over the training time of
metrics.csv's rows after the first (each row: its updates and their rate; probes of the
thread counts included, evaluations not), memory the largest process's peak RSS (each
worker's, with workers). The sides alternate within each round, and the table gives
medians over the rounds. "busy" runs beside `python -c "while True: pass"`, which keeps one
core busy as other work on a shared machine does; "comes and goes" beside a process busy
for the first 10 s of every 30 (from the run's start), for --cycle-steps updates, so that
each side sees the load come and go several times. With --time-to L, each side trains for
--budget seconds instead, evaluating every 25 updates, and the table gives the training
time at which the validation loss first reached L: N workers follow the trajectory of one
(the same updates, up to float rounding), so this ratio is the speed's, at equal quality.
Last, --wall S: the wall time of `rnnlm train --time S` beside a busy core, from the
command's start to its exit.
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
BLAS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
LOADS = {  # condition: the program beside the run
    "quiet": None,
    "busy": "while True: pass",
    "comes and goes": ("import time\nwhile True:\n    t = time.time()\n"
                       "    while time.time() - t < 10: pass\n    time.sleep(20)"),
}


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
        env = {k: v for k, v in os.environ.items() if k not in BLAS}  # as a user's shell
        subprocess.run(command, check=True, env=env, cwd=ROOT)
        with open(out / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    reached = next((float(r["elapsed_s"]) for r in rows
                    if r["val_loss"] and time_to and float(r["val_loss"]) <= time_to), None)
    return dict(cps=throughput(rows), reached=reached,
                mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def throughput(rows):
    """Training characters over training seconds, from metrics.csv's rows after the first:
    row by row, its updates at its rate (characters per update cancel out). Evaluations
    are outside the rows' times."""
    pairs = [(int(row["step"]) - int(before["step"]), float(row["chars_per_sec"]))
             for before, row in zip(rows, rows[1:])]
    if not pairs:
        return float(rows[-1]["chars_per_sec"])
    return sum(n for n, _ in pairs) / sum(n / rate for n, rate in pairs)


def measure(workers, threads, steps, budget, time_to, load):
    beside = subprocess.Popen([sys.executable, "-c", LOADS[load]]) if LOADS[load] else None
    try:
        done = subprocess.run([sys.executable, __file__, "--one", str(workers), str(steps),
                               str(budget), str(time_to or 0), str(threads or 0)],
                              capture_output=True, text=True, cwd=ROOT)
    finally:
        if beside:
            beside.kill()
            beside.wait()
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{workers} worker(s) failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wall_time(seconds):
    """Seconds from the start of `rnnlm train --time SECONDS` to its exit, beside a busy core."""
    beside = subprocess.Popen([sys.executable, "-c", LOADS["busy"]])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if k not in BLAS}
            began = time.perf_counter()
            subprocess.run([sys.executable, "-m", "rnnlm", "train"]
                           + ([str(CORPUS)] if CORPUS.exists() else [])
                           + ["--time", f"{seconds}s", "--out", f"{tmp}/run", "-q"],
                           check=True, env=env, cwd=ROOT)
            return time.perf_counter() - began
    finally:
        beside.kill()
        beside.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="*", default=[2],
                        help="worker counts beside one process [2]")
    parser.add_argument("--steps", type=int, default=300, help="updates of each run [300]")
    parser.add_argument("--cycle-steps", type=int, default=1000,
                        help="updates of each run beside the load that comes and goes [1000]")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds [2]")
    parser.add_argument("--time-to", type=float, metavar="LOSS",
                        help="measure the training time to this validation loss instead")
    parser.add_argument("--budget", type=float, default=120, help="seconds, with --time-to")
    parser.add_argument("--conditions", nargs="+", choices=list(LOADS), default=list(LOADS))
    parser.add_argument("--wall", type=float, default=30,
                        help="time `rnnlm train --time S` beside a busy core [30; 0: skip]")
    parser.add_argument("--smoke", action="store_true", help="a few updates of each (CI)")
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        workers, steps, budget, time_to, threads = args.one
        print(json.dumps(one_run(int(workers), int(steps), float(budget), float(time_to),
                                 int(threads))))
        return
    if args.smoke:
        args.steps = args.cycle_steps = 12
        args.rounds, args.workers, args.time_to, args.wall = 1, args.workers[:1], None, 0
        args.conditions = ["quiet", "comes and goes"]  # busy differs only in its program
    cores = os.cpu_count()
    pinned = f"--threads {cores}"
    sides = ([("default", 1, None), ("--threads 1", 1, 1), (pinned, 1, cores)]
             + [(f"--workers {n}", n, None) for n in args.workers])
    print(f"machine: {cores} cores ({cpu_extensions()}); the default model on "
          f"{CORPUS.name if CORPUS.exists() else 'the built-in corpus'}; "
          + (f"time to val {args.time_to} within {args.budget:g} s" if args.time_to
             else f"{args.steps} updates ({args.cycle_steps} where the load comes and goes)")
          + f"; medians of {args.rounds} round(s)")
    print(f"default: one process choosing its BLAS threads as it goes; {pinned}: the count "
          f"before it chose (every core); workers: one thread each. efficiency: the speed "
          f"over --threads 1's, per worker\n")
    head = (f"{'condition':<16}{'side':<14}{'chars/s':>10}{'vs default':>12}"
            f"{'efficiency':>12}{'MB each':>9}"
            + (f"{'time to ' + str(args.time_to):>16}" if args.time_to else ""))
    print(head)
    print("-" * len(head))
    for load in args.conditions:
        steps = args.cycle_steps if load == "comes and goes" else args.steps
        rounds = [{label: measure(n, threads, steps, args.budget, args.time_to, load)
                   for label, n, threads in sides} for _ in range(args.rounds)]

        def ratio(a, b):
            return statistics.median(r[a]["cps"] / r[b]["cps"] for r in rounds)
        for label, n, _ in sides:
            reached = [r[label]["reached"] for r in rounds if r[label]["reached"]]
            print(f"{load:<16}{label:<14}"
                  f"{statistics.median(r[label]['cps'] for r in rounds):>10,.0f}"
                  f"{ratio(label, 'default'):>11.2f}x"
                  + (f"{ratio(label, '--threads 1') / n:>12.0%}" if n > 1 else f"{'':>12}")
                  + f"{statistics.median(r[label]['mb'] for r in rounds):>9.0f}"
                  + (f"{(statistics.median(reached) if reached else float('nan')):>15.1f}s"
                     if args.time_to else ""), flush=True)
        best = statistics.median(r["default"]["cps"] / max(r["--threads 1"]["cps"], r[pinned]["cps"])
                                 for r in rounds)
        print(f"{'':<16}default against --threads 1: {ratio('default', '--threads 1'):.2f}x, "
              f"against {pinned}: {ratio('default', pinned):.2f}x, against the faster of the "
              f"two in each round: {best:.2f}x", flush=True)
    if args.wall:
        print(f"\nrnnlm train --time {args.wall:g}s beside a busy core ended after "
              f"{wall_time(args.wall):.1f} s of wall time")
    if args.smoke:
        print("\nsmoke run: every side ran; its figures are not measurements")


if __name__ == "__main__":
    main()
