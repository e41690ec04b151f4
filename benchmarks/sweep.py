"""Which setting learns tiny Shakespeare best in a wall-clock budget?

    python benchmarks/sweep.py --time 5m --seeds 1 2            # every setting below
    python benchmarks/sweep.py --time 5m --only gru-lr6e-3-dropout0 --seeds 1 2 3
    python benchmarks/sweep.py --init                           # initialisations, equal steps

Each row is real `rnnlm train` runs on ../shared/data/tinyshakespeare.txt with the given
budget (`--time`: the learning rate anneals over it, the final evaluation is inside it),
from configs/shakespeare.yaml with the row's overrides, one seed after another, so that
each run has the machine to itself. The table gives the mean of the seeds' best validation
losses (nats/char) and their spread: where two rows are within their spreads, the sweep has
not ranked them. The initialisation study compares at an equal number of updates instead,
so that throughput noise cannot decide it, and repeats each setting over seeds.
"""
import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
BASE = ROOT / "configs" / "shakespeare.yaml"

# name -> overrides of configs/shakespeare.yaml. Each row names every key it varies, so
# that a row means the same whatever the base is (the README gives the figures).
SETTINGS = {
    "gru-lr6e-3-dropout0": "cell=gru lr=6e-3 dropout=0",  # the base: the defaults
    "gru-lr6e-3-dropout0.25": "cell=gru lr=6e-3 dropout=0.25",
    "lstm-lr2e-3-dropout0.25": "cell=lstm lr=2e-3 dropout=0.25",  # the first release's
    "lstm-lr3e-3-dropout0.25": "cell=lstm lr=3e-3 dropout=0.25",
    "lstm-lr4e-3-dropout0.25": "cell=lstm lr=4e-3 dropout=0.25",
    "lstm-lr6e-3-dropout0.25": "cell=lstm lr=6e-3 dropout=0.25",
    "lstm-lr8e-3-dropout0.25": "cell=lstm lr=8e-3 dropout=0.25",
    "lstm-lr2e-3-dropout0.1": "cell=lstm lr=2e-3 dropout=0.1",
    "lstm-lr6e-3-dropout0.1": "cell=lstm lr=6e-3 dropout=0.1",
    "lstm-lr6e-3-dropout0": "cell=lstm lr=6e-3 dropout=0",
    "lstm-lr6e-3-dropout0.25-batch64": "cell=lstm lr=6e-3 dropout=0.25 batch_size=64",
    "lstm1x512-lr6e-3-dropout0.25": "cell=lstm layers=1 hidden=512 lr=6e-3 dropout=0.25",
}

# The initialisation study (README): equal steps, a pinned base, three seeds.
INIT_BASE = "layers=1 dropout=0 init=uniform forget_bias=0 schedule=constant lr=2e-3"
INIT_SETTINGS = {
    "rnn-uniform": "cell=rnn hidden=128 init=uniform",
    "rnn-orthogonal": "cell=rnn hidden=128 init=orthogonal",
    "gru-uniform": "cell=gru hidden=128 init=uniform",
    "gru-orthogonal": "cell=gru hidden=128 init=orthogonal",
    "lstm-uniform": "cell=lstm hidden=128 init=uniform forget_bias=1",
    "lstm-orthogonal": "cell=lstm hidden=128 init=orthogonal forget_bias=1",
    "lstm-orthogonal-fb0": "cell=lstm hidden=128 init=orthogonal forget_bias=0",
}


def run(out, overrides, limit, seed):
    """One `rnnlm train`; limit is ["--time", "5m"] or ["--max-steps", "2000"]."""
    cmd = [sys.executable, "-m", "rnnlm", "train", str(CORPUS), "--config", str(BASE),
           "--out", str(out), "-q", "--seed", str(seed), *limit]
    for kv in overrides.split():
        cmd += ["--set", kv]
    subprocess.run(cmd, check=True, cwd=ROOT)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    vals = [(float(r["val_loss"]), int(r["step"])) for r in rows if r["val_loss"]]
    best, at = min(vals)
    return dict(best=best, at=at, steps=int(rows[-1]["step"]), epochs=float(rows[-1]["epoch"]),
                seconds=float(rows[-1]["elapsed_s"]), val=dict((s, v) for v, s in vals))


def budget_sweep(args, root):
    print(f"| setting | overrides of shakespeare.yaml | best val nats/char, mean of "
          f"{len(args.seeds)} | spread | each seed | updates | epochs |")
    print("|---|---|---|---|---|---|---|")
    for name in args.only or SETTINGS:
        results = [run(Path(root) / f"{name}-seed{seed}", SETTINGS[name], ["--time", args.time],
                       seed) for seed in args.seeds]
        bests = [r["best"] for r in results]
        print(f"| {name} | `{SETTINGS[name] or '(none)'}` | {statistics.mean(bests):.4f} | "
              f"{max(bests) - min(bests):.4f} | {' '.join(f'{b:.4f}' for b in bests)} | "
              f"{statistics.mean(r['steps'] for r in results):,.0f} | "
              f"{statistics.mean(r['epochs'] for r in results):.1f} |", flush=True)


def init_study(args, root):
    print(f"| setting | overrides | val nats/char at step {args.steps} (mean of "
          f"{len(args.seeds)} seeds) | spread (max - min) | at step {args.steps // 4} |")
    print("|---|---|---|---|---|")
    for name, overrides in list(INIT_SETTINGS.items())[:1 if args.smoke else None]:
        finals, earlies = [], []
        for seed in args.seeds:
            r = run(Path(root) / f"{name}-seed{seed}", f"{INIT_BASE} {overrides} "
                    f"eval_every={args.steps // 4}", ["--max-steps", str(args.steps)], seed)
            finals.append(r["val"][args.steps])
            earlies.append(r["val"][args.steps // 4])
        print(f"| {name} | `{overrides}` | {statistics.mean(finals):.4f} | "
              f"{max(finals) - min(finals):.4f} | {statistics.mean(earlies):.4f} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--time", default="5m", help="the budget of each run [5m]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", action="append", choices=list(SETTINGS))
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--init", action="store_true", help="the initialisation study")
    parser.add_argument("--steps", type=int, default=2000, help="updates per run (--init)")
    parser.add_argument("--smoke", action="store_true",
                        help="the first row of each study, one seed, 3 s or 8 updates: that "
                             "it runs (CI); no figures")
    args = parser.parse_args()
    if args.smoke:
        args.time, args.seeds, args.steps = "3s", args.seeds[:1], 8
        args.only = args.only or [next(iter(SETTINGS))]
    if not CORPUS.exists():
        raise SystemExit(f"{CORPUS} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        (init_study if args.init else budget_sweep)(args, args.keep or tmp)
    if args.smoke:
        print("smoke run: the study ran; its figures are not measurements")


if __name__ == "__main__":
    main()
