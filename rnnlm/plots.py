"""Learning curves of runs, as a PNG: the one place rnnlm imports Matplotlib (the extra
rnnlm[plot]), always with its headless Agg backend, so no window ever opens.

Two panels, training loss (smoothed) and validation loss in nats/char, against updates and
against training time, several runs overlaid and labelled with their directory names, each
run's best validation point marked.
"""
import contextlib
import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.io import outputs, rundir
from rnnlm.params import CELLS

SMOOTHING = 0.6  # exponential smoothing of the training loss rows (one per log_every)


def available():
    """Whether Matplotlib imports (training draws curves.png only then)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def default_target(run_dirs):
    """Where `rnnlm plot` draws without -o: RUN_DIR/curves.png for one run,
    curves-<names>.png here for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / rundir.CURVES
    return Path("curves-" + "-vs-".join(Path(p).resolve().name for p in run_dirs) + ".png")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RnnlmError("plotting needs Matplotlib: pip install 'rnnlm[plot]'") from None
    matplotlib.use("Agg")  # headless: files only, never a window
    import matplotlib.pyplot as plt
    return plt


def read_metrics(run_dir):
    """A run's metrics.csv as columns: step, train, val (None where not measured), seconds."""
    path = Path(run_dir) / rundir.METRICS
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise RnnlmError(f"{run_dir} has no {rundir.METRICS}; is it an rnnlm run directory?") from None
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise RnnlmError(f"cannot read {path}: {e}") from None
    if not rows:
        raise RnnlmError(f"{path} has no rows yet: nothing to draw")
    try:
        return {"step": [int(r["step"]) for r in rows],
                "train": [float(r["train_loss"]) for r in rows],
                "val": [float(r["val_loss"]) if r["val_loss"] and
                        math.isfinite(float(r["val_loss"])) else None for r in rows],
                "seconds": [float(r["elapsed_s"]) for r in rows]}
    except (KeyError, TypeError, ValueError):
        raise RnnlmError(f"{path} is not an rnnlm metrics file") from None


def smooth(values, weight=SMOOTHING):
    """Exponential smoothing; a NaN or infinite value (a diverging step) is left out of the
    level rather than ending the curve."""
    out, level = [], None
    for v in values:
        if math.isfinite(v):
            level = v if level is None else weight * level + (1 - weight) * v
        out.append(level if level is not None else math.nan)
    return out


CURVES_MARK = "rnnlm plot"  # the PNG's Software entry: how rnnlm knows its own picture


def is_curves_picture(path):
    """An earlier picture of `plot`, or a run directory's own curves.png."""
    path = Path(path)
    return (CURVES_MARK.encode() in outputs.head(path)
            or (path.name == rundir.CURVES and rundir.is_run(path.parent)))


def check_png_target(out_path, what, is_ours):
    """RnnlmError unless out_path names a .png that may be written (outputs.check_target).
    Returns the file to write."""
    if str(out_path) not in ("", "-") and Path(out_path).suffix.lower() != ".png":
        raise RnnlmError(f"{out_path}: the {what} is a PNG; name a .png file")
    return outputs.check_target(out_path, what, is_ours)


@contextlib.contextmanager
def _quietly():
    """Matplotlib's warnings (a glyph missing from its font, for a run named in Chinese)
    silenced: the library never prints, and a picture with a box for a glyph is no error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _save(fig, plt, out_path, mark):
    """The figure laid out and saved as a PNG marked as rnnlm's, written atomically; the
    figure closed."""
    buffer = io.BytesIO()
    try:
        with _quietly():  # laying out and drawing are where glyphs go missing
            fig.tight_layout()
            fig.savefig(buffer, format="png", dpi=80 if mark == CURVES_MARK else 90,
                        metadata={"Software": mark})
    finally:
        plt.close(fig)
    outputs.write_atomically(out_path, buffer.getvalue())


def curves(run_dirs, out_path, log_x=False, labels=None):
    """Draw the runs' learning curves into out_path (PNG): never over a file that is not
    an earlier picture of rnnlm's. Returns out_path."""
    plt = _pyplot()
    out_path = check_png_target(out_path, "learning-curves picture", is_curves_picture)
    names = labels or [Path(d).resolve().name for d in run_dirs]
    runs = [(outputs.readable_name(name), read_metrics(d)) for name, d in zip(names, run_dirs)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for k, (label, m) in enumerate(runs):
        color = f"C{k % 10}"
        for ax, x in zip(axes, (m["step"], m["seconds"])):
            ax.plot(x, smooth(m["train"]), color=color, alpha=0.45, linewidth=1,
                    label=f"{label} train" if ax is axes[0] else None)
            measured = [(xi, v) for xi, v in zip(x, m["val"]) if v is not None]
            if measured:
                xs, vs = zip(*measured)
                ax.plot(xs, vs, color=color, marker="o", markersize=3, linewidth=1.6,
                        label=f"{label} val" if ax is axes[0] else None)
                best = min(range(len(vs)), key=vs.__getitem__)
                ax.plot(xs[best], vs[best], marker="*", markersize=13, color=color,
                        markeredgecolor="black", zorder=5)
                if ax is axes[0]:
                    ax.annotate(f"{vs[best]:.3f}", (xs[best], vs[best]), fontsize=8,
                                textcoords="offset points", xytext=(4, 6))
    axes[0].set_xlabel("updates")
    axes[1].set_xlabel("training time (s)")
    axes[0].set_ylabel("loss (nats/char)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if log_x:
            ax.set_xscale("log")
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle("training loss (smoothed) and validation loss; * the best", fontsize=9)
    _save(fig, plt, out_path, CURVES_MARK)
    return Path(out_path)


GRADFLOW_MARK = "rnnlm gradflow"  # the PNG's Software entry: how rnnlm knows its own picture
GRADFLOW_FLOOR = 1e-16  # the picture's lowest ratio: below it, a gradient is gone for float64


def is_gradflow_picture(path):
    return GRADFLOW_MARK.encode() in outputs.head(path)


def check_gradflow_target(out_path):
    """RnnlmError unless out_path may take a gradflow picture (Matplotlib installed; a new
    file, or an earlier gradflow picture)."""
    _pyplot()
    return check_png_target(out_path, "gradflow picture", is_gradflow_picture)


def gradflow(flows, out_path):
    """Draw gradflow.measure's results into out_path (PNG): for each model, the gradient's
    norm at the top layer at distance k relative to k = 0, on a log scale down to
    GRADFLOW_FLOOR, a colour per cell (trained models solid, initialised ones dashed), the
    training window (seq_len) marked where truncation stops it. Returns out_path."""
    out_path = check_gradflow_target(out_path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.4))
    colors = {cell: f"C{k}" for k, cell in enumerate(CELLS)}  # a colour per cell
    lowest = 1.0
    for flow in flows:
        top = [r if r > 0 else float("nan") for r in flow.ratios[:, -1]]  # log scale
        lowest = min(lowest, np.nanmin(top))
        ax.plot(range(len(top)), top, color=colors[flow.cell],
                label=outputs.readable_name(flow.label),
                linewidth=1.8 if flow.trained else 1.2, linestyle="-" if flow.trained else "--")
    for seq_len in sorted({f.seq_len for f in flows}):
        ax.axvline(seq_len, color="gray", linestyle="--", linewidth=1)
        ax.annotate(f"truncation: seq_len = {seq_len}", (seq_len, 0.98), rotation=90,
                    xycoords=("data", "axes fraction"), fontsize=8, color="gray",
                    xytext=(-10, 0), textcoords="offset points", va="top")
    ax.axhline(1e-3, color="black", linewidth=0.6, alpha=0.4)
    ax.set_yscale("log")
    ax.set_ylim(max(lowest, GRADFLOW_FLOOR) / 3, 2)
    ax.set_xlabel("distance k: steps between the loss and the state")
    ax.set_ylabel("|dL_t / ds_(t-k)|, relative to k = 0")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("how far back the gradient reaches: the top layer, mean over positions in "
                 "the text", fontsize=9)
    _save(fig, plt, out_path, GRADFLOW_MARK)
    return Path(out_path)
