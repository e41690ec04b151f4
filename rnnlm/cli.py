"""The command line: each command parses, calls the library once, and prints.

Generated text goes to stdout; progress, logs and errors to stderr.
"""
import contextlib
import json
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from rnnlm import api, arguments, config, engines, evaluate, export as export_lib, inspection
from rnnlm import gradcheck as gradcheck_lib, gradflow as gradflow_lib, plots, sample as sample_lib
from rnnlm.errors import RnnlmError
from rnnlm.io import rundir
from rnnlm.params import CELLS
from rnnlm.run import training, workers as workers_lib
from rnnlm.run.training import Eval, Finished, RolledBack, Step, Stopped
from rnnlm.version import __version__


class Group(click.Group):
    """Turns the library's errors into one line on stderr and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RnnlmError as e:
            group = workers_lib.current()
            if group is not None and group.size > 1:  # one worker's error ends the job
                log(workers_lib.error_line(group, e))
                sys.stderr.flush()
                group.abort(1)
            raise click.ClickException(str(e)) from None
        except MemoryError:
            raise click.ClickException("out of memory: try a smaller model (hidden, layers) "
                                       "or batch_size") from None
        except KeyboardInterrupt:
            log("interrupted")
            sys.exit(130)


class PathType(click.Path):
    """A path; an empty one (`rnnlm train "$CORPUS"`, the variable unset) is one line
    (arguments.path), not Path(""), the current directory."""

    def convert(self, value, param, ctx):
        named = param.opts[-1] if isinstance(param, click.Option) else param.human_readable_name
        try:
            arguments.path(value, named.strip("[]."))
        except RnnlmError as e:
            raise click.ClickException(str(e)) from None
        return super().convert(value, param, ctx)


def _threads(ctx, param, value):
    """--threads N: set by rnnlm.__main__ before NumPy loaded; where the command line runs
    inside a process that had already loaded it, now."""
    if value is not None and os.environ.get("OPENBLAS_NUM_THREADS") != str(value):
        try:
            engines.limit_threads(value)
        except RnnlmError as e:
            raise click.BadParameter(str(e)) from None
    return value


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), callback=_threads, expose_value=False,
    help="Pin the matrix products' threads to N [default: training measures which count "
         "is fastest, and measures again as the machine's load changes].")


def _options(*options):
    """One decorator of several options, declared once for the commands that share them."""
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


settings_options = _options(
    click.option("--config", "config_file", type=PathType(path_type=Path),
                 help="YAML file of settings (see configs/), resolved over the defaults."),
    click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                 help="Override one setting; repeatable. Wins over --config. Every key: "
                      "rnnlm config."),
    click.option("--glob", "globs", multiple=True, metavar="PATTERN",
                 help="In directories, read only the files that match (e.g. '*.py'); "
                      "repeatable."))
checkpoint_option = click.option(
    "--ckpt", required=True, type=PathType(path_type=Path),
    help="Checkpoint (.npz), or a run directory (its best.npz).")
engine_option = click.option(
    "--engine", default="fast", show_default=True, type=click.Choice(config.ENGINES),
    help="fast, or textbook: the same numbers, one readable step at a time.")
encoding_option = click.option(
    "--encoding", help="Of TEXTFILE [default: the one the model was trained with, else "
                       "utf-8].")
text_options = _options(
    click.option("--skip-unknown", is_flag=True,
                 help="Skip characters outside the vocabulary (and count them) instead of "
                      "failing."),
    encoding_option)


def log(message):
    click.echo(message, err=True)


def _write_log(text):
    """Pass text through to stderr as it comes (the workers' progress bars)."""
    sys.stderr.write(text)
    sys.stderr.flush()


def bits(nats):
    return nats / math.log(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnlm")
def cli():
    """Character-level recurrent language models, trained by truncated BPTT in NumPy."""


@cli.command()
@click.argument("paths", nargs=-1, metavar="[CORPUS]...", type=PathType(path_type=Path))
@settings_options
@click.option("--out", type=PathType(path_type=str),
              help="Run directory [default: runs/<corpus name>, numbered if taken; with "
                   "--resume, the checkpoint's directory].")
@click.option("--resume", type=PathType(path_type=Path), metavar="RUN_DIR|CKPT",
              help="Continue exactly where a run stopped (its last.npz, or the given "
                   "checkpoint). CORPUS defaults to the run's own.")
@click.option("--init-from", type=PathType(path_type=Path), metavar="RUN_DIR|CKPT",
              help="Fine-tune: start a new run from a trained model's weights (a run's "
                   "best.npz), on CORPUS, whose new characters join the vocabulary.")
@click.option("--seed", type=int, help="Shortcut for --set seed=N.")
@click.option("--time", "duration", metavar="DURATION",
              help="Train for this long, the final evaluation included: 90s, 5m, 1h30m "
                   "(max_seconds). Alone, it lifts the step limit.")
@click.option("--max-steps", type=int,
              help="Shortcut for --set max_steps=N. Alone, it lifts the time limit.")
@click.option("--encoding", help="Shortcut for --set encoding=NAME (default utf-8).")
@click.option("--engine", type=click.Choice(config.ENGINES),
              help="Shortcut for --set engine=NAME: fast (default), or textbook.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no log.")
@click.option("--ignore-memory", is_flag=True,
              help="Train even where the memory estimate exceeds what is available.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Train one model with N processes on this machine, through MPI (pip "
                   "install 'rnnlm[mpi]'); the streams are split between them. Under "
                   "mpiexec or srun, the job's processes are the workers.")
@threads_option
def train(paths, config_file, assignments, globs, out, resume, init_from, seed, duration,
          max_steps, encoding, engine, quiet, ignore_memory, workers):
    """Train a model on CORPUS: text files, directories (walked in sorted order; hidden
    and binary files skipped), or - for standard input. Without one: a built-in corpus.

    Ctrl-C (or SIGTERM, SIGHUP) saves last.npz and exits; --resume continues from it. Every
    setting, its default and meaning: rnnlm config.

    \b
    Examples:
      rnnlm train corpus.txt --time 30m
      rnnlm train src/ --glob '*.py' --config configs/shakespeare.yaml --set hidden=512
      rnnlm train --resume runs/corpus --max-steps 20000
      rnnlm train my-play.txt --init-from runs/tinyshakespeare --time 5m
    """
    began = workers_lib.began(time.perf_counter())  # a budget counts from here, or the launcher
    if api.launches(workers, config_file, assignments, resume):  # workers run this command
        sys.exit(workers_lib.run_locally(workers, sys.argv[1:], _write_log, log))
    group = workers_lib.group()
    quiet = quiet or group.rank > 0  # worker 0 alone shows progress
    signals = []
    run = api.start(paths or None, out, config_file=config_file, assignments=assignments,
                    time=duration, resume=resume, init_from=init_from, globs=globs,
                    check_memory=not ignore_memory, stop=lambda: bool(signals),
                    notify=(lambda message: None) if quiet else log,
                    warn=log if group.rank == 0 else None, began=began,
                    seed=seed, max_steps=max_steps, encoding=encoding, engine=engine)
    cfg, out, events = run.config, run.out, run.events
    begin = next(events)
    for line in () if quiet else begin.lines:
        log(line)
    with _stop_on_signals(signals):
        end, best = _show_progress(events, cfg, begin, quiet)
    if signals:  # the run stopped early, or had just finished and saved anyway
        if group.rank == 0:
            saved = end.saved if isinstance(end, Stopped) else out / rundir.LAST
            said = "stopped" if workers_lib.relayed(signals[0]) else signal.Signals(signals[0]).name
            log(f"{said}: saved {saved}; continue with: rnnlm train --resume "
                f"{shlex.quote(str(out))}")
        sys.exit(128 + signals[0])
    if not quiet:
        where = f"best val {best.val_loss:.4f} nats/char at step {best.step}; " if best else ""
        log(f"done: {where}checkpoints in {out}")
        for warning in end.warnings if isinstance(end, Finished) else ():
            log(warning)
        log(f"sample from it: rnnlm sample --ckpt {shlex.quote(str(rundir.checkpoint_of(out)))}"
            " -n 500")


@contextlib.contextmanager
def _stop_on_signals(signals):
    """While training: the first of STOP_SIGNALS asks the loop to save and stop at the
    end of the current update; a second one stops at once (checkpoints stay intact)."""
    def handler(signum, frame):
        if signals:
            raise KeyboardInterrupt
        signals.append(signum)
        if workers_lib.group().rank == 0 and not workers_lib.relayed(signum):
            log(f"\n{signal.Signals(signum).name}: saving at the end of this step "
                f"(again to quit without saving)")

    previous = {s: signal.signal(s, handler) for s in workers_lib.STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _show_progress(events, cfg, begin, quiet):
    """Drive the training loop, showing a progress bar and evaluations on stderr.
    Returns (the Stopped or Finished event or None, the best Eval or None)."""
    by_time = cfg.max_seconds > 0 and cfg.max_steps == 0  # the bar counts what ends the run
    bar = tqdm(total=int(cfg.max_seconds) if by_time else cfg.max_steps,
               initial=0 if by_time else begin.start_step, unit="s" if by_time else "step",
               file=sys.stderr, disable=quiet, dynamic_ncols=True,
               bar_format=("{l_bar}{bar}| {n_fmt}/{total_fmt} s of the budget "
                           "[{elapsed}<{remaining}{postfix}]") if by_time else None)
    smoothed, last_val, best, shown_part, step, end = None, None, None, False, None, None

    def postfix(speed):  # the step, the smoothed loss, the last validation loss, the speed
        bar.set_postfix_str(f"step {step.step} loss {smoothed:.3f}"
                            + (f" val {last_val:.3f}" if last_val is not None else "")
                            + f" {speed:,.0f} chars/s"
                            + (f" threads {step.threads}" if step.threads else ""), refresh=False)

    with bar:
        for event in events:
            if isinstance(event, Step):
                step = event
                smoothed = event.loss if smoothed is None else 0.98 * smoothed + 0.02 * event.loss
                bar.update(min(int(event.elapsed), bar.total) - bar.n if by_time
                           else event.step - bar.n)
                postfix(event.chars_per_sec)
                if event.change and not quiet:
                    bar.write(event.change.describe(cfg.batch_size * cfg.seq_len), file=sys.stderr)
            elif isinstance(event, Eval):
                last_val = event.val_loss
                best = event if event.best else best
                if step is not None:  # the new validation loss shows at once
                    postfix(step.chars_per_sec)
                if event.warning:  # drawing curves.png failed: said once
                    bar.write(event.warning, file=sys.stderr)
                if not quiet:
                    part = ("" if event.val_chars >= event.val_total or shown_part else
                            f" on the first {event.val_chars:,} of {event.val_total:,} "
                            f"validation characters (what the time budget allows)")
                    shown_part = shown_part or bool(part)
                    val = ("no validation split" if event.val_loss is None else
                           f"val {event.val_loss:.4f} nats/char, "
                           f"{bits(event.val_loss):.4f} bits/char{part}"
                           + (" (best)" if event.best else ""))
                    bar.write(f"step {event.step}: {val}; saved "
                              + ", ".join(p.name for p in event.saved), file=sys.stderr)
                    bar.write("    " + sample_lib.printable(event.sample).replace("\n", "\n    "),
                              file=sys.stderr)
            elif isinstance(event, RolledBack):
                bar.write(f"step {event.step} diverged: rolled back to step {event.to_step}, "
                          f"learning rate now x{event.lr_scale:g}", file=sys.stderr)
                bar.n = bar.n if by_time else event.to_step
            elif isinstance(event, Stopped):
                return event, best
            elif isinstance(event, Finished):  # the last event: the run ends after it
                end = event
    return end, best


SAMPLES_SEPARATOR = "-" * 40 + "\n"  # between the samples of --num-samples


@cli.command()
@checkpoint_option
@click.option("--prime", help="Text to start from; printed first.")
@click.option("--prime-file", type=PathType(path_type=Path),
              help="Start from this file's text (UTF-8) instead.")
@click.option("-n", "--length", default=500, show_default=True,
              type=click.IntRange(min=0), help="Characters to generate (the prime not counted).")
@click.option("--num-samples", default=1, show_default=True, type=click.IntRange(min=1),
              help="Samples to draw, separated by a line of dashes; sample k (from 1) is the "
                   "one seed [N, k] gives, the first the one --seed N alone gives.")
@click.option("--temperature", default=1.0, show_default=True, type=float,
              help="Divides the logits: < 1 is more conservative, > 1 wilder. Must be > 0.")
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(min=0),
              help="Draw only from the K most likely characters (0: all).")
@click.option("--top-p", default=1.0, show_default=True, type=float,
              help="Nucleus sampling: draw only from the likeliest characters whose "
                   "probabilities add up to P, after --temperature and --top-k (1: all).")
@click.option("--argmax", is_flag=True, help="Always take the most likely character.")
@click.option("--seed", type=click.IntRange(min=0), help="Same seed, same text [default: random].")
@engine_option
@threads_option
def sample(ckpt, prime, prime_file, length, num_samples, temperature, top_k, top_p, argmax,
           seed, engine):
    """Generate text from a checkpoint, streamed to stdout.

    \b
    Examples:
      rnnlm sample --ckpt runs/shk/best.npz --prime "ROMEO:" -n 500 --temperature 0.8
      rnnlm sample --ckpt runs/shk --prime-file opening.txt --top-p 0.9 --num-samples 3
    """
    sample_lib.check_options(temperature, top_k, top_p)  # before the model loads (and again)
    if prime is not None and prime_file is not None:
        raise RnnlmError("give --prime or --prime-file, not both")
    if prime_file is not None:
        prime = sample_lib.read_prime(prime_file)
    prime = prime or ""
    model = api.load(ckpt, engine, notify=log).ready(length * num_samples)
    out = sys.stdout
    try:
        for k in range(num_samples):
            chars = model.chars(prime, length, temperature, top_k, top_p,
                                seed if k == 0 or seed is None else [seed, k], argmax)
            first = next(chars, "")  # (a bad prime was refused before anything printed)
            out.write((SAMPLES_SEPARATOR if k else "") + prime + first)
            out.flush()
            for ch in chars:
                out.write(ch)
                out.flush()
            out.write("\n")
            out.flush()
    except BrokenPipeError:  # e.g. `rnnlm sample ... | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@cli.command()
@click.argument("target", metavar="CKPT_OR_RUN_DIR", type=PathType(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
def info(target, as_json):
    """What a checkpoint holds: the model, its vocabulary, how far it trained, its
    configuration and corpus. A run directory means its best.npz.

    \b
    Examples:
      rnnlm info runs/shk
      rnnlm info runs/shk/last.npz --json
    """
    facts = api.load(target, notify=log).info
    if as_json:
        click.echo(json.dumps(facts, indent=2, ensure_ascii=False))
        return
    for key, value in facts.items():
        click.echo(f"{key}:" + "".join(f"\n  {k}: {v}" for k, v in value.items())
                   if isinstance(value, dict) else f"{key}: {value}")


@cli.command(name="config")
@click.argument("paths", nargs=-1, metavar="[CORPUS]...", type=PathType(path_type=Path))
@settings_options
@click.option("--time", "duration", metavar="DURATION", help="The budget, as for train.")
@click.option("--max-steps", type=int, help="The budget in updates, as for train.")
@threads_option
def config_(paths, config_file, assignments, globs, duration, max_steps):
    """Every setting: its value (resolved from the defaults, --config and --set), its
    default where they differ, and its meaning. With a CORPUS (or --time), the settings a
    new run on it would train with: the model the rule chooses for the text and the
    budget on this machine (measured), and why, in one line.

    \b
    Examples:
      rnnlm config
      rnnlm config notes.txt --time 3m
      rnnlm config --config configs/shakespeare.yaml --set hidden=512
    """
    if paths or duration or max_steps:
        cfg, why = api.choose(paths or None, config_file=config_file, assignments=assignments,
                              time=duration, globs=globs, max_steps=max_steps, notify=log)
        if why is None:
            log("every setting the rule chooses is given: the run trains them as they are")
    else:
        cfg = config.build(file=config_file, assignments=assignments)
    for key, default, meaning in config.described():
        value = getattr(cfg, key)
        changed = "" if value == default else f" (default {default!r})"
        click.echo(f"{key:<14} {value!r:<12} {meaning}{changed}")


@cli.command(name="eval")
@checkpoint_option
@click.argument("textfile", type=PathType(path_type=Path))
@text_options
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Contiguous streams the file is cut into.")
@click.option("--dynamic", is_flag=True, help="Learn the text while scoring it (one stream).")
@engine_option
@threads_option
def eval_(ckpt, textfile, skip_unknown, encoding, batch_size, dynamic, engine):
    """Loss of a checkpoint on TEXTFILE: nats/char, bits/char and perplexity.

    \b
    Example:
      rnnlm eval --ckpt runs/shk/best.npz heldout.txt
    """
    model = api.load(ckpt, engine, notify=log)
    nats, characters, skipped, streams = model.loss_of_file(textfile, encoding, batch_size,
                                                            skip_unknown, dynamic)
    click.echo(f"{textfile}: {characters:,} characters, {nats:.4f} nats/char, "
               f"{bits(nats):.4f} bits/char, perplexity {evaluate.perplexity(nats):.3f}"
               + (f"; {skipped:,} unknown characters skipped" if skip_unknown else "")
               + (" (dynamic evaluation: the model learned the text as it read it)" if dynamic
                  else f" (read in {streams} streams: each then has {api.STREAM_CONTEXT} "
                  f"characters of context or more)" if streams < batch_size else ""))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...",
                type=PathType(path_type=Path))
@click.option("-o", "--out", "out_path", type=PathType(path_type=Path),
              help="PNG to write [default: RUN_DIR/curves.png for one run, "
                   "curves-<names>.png here for several].")
@click.option("--log-x", is_flag=True, help="Logarithmic updates and time axes.")
def plot(run_dirs, out_path, log_x):
    """Learning curves of runs: training loss (smoothed) and validation loss in nats/char,
    against updates and against training time, the best validation point marked. Needs
    Matplotlib: pip install 'rnnlm[plot]'.

    \b
    Example:
      rnnlm plot runs/shk runs/shk-gru -o compare.png
    """
    out_path = out_path or plots.default_target(run_dirs)
    plots.curves(run_dirs, out_path, log_x=log_x)
    log(f"wrote {out_path}")


@cli.command()
@checkpoint_option
@click.argument("textfile", type=PathType(path_type=Path))
@click.option("-o", "--out", "out_path", type=PathType(path_type=Path),
              help="HTML page to write [default: TEXTFILE's name with .html, here].")
@click.option("--chars", default=5000, show_default=True, type=click.IntRange(min=2),
              help="Characters of the text shown on the page (the summary covers it all).")
@click.option("--units", default=8, show_default=True, type=click.IntRange(min=1),
              help="Hidden units shown for each layer (and LSTM cell state).")
@text_options
@threads_option
def inspect(ckpt, textfile, out_path, chars, units, skip_unknown, encoding):
    """A page that shows what the model sees in TEXTFILE: each character coloured by the
    model's surprisal, its five likeliest guesses there, and the hidden units whose
    activations follow the text's structure. One self-contained HTML file.

    \b
    Example:
      rnnlm inspect --ckpt runs/shk heldout.txt -o shk.html --chars 3000
    """
    model = api.load(ckpt, notify=log).ready()
    out_path = out_path or Path(textfile.stem + ".html")
    found, skipped = inspection.write_page(model, textfile, out_path, chars, units, encoding,
                                           skip_unknown)
    if skip_unknown:
        log(f"{skipped:,} unknown characters skipped")
    log(f"wrote {out_path}: {len(found['text']):,} characters shown; "
        f"{found['summary']['nats_per_char']:.4f} nats/char over "
        f"{found['summary']['characters']:,}")


@cli.command()
@click.argument("target", metavar="RUN_DIR|CKPT", type=PathType(path_type=Path))
@click.option("--format", "fmt", required=True, metavar="|".join(export_lib.FORMATS),
              help="onnx: a graph for onnxruntime and other runtimes (pip install "
                   "'rnnlm[onnx]'); safetensors: the weights under PyTorch's names; html: one "
                   "page that writes text in the browser, offline.")
@click.option("-o", "--out", "out_path", type=PathType(path_type=Path),
              help="File to write [default: the run's name with the format's suffix, here]. "
                   "Never a file that is not an earlier export of the same format.")
@click.option("--float16", is_flag=True,
              help="Half-precision weights: html and safetensors files half the size.")
def export(target, fmt, out_path, float16):
    """Write a trained model for use outside rnnlm: ONNX, safetensors, or a self-contained
    web page that samples from it. A run directory means its best.npz.

    \b
    Examples:
      rnnlm export runs/shk --format html -o shakespeare.html
      rnnlm export runs/shk/best.npz --format onnx -o shk.onnx
      rnnlm export runs/shk --format safetensors --float16
    """
    export_lib.check_format(fmt, float16)
    model = api.load(target, notify=log)
    out_path = out_path or export_lib.default_target(model, fmt)
    written = export_lib.export(model, fmt, out_path, float16)
    log(f"{'replaced' if written.replaced else 'wrote'} {written.path} "
        f"({written.size / 2 ** 20:.2f} MB, {fmt})")


@cli.command()
@click.argument("textfile", required=False, type=PathType(path_type=Path))
@click.option("--ckpt", "checkpoints", multiple=True, type=PathType(path_type=Path),
              metavar="RUN|CKPT", help="A trained model (a run directory: its best.npz); "
                                       "repeatable.")
@click.option("--cell", "cells", multiple=True, type=click.Choice(tuple(CELLS)),
              help="A freshly initialised model of this cell; repeatable [default, without "
                   "--ckpt: rnn, lstm and gru].")
@click.option("--hidden", default=256, show_default=True, type=click.IntRange(min=1),
              help="Units per layer of the fresh models.")
@click.option("--layers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Layers of the fresh models.")
@click.option("--distance", default=200, show_default=True, type=click.IntRange(min=1),
              help="K: measure k = 0..K steps back.")
@click.option("--positions", default=32, show_default=True, type=click.IntRange(min=1),
              help="Places in the text the measurement averages over.")
@click.option("--seq-len", type=click.IntRange(min=1),
              help="The training window marked as the truncation, for fresh models "
                   "[default: the configured 64; a checkpoint's own].")
@click.option("--scale-whh", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Multiply every W_hh by S: above 1, the exploding side.")
@click.option("--linear", is_flag=True,
              help="The RNN with the identity activation: the gradient is exactly W^k.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="For the fresh models' weights and the positions.")
@click.option("-o", "--out", "out_path", type=PathType(path_type=Path),
              help="PNG to draw [default: gradflow.png here, where Matplotlib is installed].")
@encoding_option
def gradflow(textfile, checkpoints, cells, hidden, layers, distance, positions, seq_len,
             scale_whh, linear, seed, out_path, encoding):
    """How far back the gradient reaches: for k = 0..K, the mean norm of dL_t/ds_(t-k),
    the gradient of the loss at step t with respect to the hidden state k steps earlier,
    relative to k = 0, measured with the textbook engine's backward pass on TEXTFILE
    (default: the built-in corpus). Also each layer's largest singular value of W_hh, and
    what gradient clipping would do to a training window's gradient.

    \b
    Examples:
      rnnlm gradflow                                 # rnn, lstm, gru as initialised
      rnnlm gradflow notes.txt --ckpt runs/notes --cell rnn
      rnnlm gradflow --cell rnn --scale-whh 3        # the exploding side
    """
    if not checkpoints and not cells:
        cells = tuple(CELLS)
    if out_path is None and plots.available():
        out_path = Path("gradflow.png")
    if out_path is not None:  # refused before minutes of measuring, not after
        plots.check_gradflow_target(out_path)
    flows = gradflow_lib.compare(textfile, checkpoints, cells, hidden, layers, distance,
                                 positions, seq_len, scale_whh,
                                 "identity" if linear else "tanh", seed, encoding, notify=log)
    for line in gradflow_lib.report(flows, distance, positions):
        click.echo(line)
    if out_path is not None:
        plots.gradflow(flows, out_path)
        log(f"wrote {out_path}")


@cli.command(name="gradcheck")
@click.option("--cell", "cells", multiple=True, type=click.Choice(tuple(CELLS)),
              help="Cell(s) to check [default: all].")
@click.option("--layers", "layer_counts", multiple=True, type=click.IntRange(min=1),
              help="Depth(s) to check [default: 1 and 2].")
@click.option("--regulariser", "regularisers", multiple=True,
              type=click.Choice(tuple(gradcheck_lib.REGULARISERS)),
              help="Regulariser(s), each at 0.3 with fixed masks: per-step dropout, locked "
                   "dropout, weight drop on W_hh [default: none and all three].")
@click.option("--hidden", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--vocab", default=7, show_default=True, type=click.IntRange(min=1))
@click.option("--seq-len", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--engine", "engine_names", multiple=True, type=click.Choice(config.ENGINES),
              help="Engine(s) to check [default: fast].")
def gradcheck(cells, layer_counts, regularisers, hidden, vocab, seq_len, batch, seed,
              engine_names):
    """Check every analytic gradient against centred finite differences (float64).

    One row per parameter tensor; exit status 1 if any relative error exceeds the tolerance.

    \b
    Example:
      rnnlm gradcheck --cell lstm --layers 2
    """
    rows = gradcheck_lib.check_all(cells or tuple(CELLS), layer_counts or (1, 2),
                                   regularisers or tuple(gradcheck_lib.REGULARISERS),
                                   engine_names or ("fast",), hidden=hidden, vocab=vocab,
                                   seq_len=seq_len, batch=batch, seed=seed)
    click.echo("\n".join(gradcheck_lib.report(rows)))
    if not all(r.ok for r in rows):
        sys.exit(1)


def main():
    cli(prog_name="rnnlm")
