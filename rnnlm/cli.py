"""The command line: each command parses, calls the library once, and prints.

Generated text goes to stdout; progress, logs and errors to stderr.
"""
import contextlib
import math
import os
import signal
import sys
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from rnnlm import RnnlmError, __version__
from rnnlm import checkpoint, config, data, evaluate as evaluate_lib, gradcheck as gradcheck_lib
from rnnlm import rundir
from rnnlm import sample as sample_lib
from rnnlm.fast import kernels
from rnnlm.params import CELLS
from rnnlm.train import Eval, RolledBack, Step, Stopped, train as train_loop


class Group(click.Group):
    """Turns the library's errors into one line on stderr and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RnnlmError as e:
            raise click.ClickException(str(e)) from None
        except MemoryError:
            raise click.ClickException("out of memory: try a smaller model (hidden, layers) "
                                       "or batch_size") from None
        except KeyboardInterrupt:
            log("interrupted")
            sys.exit(130)


SAMPLE_CHARS_FOR_NUMBA = 10_000  # where the 2-layer LSTM repays Numba's 0.5 s load


def _threads(ctx, param, value):
    """--threads N: set by rnnlm.__main__ before NumPy loaded; where the command line runs
    inside a process that had already loaded it, through threadpoolctl if it is there."""
    if value is None or os.environ.get("OPENBLAS_NUM_THREADS") == str(value):
        return value
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise click.BadParameter("takes effect only where rnnlm starts the process: run it "
                                 "as the rnnlm command or python -m rnnlm") from None
    threadpool_limits(value)
    return value


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), callback=_threads, expose_value=False,
    help="Threads for the matrix products [default: every core, the fastest on an idle "
         "machine; fewer where other jobs keep cores busy: README].")


def log(message):
    click.echo(message, err=True)


def bits(nats):
    return nats / math.log(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnlm")
def cli():
    """Character-level recurrent language models, trained by truncated BPTT in NumPy."""


@cli.command()
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML file of settings (see configs/).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override one setting; repeatable. Wins over --config.")
@click.option("--out", type=click.Path(path_type=str),
              help="Run directory [default: runs/<corpus name>, numbered if taken; with "
                   "--resume, the checkpoint's directory].")
@click.option("--resume", type=click.Path(path_type=Path), metavar="RUN_DIR|CKPT",
              help="Continue exactly where a run stopped (its last.npz, or the given "
                   "checkpoint). CORPUS defaults to the run's own.")
@click.option("--seed", type=int, help="Shortcut for --set seed=N.")
@click.option("--max-steps", type=int, help="Shortcut for --set max_steps=N.")
@click.option("--encoding", help="Shortcut for --set encoding=NAME (default utf-8).")
@click.option("--engine", type=click.Choice(config.ENGINES),
              help="Shortcut for --set engine=NAME: fast (default), or textbook.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no log.")
@click.option("--ignore-memory", is_flag=True,
              help="Train even where the memory estimate exceeds what is available.")
@threads_option
def train(corpus, config_file, assignments, out, resume, seed, max_steps, encoding, engine,
          quiet, ignore_memory):
    """Train a model on CORPUS, a text file (default: a built-in corpus).

    Ctrl-C (or SIGTERM) saves last.npz and exits; --resume continues from it.

    \b
    Examples:
      rnnlm train corpus.txt --config configs/shakespeare.yaml --set hidden=512
      rnnlm train --resume runs/corpus --max-steps 20000
    """
    flags = dict(seed=seed, max_steps=max_steps, encoding=encoding, engine=engine)
    if out is not None:
        if not out.strip():  # Path("") would be the current directory
            raise RnnlmError("--out must name a directory")
        out = Path(out)
    ckpt, metrics_from = None, None
    if resume is not None:
        ckpt_path = resume / "last.npz" if resume.is_dir() else resume
        ckpt = _load_checkpoint(ckpt_path)
        saved = config.from_dict(ckpt.meta["config"], f"checkpoint {ckpt_path}: ")
        cfg = config.build(base=saved, file=config_file, assignments=assignments, **flags)
        config.check_resumable(saved, cfg)
        if corpus is None:
            corpus = _corpus_of(ckpt, ckpt_path)
        out, derived = rundir.for_resume(ckpt_path, ckpt.meta["step"], out)
        if derived:
            log(f"{ckpt_path} (step {ckpt.meta['step']}) is not the newest checkpoint of its "
                f"run: continuing in {out}, so that the newer one stays")
        if Path(out).resolve() != ckpt_path.parent.resolve():
            metrics_from = ckpt_path.parent / "metrics.csv"
    else:
        cfg = config.build(file=config_file, assignments=assignments, **flags)
    if corpus is None:
        if not quiet:
            log(f"no corpus given: training on {data.BUILTIN_NAME} (no download)")
        vocab, ids = data.text_corpus(data.builtin_text())
        name, default_out, recorded = data.BUILTIN_NAME, Path("runs") / "stdlib", None
    else:
        vocab, ids = data.read_corpus(corpus, cfg.encoding)
        stdin = str(corpus) == "-"
        name = "standard input" if stdin else str(corpus)
        default_out = Path("runs") / ("stdin" if stdin else corpus.stem or "corpus")
        recorded = str(corpus.resolve()) if corpus.is_file() else str(corpus)
    if ckpt is None:
        out = rundir.for_new_run(out, default_out)
    if cfg.engine == "fast":
        kernels.load(notify=(lambda message: None) if quiet else log)
    signals = []
    events = train_loop(cfg, vocab, ids, out, corpus_name=name, corpus_path=recorded,
                        resume=ckpt, stop=lambda: bool(signals), metrics_from=metrics_from,
                        check_memory=not ignore_memory)
    begin = next(events)
    if not quiet:
        for line in begin.lines:
            log(line)
    with _stop_on_signals(signals):
        stopped, best = _show_progress(events, cfg, begin, quiet)
    if signals:  # the run stopped early, or had just finished and saved anyway
        saved = stopped.saved if stopped else out / "last.npz"
        log(f"{signal.Signals(signals[0]).name}: saved {saved}; continue with: "
            f"rnnlm train --resume {out}")
        sys.exit(128 + signals[0])
    if not quiet:
        where = f"best val {best.val_loss:.4f} nats/char at step {best.step}; " if best else ""
        log(f"done: {where}checkpoints in {out}")


@contextlib.contextmanager
def _stop_on_signals(signals):
    """While training: the first SIGINT or SIGTERM asks the loop to save and stop at the
    end of the current update; a second one stops at once (checkpoints stay intact)."""
    def handler(signum, frame):
        if signals:
            raise KeyboardInterrupt
        signals.append(signum)
        log(f"\n{signal.Signals(signum).name}: saving at the end of this step "
            f"(again to quit without saving)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _show_progress(events, cfg, begin, quiet):
    """Drive the training loop, showing a progress bar and evaluations on stderr.
    Returns (the Stopped event or None, the best Eval or None)."""
    bar = tqdm(total=cfg.max_steps, initial=begin.start_step, unit="step", file=sys.stderr,
               disable=quiet, dynamic_ncols=True)
    smoothed, last_val, best = None, None, None
    with bar:
        for event in events:
            if isinstance(event, Step):
                smoothed = event.loss if smoothed is None else 0.98 * smoothed + 0.02 * event.loss
                bar.update(event.step - bar.n)
                bar.set_postfix_str(f"loss {smoothed:.3f}"
                                    + (f" val {last_val:.3f}" if last_val is not None else "")
                                    + f" {event.chars_per_sec:,.0f} chars/s", refresh=False)
            elif isinstance(event, Eval):
                last_val = event.val_loss
                best = event if event.best else best
                if not quiet:
                    val = ("no validation split" if event.val_loss is None else
                           f"val {event.val_loss:.4f} nats/char, "
                           f"{bits(event.val_loss):.4f} bits/char"
                           + (" (best)" if event.best else ""))
                    bar.write(f"step {event.step}: {val}; saved "
                              + ", ".join(p.name for p in event.saved), file=sys.stderr)
                    bar.write("    " + event.sample.replace("\n", "\n    "), file=sys.stderr)
            elif isinstance(event, RolledBack):
                bar.write(f"step {event.step} diverged: rolled back to step {event.to_step}, "
                          f"learning rate now x{event.lr_scale:g}", file=sys.stderr)
                bar.n = event.to_step
            elif isinstance(event, Stopped):
                return event, best
    return None, best


def _load_checkpoint(path):
    """checkpoint.load, saying what loading changed (a dtype converted)."""
    ckpt = checkpoint.load(path)
    for note in ckpt.notes:
        log(note)
    return ckpt


def _corpus_of(ckpt, ckpt_path):
    """The corpus a resumed run was trained on, where it can be read again."""
    recorded = ckpt.meta.get("corpus")
    if recorded is None:
        return None  # the built-in corpus
    path = Path(recorded)
    if not path.is_file():
        raise RnnlmError(f"{ckpt_path} was trained on {recorded}, which cannot be read again; "
                         f"give the corpus: rnnlm train CORPUS --resume {ckpt_path}")
    return path


@cli.command()
@click.option("--ckpt", required=True, type=click.Path(path_type=Path),
              help="Checkpoint (.npz) to sample from.")
@click.option("--prime", default="", help="Text to start from; printed first.")
@click.option("-n", "--length", default=500, show_default=True,
              type=click.IntRange(min=0), help="Characters to generate (the prime not counted).")
@click.option("--temperature", default=1.0, show_default=True, type=float,
              help="Divides the logits: < 1 is more conservative, > 1 wilder. Must be > 0.")
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(min=0),
              help="Draw only from the K most likely characters (0: all).")
@click.option("--argmax", is_flag=True, help="Always take the most likely character.")
@click.option("--seed", type=click.IntRange(min=0), help="Same seed, same text [default: random].")
@click.option("--engine", default="fast", show_default=True, type=click.Choice(config.ENGINES),
              help="fast, or textbook: the same numbers, one readable step at a time.")
@threads_option
def sample(ckpt, prime, length, temperature, top_k, argmax, seed, engine):
    """Generate text from a checkpoint, streamed to stdout.

    \b
    Example:
      rnnlm sample --ckpt runs/shk/best.npz --prime "ROMEO:" -n 500 --temperature 0.8
    """
    if not temperature > 0 or not math.isfinite(temperature):
        raise RnnlmError(f"--temperature must be a number > 0, got {temperature}")
    model = _load_checkpoint(ckpt)
    if engine == "fast":  # Numba's load (0.5 s) is repaid only by long samples: README
        kernels.load(notify=log, prefer="numpy" if length < SAMPLE_CHARS_FOR_NUMBA else None)
    rng = np.random.default_rng(seed)
    chars = sample_lib.generate(model.params, model.spec, model.vocab, rng, prime, length,
                                temperature, top_k, argmax, engine)
    first = next(chars, "")  # raises on a bad prime before anything is printed
    out = sys.stdout
    try:
        out.write(prime + first)
        out.flush()
        for ch in chars:
            out.write(ch)
            out.flush()
        out.write("\n")
        out.flush()
    except BrokenPipeError:  # e.g. `rnnlm sample ... | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@cli.command(name="eval")
@click.option("--ckpt", required=True, type=click.Path(path_type=Path),
              help="Checkpoint (.npz) to evaluate.")
@click.argument("textfile", type=click.Path(path_type=Path))
@click.option("--skip-unknown", is_flag=True,
              help="Skip characters outside the vocabulary (and count them) instead of failing.")
@click.option("--encoding", default="utf-8", show_default=True, help="Of TEXTFILE.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Contiguous streams the file is cut into.")
@click.option("--engine", default="fast", show_default=True, type=click.Choice(config.ENGINES),
              help="fast, or textbook: the same numbers, one readable step at a time.")
@threads_option
def eval_(ckpt, textfile, skip_unknown, encoding, batch_size, engine):
    """Loss of a checkpoint on TEXTFILE: nats/char, bits/char and perplexity.

    \b
    Example:
      rnnlm eval --ckpt runs/shk/best.npz heldout.txt
    """
    model = _load_checkpoint(ckpt)
    ids, skipped = data.encode_file(textfile, model.vocab, encoding, skip_unknown)
    if engine == "fast":
        kernels.load(notify=log)
    nats = evaluate_lib.evaluate(model.params, model.spec, ids, batch_size, engine=engine)
    click.echo(f"{textfile}: {len(ids):,} characters, {nats:.4f} nats/char, "
               f"{bits(nats):.4f} bits/char, perplexity {math.exp(nats):.3f}"
               + (f"; {skipped:,} unknown characters skipped" if skip_unknown else ""))


@cli.command(name="gradcheck")
@click.option("--cell", "cells", multiple=True, type=click.Choice(CELLS),
              help="Cell(s) to check [default: all].")
@click.option("--layers", "layer_counts", multiple=True, type=click.IntRange(min=1),
              help="Depth(s) to check [default: 1 and 2].")
@click.option("--dropout", "dropouts", multiple=True, type=click.FloatRange(0, 1, max_open=True),
              help="Dropout rate(s), with a fixed mask [default: 0 and 0.3].")
@click.option("--hidden", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--vocab", default=7, show_default=True, type=click.IntRange(min=1))
@click.option("--seq-len", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--engine", "engine_names", multiple=True, type=click.Choice(config.ENGINES),
              help="Engine(s) to check [default: fast].")
def gradcheck(cells, layer_counts, dropouts, hidden, vocab, seq_len, batch, seed, engine_names):
    """Check every analytic gradient against centred finite differences (float64).

    Prints one row per parameter tensor; exits 1 if any relative error exceeds the
    tolerance.

    \b
    Example:
      rnnlm gradcheck --cell lstm --layers 2
    """
    rows = []
    for engine in engine_names or ("fast",):
        rows += gradcheck_lib.check_all(cells or CELLS, layer_counts or (1, 2),
                                        dropouts or (0.0, 0.3), hidden=hidden, vocab=vocab,
                                        seq_len=seq_len, batch=batch, seed=seed, engine=engine)
    click.echo(f"{'case':<27} {'parameter':<18} {'shape':<10} {'max rel error':>13}")
    for r in rows:
        shape = "x".join(map(str, r.shape))
        click.echo(f"{r.case:<27} {r.name:<18} {shape:<10} {r.max_rel_error:>13.2e}"
                   + ("" if r.ok else "  FAIL"))
    failed = [r for r in rows if not r.ok]
    click.echo(f"{len(rows) - len(failed)} of {len(rows)} tensors within tolerance "
               f"{gradcheck_lib.TOLERANCE:g}" + (f"; {len(failed)} FAILED" if failed else ""))
    if failed:
        sys.exit(1)


def main():
    cli(prog_name="rnnlm")
