"""Ideas for recurrent LMs measured against the rule without them (issue 32).

    python benchmarks/tried.py --idea none --seed 1 --set windows=fixed   # and --seed 2 3 4
    python benchmarks/tried.py --idea none --seed 1                       # windows shifted
    python benchmarks/tried.py --idea average --seed 1 --set windows=fixed  # and --seed 2
    python benchmarks/tried.py --idea average --seed 1 --set windows=fixed --set min_lr=4e-4

Each is one real training run of the model the rule chooses for 5 minutes of tiny
Shakespeare here (GRU 2 x 320, lr 4e-3, no dropout), its budget in updates (3,078, what 5
minutes bought) so that a busy machine cannot move the result and two runs can share it
(OPENBLAS_NUM_THREADS=1 each; threads change the speed only; --set hidden=512 ... for the
15-minute model). At every evaluation it
prints the validation loss of the weights as trained, and, for --idea average, of
exponential moving averages of them (Polyak averaging; AWD-LSTM's averaged SGD is its
uniform cousin) at several decays at once, each warmed up as min(decay, (1 + t) / (10 + t))
so that the first weights do not linger.

Kept: windows cut elsewhere each pass (`windows: shifted`, rnnlm/io/data.py), the default.
Not kept: the averages, which the library does not have, so this script wraps two of its
private functions to try them (training._update, which the averages follow, and
training._evaluate_and_save, after which they are scored): a harness for the experiment,
not an interface. What each measured: docs/results.md, "Ideas measured".
"""
import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
sys.path.insert(0, str(ROOT))

from rnnlm import evaluate  # noqa: E402 (the checkout's, whatever is installed)
from rnnlm.run import training  # noqa: E402
from rnnlm.run.start import start  # noqa: E402
from rnnlm.run.training import Eval  # noqa: E402

MODEL = dict(cell="gru", layers=2, hidden=320, lr=4e-3, dropout=0.0, weight_drop=0.0)
UPDATES = 3078  # what 5 minutes bought the rule's GRU 2 x 320 here (docs/results.md)
DECAYS = (0.99, 0.995, 0.998, 0.999)


class Average:
    """Moving averages of a run's weights, one per decay, updated after every update."""

    def __init__(self):
        self.averages = {d: None for d in DECAYS}

    def add(self, params, step):
        for decay in DECAYS:
            weight = min(decay, (1 + step) / (10 + step))
            if self.averages[decay] is None:
                self.averages[decay] = {n: p.copy() for n, p in params.items()}
                continue
            for name, p in params.items():
                average = self.averages[decay][name]
                average *= weight
                average += (1 - weight) * p

    def columns(self, run, val_ids):
        return {f"average {d}": evaluate.evaluate(a, run.spec, val_ids, run.cfg.batch_size)
                for d, a in self.averages.items()}


def averaging():
    """Wrap training._update so that every update is followed by the averages'."""
    average, update = Average(), training._update

    def averaged_update(run, *args):
        out = update(run, *args)
        if out[4] is None:  # not diverged: the update was made
            average.add(run.params, run.step)
        return out

    training._update = averaged_update
    return average


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idea", choices=("average", "none"), required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--updates", type=int, default=UPDATES)
    parser.add_argument("--evaluations", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another setting, as rnnlm train --set")
    parser.add_argument("--smoke", action="store_true", help="a few updates: runs, no figures")
    args = parser.parse_args()
    given = {a.split("=", 1)[0].strip() for a in args.set}  # --set wins over MODEL
    model = {k: v for k, v in MODEL.items() if k not in given}
    updates, text = args.updates, str(CORPUS)
    if args.smoke:
        model.update(hidden=32)
        updates, args.evaluations = 12, 2
    average = averaging() if args.idea == "average" else None
    val = {}
    evaluate_and_save = training._evaluate_and_save

    def evaluated(run, val_ids, *a, **k):
        event = evaluate_and_save(run, val_ids, *a, **k)
        val[run.step] = average.columns(run, val_ids) if average else {}
        return event

    training._evaluate_and_save = evaluated
    print(f"{args.idea}: {model}, {' '.join(args.set)}, {updates} updates, seed {args.seed}")
    with tempfile.TemporaryDirectory() as out:
        run = start(text, Path(out) / "run", max_steps=updates, seed=args.seed,
                    eval_every=max(updates // args.evaluations, 1),
                    assignments=tuple(args.set), **model)
        for event in run.events:
            if isinstance(event, Eval):
                columns = "  ".join(f"{k} {v:.4f}" for k, v in val[event.step].items())
                print(f"step {event.step:5d}  val nats/char: as trained {event.val_loss:.4f}"
                      f"  {columns}".rstrip(), flush=True)
    if args.smoke:
        print("smoke run: its figures are not measurements")


if __name__ == "__main__":
    main()
