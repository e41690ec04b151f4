"""Which setting learns tiny Shakespeare best in a fixed wall-clock budget?

    python benchmarks/sweep.py                       # every setting below, 5 minutes each
    python benchmarks/sweep.py --seconds 60 --only rnn256
    python benchmarks/sweep.py --init                # initialisations, equal steps, 3 seeds

Each setting is a real `rnnlm train` run on ../shared/data/tinyshakespeare.txt with
max_seconds set; the table reports its best validation loss (nats/char) and how far it got.
Runs are sequential, so that each has the machine to itself. The initialisation study
compares at an equal number of updates instead, so that throughput noise cannot decide it,
and repeats each setting over seeds.
"""
import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

# Every row starts from BASE, not from the current defaults, so that the rows mean the same
# whatever the defaults become (they are chosen from this table).
BASE = "layers=1 dropout=0 init=uniform forget_bias=0"
SETTINGS = {
    "rnn256": "cell=rnn hidden=256",
    "rnn512": "cell=rnn hidden=512",
    "gru256": "cell=gru hidden=256",
    "gru512": "cell=gru hidden=512",
    "lstm256": "cell=lstm hidden=256",
    "lstm512": "cell=lstm hidden=512",
    "lstm2x256": "cell=lstm hidden=256 layers=2",
    "gru512-dropout": "cell=gru hidden=512 dropout=0.25",
    "lstm2x256-dropout": "cell=lstm hidden=256 layers=2 dropout=0.25",
    "lstm2x256-dropout-orthogonal-fb1": "cell=lstm hidden=256 layers=2 dropout=0.25 "
                                        "init=orthogonal forget_bias=1",
    "lstm2x256-dropout-b64": "cell=lstm hidden=256 layers=2 dropout=0.25 batch_size=64",
    "lstm2x512-dropout": "cell=lstm hidden=512 layers=2 dropout=0.25",
}

INIT_SETTINGS = {
    "rnn-uniform": "cell=rnn hidden=128 init=uniform",
    "rnn-orthogonal": "cell=rnn hidden=128 init=orthogonal",
    "gru-uniform": "cell=gru hidden=128 init=uniform",
    "gru-orthogonal": "cell=gru hidden=128 init=orthogonal",
    "lstm-uniform": "cell=lstm hidden=128 init=uniform forget_bias=1",
    "lstm-orthogonal": "cell=lstm hidden=128 init=orthogonal forget_bias=1",
    "lstm-orthogonal-fb0": "cell=lstm hidden=128 init=orthogonal forget_bias=0",
}


def run(name, overrides, out_root, seconds=0, steps=1000000, seed=None):
    out = Path(out_root) / (name + (f"-seed{seed}" if seed is not None else ""))
    args = [f"--set={kv}" for kv in (BASE + " " + overrides).split()]
    if seed is not None:
        args.append(f"--set=seed={seed}")
    cmd = [sys.executable, "-m", "rnnlm", "train", str(CORPUS), "--out", str(out), "-q",
           "--set", f"max_seconds={seconds}", "--set", f"max_steps={steps}",
           "--set", "eval_every=250"] + args
    subprocess.run(cmd, check=True, cwd=ROOT)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    vals = [(float(r["val_loss"]), int(r["step"])) for r in rows if r["val_loss"]]
    best, at = min(vals)
    last = rows[-1]
    return dict(best=best, at=at, steps=int(last["step"]), epochs=float(last["epoch"]),
                train=float(last["train_loss"]), cps=float(last["chars_per_sec"]))


def init_study(args, root):
    print(f"| setting | overrides | val nats/char at step {args.steps} (mean of "
          f"{args.seeds} seeds) | spread (max - min) | at step {args.steps // 4} |")
    print("|---|---|---|---|---|")
    for name, overrides in INIT_SETTINGS.items():
        finals, earlies = [], []
        for seed in range(1, args.seeds + 1):
            run(name, overrides, root, steps=args.steps, seed=seed)
            rows = list(csv.DictReader(open(Path(root) / f"{name}-seed{seed}" / "metrics.csv")))
            val = {int(r["step"]): float(r["val_loss"]) for r in rows if r["val_loss"]}
            finals.append(val[args.steps])
            earlies.append(val[args.steps // 4])
        print(f"| {name} | `{overrides}` | {sum(finals) / len(finals):.4f} | "
              f"{max(finals) - min(finals):.4f} | {sum(earlies) / len(earlies):.4f} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--only", action="append", choices=list(SETTINGS))
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--init", action="store_true", help="the initialisation study")
    parser.add_argument("--steps", type=int, default=2000, help="updates per run (--init)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (--init)")
    args = parser.parse_args()
    if not CORPUS.exists():
        raise SystemExit(f"{CORPUS} is absent")
    if args.init:
        with tempfile.TemporaryDirectory() as tmp:
            init_study(args, args.keep or tmp)
        return
    print(f"| setting | overrides | best val nats/char | bits/char | at step | steps | "
          f"epochs | train loss | chars/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or tmp
        for name in args.only or SETTINGS:
            r = run(name, SETTINGS[name], root, seconds=args.seconds)
            print(f"| {name} | `{SETTINGS[name]}` | {r['best']:.4f} | {r['best'] / 0.693147:.4f} | "
                  f"{r['at']} | {r['steps']} | {r['epochs']:.1f} | {r['train']:.3f} | "
                  f"{r['cps']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
