"""Which setting learns tiny Shakespeare best in a wall-clock budget?

    python benchmarks/sweep.py --time 5m --seeds 1 2            # every setting below
    python benchmarks/sweep.py --time 5m --only gru-lr6e-3-dropout0 --seeds 1 2 3
    python benchmarks/sweep.py --init                           # initialisations, equal steps
    python benchmarks/sweep.py --passes --parallel 2 --csv benchmarks/passes.csv
    python benchmarks/sweep.py --passes-table benchmarks/passes.csv

The passes study (issue 21, the rule in rnnlm/run/sizing.py) trains on slices of two kinds of
text, tiny Shakespeare and the built-in corpus (Python source), for budgets counted in
passes over the slice's training text rather than in seconds: a pass is the same work on
any machine, so the table carries over between machines, and a run's result does not
depend on how busy the machine was. Each run has one thread (--threads 1); --parallel N
runs N at once. Each finished run is one row of the CSV, so that a long study can be
stopped, committed and continued (rows already in the CSV are not run again).

Each row is real `rnnlm train` runs on ../shared/data/tinyshakespeare.txt with the given
budget (`--time`: the learning rate anneals over it, the final evaluation is inside it),
from configs/shakespeare.yaml with the row's overrides, one seed after another, so that
each run has the machine to itself. The table gives the mean of the seeds' best validation
losses (nats/char) and their spread: where two rows are within their spreads, the sweep has
not ranked them. The initialisation study compares at an equal number of updates instead,
so that throughput noise cannot decide it, and repeats each setting over seeds.
"""
import argparse
import concurrent.futures
import csv
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
BASE = ROOT / "configs" / "shakespeare.yaml"
sys.path.insert(0, str(ROOT))

from rnnlm.run import sizing  # noqa: E402 (the checkout's rule: its rate and strength)

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


def run(out, overrides, limit, seed, corpus=CORPUS, base=BASE, extra=()):
    """One `rnnlm train` on corpus, from the config file base (None: none); limit is
    ["--time", "5m"] or ["--max-steps", "2000"]; extra, more arguments."""
    cmd = [sys.executable, "-m", "rnnlm", "train", str(corpus), "--out", str(out), "-q",
           "--seed", str(seed), *limit, *extra]
    cmd += ["--config", str(base)] if base else []
    for kv in overrides.split():
        cmd += ["--set", kv]
    subprocess.run(cmd, check=True, cwd=ROOT)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    vals = [(float(r["val_loss"]), int(r["step"])) for r in rows if r["val_loss"]]
    best, at = min(vals)
    return dict(best=best, at=at, steps=int(rows[-1]["step"]), epochs=float(rows[-1]["epoch"]),
                seconds=float(rows[-1]["elapsed_s"]), val=dict((s, v) for v, s in vals),
                train_loss=float(rows[-1]["train_loss"]))


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


# The passes study. Regularisation levels, each named in the CSV:
REGULARISATION = {
    "none": "dropout=0 weight_drop=0",
    "mid": "dropout=0.2 dropout_mode=locked weight_drop=0.2",
    "high": "dropout=0.35 dropout_mode=locked weight_drop=0.3",
}
# Where each level sits on the rule's scale of strength (rnnlm/run/sizing.py: 1 = locked
# dropout 0.35 + weight drop 0.3): mid's 0.2 and 0.2 are 0.57 and 0.67 of it.
STRENGTH_OF = {"none": 0.0, "mid": 0.6, "high": 1.0}
FEWEST_UPDATES = 100  # a cell of fewer (a budget of seconds) has not learned its text yet
TEXTS = ("shakespeare", "python")
FIELDS = ("text", "kb", "hidden", "regularisation", "passes", "seed", "lr", "updates",
          "best", "at", "train_loss")


def passes_jobs():
    """(text, kb, hidden, regularisation, passes) in the order they are worth running:
    for each slice, the 2 x 256 GRU at every level at 1, 4 and 16 passes; then 8 passes,
    where the levels cross; then wider and narrower models at equal compute (the 384 is
    about 2.1 times the 256's cost per character here, the 128 a third of it); then the
    whole texts at one pass. (Rows of the 384 with high regularisation at 4 and 16 passes
    of the smaller slice, and without at 4, ran at 6e-3 before the study took the rule's
    4e-3 for widths above 256: benchmarks/passes.csv keeps them with their rate.)"""
    jobs = []
    for kb in (100, 300):
        for passes in (1, 4, 16):
            for reg in REGULARISATION:
                jobs += [(text, kb, 256, reg, passes) for text in TEXTS]
        if kb == 100:
            for passes in (4, 16):
                jobs += [(text, kb, 128, reg, passes) for reg in ("mid", "high") for text in TEXTS]
    for kb in (100, 300):
        jobs += [(text, kb, 256, reg, 8) for reg in REGULARISATION for text in TEXTS]
    jobs += [(text, kb, 384, "none", 4) for kb in (100, 300) for text in TEXTS]
    jobs += [(text, kb, 384, "mid", 8) for kb in (100, 300) for text in TEXTS]
    jobs += [(text, 1100, 256, reg, 1) for reg in ("none", "mid") for text in TEXTS]
    return jobs


def slice_of(text, kb, folder):
    """The first kb KB of a text (cut at a character), as a file in folder."""
    path = Path(folder) / f"{text}-{kb}kb.txt"
    if not path.exists():
        if text == "shakespeare":
            whole = CORPUS.read_text(encoding="utf-8")
        else:
            sys.path.insert(0, str(ROOT))
            from rnnlm.io import data
            whole = data.builtin_text()
        path.write_text(whole.encode("utf-8")[:kb * 1000].decode("utf-8", "ignore"),
                        encoding="utf-8")
    return path


def passes_run(job, seed, folder):
    """One run of the passes study: GRU 2 x hidden, 32 streams of 64, Adam at the rule's
    rate annealed to 0 over the run, 8 evaluations; returns its row."""
    text, kb, hidden, reg, passes = job
    corpus = slice_of(text, kb, folder)
    chars = len(corpus.read_text(encoding="utf-8"))
    steps = max(8, math.ceil(passes * chars * 0.9 / (32 * 64)))
    out = Path(folder) / f"{text}-{kb}-{hidden}-{reg}-{passes}-{seed}"
    lr = f"{sizing.learning_rate(hidden):g}"  # the rule's rate for the width
    overrides = (f"cell=gru layers=2 hidden={hidden} lr={lr} batch_size=32 seq_len=64 "
                 f"eval_every={max(1, steps // 8)} {REGULARISATION[reg]}")
    r = run(out, overrides, ["--max-steps", str(steps)], seed, corpus, None, ["--threads", "1"])
    return dict(text=text, kb=kb, hidden=hidden, regularisation=reg, passes=passes,
                seed=seed, lr=lr, updates=steps, best=f"{r['best']:.4f}",
                at=r["at"], train_loss=f"{r['train_loss']:.4f}")


def passes_study(args, root):
    done = set()
    if args.csv.exists():
        with open(args.csv, newline="") as f:
            done = {tuple(r[k] for k in FIELDS[:7]) for r in csv.DictReader(f)}
    else:
        args.csv.write_text(",".join(FIELDS) + "\n")
    todo = [(job, seed) for job in passes_jobs() for seed in args.seeds
            if tuple(map(str, job + (seed, f"{sizing.learning_rate(job[2]):g}"))) not in done]
    if args.smoke:
        todo = [((TEXTS[0], 100, 16, "mid", 1), args.seeds[0])]
    for text, kb in {(job[0], job[1]) for job, _ in todo}:  # before the runs that read them
        slice_of(text, kb, root)
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        for row in pool.map(lambda js: passes_run(js[0], js[1], root), todo):
            with open(args.csv, "a") as f:
                f.write(",".join(str(row[k]) for k in FIELDS) + "\n")
            print(" ".join(f"{k}={row[k]}" for k in FIELDS), flush=True)


def regrets(rows):
    """{(text, kb, passes, hidden, lr): the rule's regret} for each cell of the passes study
    measured at the rule's rate, at two levels or more and FEWEST_UPDATES updates or more:
    the seeds' mean best loss at the strength the rule gives the cell (straight lines
    between the levels measured), less the best level's. A cell whose rule lies outside its
    levels (the 128s' none was not run) says nothing of the rule, and is left out."""
    cells = {}
    for r in rows:
        if float(r["lr"]) == sizing.learning_rate(int(r["hidden"])) and \
                int(r["updates"]) >= FEWEST_UPDATES:
            key = (r["text"], int(r["kb"]), int(r["passes"]), int(r["hidden"]), r["lr"])
            level = STRENGTH_OF[r["regularisation"]]
            cells.setdefault(key, {}).setdefault(level, []).append(float(r["best"]))
    out = {}
    for key, levels in cells.items():
        if len(levels) >= 2:
            at = sorted(levels)
            means = [statistics.mean(levels[lv]) for lv in at]
            rule = sizing.strength(passes=key[2], hidden=key[3])
            if at[0] <= rule <= at[-1]:
                out[key] = float(np.interp(rule, at, means)) - min(means)
    return out


def passes_table(path):
    """The study's CSV as a table: for each slice, model and budget in passes, the mean
    best validation loss of the seeds at each regularisation level (and the seeds' spread),
    the best level in bold."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    groups = {}
    for r in rows:
        key = (r["text"], int(r["kb"]), int(r["passes"]), int(r["hidden"]), r["lr"])
        groups.setdefault(key, {}).setdefault(r["regularisation"], []).append(float(r["best"]))
    levels = list(REGULARISATION)
    print("Best validation loss in nats/char, the mean of the seeds ± half their spread, at "
          "each regularisation level (" + "; ".join(f"{k}: {v}" for k, v in REGULARISATION.items())
          + "); updates of 32 streams of 64.\n")
    print("| text | KB | passes | GRU 2 x | lr | updates | " + " | ".join(levels) +
          " | the rule's regret |")
    print("|---|---|---|---|---|---|" + "---|" * (len(levels) + 1))
    regret = regrets(rows)
    updates = {(r["text"], int(r["kb"]), int(r["passes"])): int(r["updates"]) for r in rows}
    for key in sorted(groups):
        means = {lv: statistics.mean(v) for lv, v in groups[key].items()}
        best = min(means, key=means.get)
        cells = []
        for lv in levels:
            if lv not in means:
                cells.append("")
                continue
            v = groups[key][lv]
            text = f"{means[lv]:.4f} ±{(max(v) - min(v)) / 2:.3f}" + ("" if len(v) > 1 else " (1 seed)")
            cells.append(f"**{text}**" if lv == best and len(means) > 1 else text)
        rule = regret.get(key)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {updates[key[:3]]:,} | "
              + " | ".join(cells) + f" | {'' if rule is None else f'{rule:.4f}'} |")
    if regret:  # a table of one level a cell (the smoke's) has none
        print(f"\nThe rule's regret (its strength's loss, between the levels measured, less "
              f"the best level's; cells of {FEWEST_UPDATES} updates or more): mean "
              f"{statistics.mean(regret.values()):.4f}, most {max(regret.values()):.4f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--time", default="5m", help="the budget of each run [5m]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", action="append", choices=list(SETTINGS))
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--init", action="store_true", help="the initialisation study")
    parser.add_argument("--steps", type=int, default=2000, help="updates per run (--init)")
    parser.add_argument("--passes", action="store_true",
                        help="the passes study: slices x budgets in passes (issue 21)")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "passes.csv",
                        help="where the passes study's rows go [benchmarks/passes.csv]")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (--passes)")
    parser.add_argument("--passes-table", type=Path, metavar="CSV",
                        help="print the passes study's table from its CSV")
    parser.add_argument("--smoke", action="store_true",
                        help="the first row of each study, one seed, 3 s or 8 updates: that "
                             "it runs (CI); no figures")
    args = parser.parse_args()
    if args.smoke:
        args.time, args.seeds, args.steps = "3s", args.seeds[:1], 8
        args.only = args.only or [next(iter(SETTINGS))]
    if not CORPUS.exists():
        raise SystemExit(f"{CORPUS} is absent")
    if args.passes_table:
        passes_table(args.passes_table)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.passes:
            if args.smoke:
                args.csv = Path(tmp) / "passes.csv"
            passes_study(args, args.keep or tmp)
            if args.smoke:
                passes_table(args.csv)
        else:
            (init_study if args.init else budget_sweep)(args, args.keep or tmp)
    if args.smoke:
        print("smoke run: the study ran; its figures are not measurements")


if __name__ == "__main__":
    main()
