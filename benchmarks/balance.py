"""Would sharing the streams among MPI workers by their measured speed pay? (issue 30)

    python benchmarks/balance.py                 # 2 workers, quiet and beside a busy core
    python benchmarks/balance.py --updates 200 --workers 2 --rounds 2
    python benchmarks/balance.py --smoke         # a few updates of each: that it runs (CI)

A synchronous update waits for its slowest worker. Where one worker is persistently
slower (it shares its core with another program), giving it fewer streams would shorten
the wait. This measures what that could gain before building it: N real MPI workers
(`mpiexec`) each run the fast engine's loss_and_grads on its block of the default model's
32 streams (GRU 2 x 256, windows of 64) and sum their gradients in one Allreduce, as
`rnnlm train --workers N` does, timing each worker's own work in every update. Then:

- "even": the streams split evenly (today). Per update: the slowest worker's work.
- "by speed": the streams split in proportion to each worker's speed measured over the
  first half of the updates (what a rebalancing run would do), timed over the second.

Both under two placements: where the OS puts the workers (`--bind-to none`, how rnnlm
launches them) and each bound to a core (Open MPI's own default for two processes), so
that "one worker on the busy core" is the case that can be measured. The table gives the
update rate (chars/s over all workers) and, for "even", the imbalance: the mean over
updates of the slowest worker's work over the mean worker's, and the same for each
worker's mean over the run (the part a split by measured speed can remove).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def blocks(total, weights):
    """Contiguous blocks of `total` streams in proportion to weights, each at least one."""
    bounds = np.round(np.cumsum([0] + list(weights)) / sum(weights) * total).astype(int)
    bounds = np.maximum(bounds, np.arange(len(bounds)))  # no empty block
    bounds = np.minimum(bounds, total - (len(bounds) - 1 - np.arange(len(bounds))))
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def worker(updates, split):
    """Inside an MPI job: time this worker's share of each update; worker 0 prints JSON."""
    from mpi4py import MPI

    from rnnlm import engines
    from rnnlm.params import Spec, init_params, zero_state

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    B, T, V = 32, 64, 65
    spec = Spec("gru", V, 256, 2)
    params = init_params(spec, np.random.default_rng(0))
    rng = np.random.default_rng(rank)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    mine = blocks(B, [1] * size)[rank]
    state = zero_state(spec, B)
    work = []

    def update(rows):
        t0 = time.perf_counter()
        loss, grads, _ = engines.loss_and_grads("fast", params, spec, x[rows], y[rows],
                                                [tuple(s[rows] for s in layer)
                                                 for layer in state])
        flat = np.concatenate([g.ravel() for g in grads.values()] + [[loss]])
        spent = time.perf_counter() - t0
        comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        return spent

    for _ in range(5):  # compile, warm the caches
        update(mine)
    comm.Barrier()
    half = updates // 2
    t0 = time.perf_counter()
    for _ in range(half):
        work.append(update(mine))
    even_rate = B * T * half / (time.perf_counter() - t0)
    if split == "speed":  # each worker's rate over the first half decides its share
        speeds = comm.allgather(1 / statistics.mean(work))
        mine = blocks(B, speeds)[rank]
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(updates - half):
        work.append(update(mine))
    second_rate = B * T * (updates - half) / (time.perf_counter() - t0)
    everyone = comm.gather(work, root=0)
    shares = comm.gather(mine.stop - mine.start, root=0)
    if rank == 0:
        per_update = np.array(everyone)  # (workers, updates)
        spread = per_update.max(axis=0).mean() / per_update.mean()
        means = per_update.mean(axis=1)
        print(json.dumps(dict(even_rate=even_rate, second_rate=second_rate, spread=spread,
                              persistent=means.max() / means.mean(), shares=shares)))


def job(workers, updates, split, bind, busy):
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        done = subprocess.run(["mpiexec", "-n", str(workers), "--bind-to", bind]
                              + (["--oversubscribe"] if workers > os.cpu_count() else [])
                              + [sys.executable, __file__, "--worker", str(updates), split],
                              capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, **MPI_ENV})
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit("the MPI job failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--updates", type=int, default=200, help="updates of each job [200]")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds [2]")
    parser.add_argument("--smoke", action="store_true", help="a few updates of each (CI)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1])
        return
    if args.smoke:
        args.updates, args.rounds = 6, 1
    print(f"machine: {os.cpu_count()} cores; {args.workers} workers of one thread; "
          f"GRU 2 x 256, 32 streams of 64; {args.updates} updates per job; medians of "
          f"{args.rounds} round(s). rate: chars/s of the second half of the updates\n")
    head = (f"{'condition':<10}{'placement':<11}{'even':>10}{'by speed':>10}{'gain':>7}"
            f"{'slowest/mean':>14}{'persistent':>12}  shares by speed")
    print(head)
    print("-" * len(head))
    for busy in (False, True):
        for bind in ("none", "core"):
            rounds = [(job(args.workers, args.updates, "even", bind, busy),
                       job(args.workers, args.updates, "speed", bind, busy))
                      for _ in range(args.rounds)]
            even = statistics.median(e["second_rate"] for e, _ in rounds)
            by_speed = statistics.median(s["second_rate"] for _, s in rounds)
            print(f"{'busy' if busy else 'quiet':<10}{bind:<11}{even:>10,.0f}{by_speed:>10,.0f}"
                  f"{by_speed / even:>6.2f}x"
                  f"{statistics.median(e['spread'] for e, _ in rounds):>14.2f}"
                  f"{statistics.median(e['persistent'] for e, _ in rounds):>12.2f}  "
                  + " | ".join("/".join(map(str, s["shares"])) for _, s in rounds), flush=True)
    if args.smoke:
        print("\nsmoke run: every side ran; its figures are not measurements")


if __name__ == "__main__":
    main()
