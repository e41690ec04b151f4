"""The training loop: windows in, updates out, with evaluation and checkpoints.

`train()` is a generator of events (Begin, Step, Eval) so that the caller decides what to
show; nothing here prints. Nothing here is specific to a cell either: the model is a pair
of functions over a parameter dict.
"""
import contextlib
import csv
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlm import config, engines, plots
from rnnlm.errors import RnnlmError
from rnnlm.io import checkpoint as ckpt_io, rundir
from rnnlm.io.rundir import BEST, CONFIG, CURVES, LAST, METRICS
from rnnlm.run import memory, optim, plan as plan_lib, threads as threads_lib, workers
from rnnlm.config import to_yaml
from rnnlm.io.data import Streams, min_corpus_length, split
from rnnlm.evaluate import Interrupted, loss_sums
from rnnlm.run.optim import clip_gradients, learning_rate, make_optimizer
from rnnlm.params import (Spec, carry_over, count, dropout_masks, init_params,
                          weight_drop_masks, zero_state)
from rnnlm.sample import generate

COLUMNS = ("step", "epoch", "train_loss", "val_loss", "grad_norm", "lr", "chars_per_sec",
           "elapsed_s", "threads")


@dataclass
class Begin:
    lines: list  # what the run is about to do, for the log
    start_step: int  # updates already done (non-zero when resuming)


@dataclass
class Step:
    step: int  # updates done
    epoch: float  # passes over the training text, fractional
    loss: float  # this window's mean cross-entropy, nats/char
    grad_norm: float  # global norm before clipping
    lr: float
    chars_per_sec: float  # over the last log interval
    elapsed: float = 0.0  # seconds of training, counting the runs this one resumed
    threads: int = None  # the threads this update's matrix products ran on, where known
    change: threads_lib.Change = None  # the run has just chosen another count


@dataclass
class Eval:
    step: int
    val_loss: float  # nats/char, or None without a validation split
    sample: str
    saved: list  # checkpoint paths written
    best: bool  # val_loss is the lowest so far
    val_chars: int = 0  # validation characters read: all of them, or a time budget's share
    val_total: int = 0  # validation characters there are
    warning: str = None  # what went wrong beside the run (drawing curves.png), to be said


@dataclass
class Stopped:
    step: int
    saved: Path  # the checkpoint written on the way out


@dataclass
class Finished:
    step: int  # updates done: the run has reached its budget
    warnings: list  # what its end must say: too few updates to learn, far fewer than planned


@dataclass
class RolledBack:
    step: int  # the step that diverged
    to_step: int  # the checkpoint's step, where training goes on
    lr_scale: float  # the learning rates are now multiplied by this


MAX_ROLLBACKS = 5


class Run:
    """Everything that changes as training goes, and so everything a checkpoint holds."""

    def __init__(self, cfg, spec, vocab, params, rng, corpus=None, began=None):
        self.cfg, self.spec, self.vocab, self.corpus = cfg, spec, vocab, corpus
        self.params = params
        self.optimizer = make_optimizer(cfg, params)
        self.rng = rng
        self.step = 0  # updates done
        self.epoch = 0  # completed passes
        self.window = 0  # next window within the epoch
        self.group = workers.group()  # with one worker, Solo: every collective a no-op
        self.rows = workers.rows(cfg.batch_size, self.group.rank, self.group.size)
        self.state = self.zero_state()  # of this worker's streams
        # Every worker's share of each update summed, in one Allreduce (workers.Reduction)
        self.reduce = workers.Reduction(self.group, (self.rows.stop - self.rows.start)
                                        / cfg.batch_size)
        self.best_val = None
        self.lr_scale = 1.0  # halved at each roll-back after a divergence
        self.began = time.perf_counter() if began is None else began  # this process's start
        self.started = self.began  # minus the training time of earlier processes
        self.eval_rate = None  # validation characters a second, evaluation and save included
        self.val_chars = None  # how much of the validation text evaluations read (a budget's)
        self.val_total = 0  # how much there is
        self.init_from = None  # the checkpoint a fine-tuned run started from
        self.budget_spent = 0.0  # the time budget (s) this run ended by having spent
        self.plan = None  # the updates its time budget was to buy (plan.Plan), where measured
        self.drawing = self.group.rank == 0 and plots.available()  # curves.png at evaluations

    def zero_state(self):
        return zero_state(self.spec, self.rows.stop - self.rows.start)

    def elapsed(self):
        """Seconds of training so far, counting the processes this run resumed from."""
        return time.perf_counter() - self.started

    def to_checkpoint(self):
        """The run as a checkpoint, every stream's state gathered from the workers: at
        worker 0; None at the others (every worker must call it)."""
        parts = self.group.gather(self.state)
        if parts is None:
            return None
        state = [tuple(np.concatenate([p[layer][i] for p in parts])
                       for i in range(len(self.state[layer]))) for layer in range(len(self.state))]
        meta = ckpt_io.Meta(config=dataclasses.asdict(self.cfg), corpus=self.corpus,
                            step=self.step, epoch=self.epoch, window=self.window,
                            best_val_loss=self.best_val, lr_scale=self.lr_scale,
                            rng=self.rng.bit_generator.state, elapsed=self.elapsed(),
                            init_from=self.init_from, budget_spent=self.budget_spent,
                            **plan_lib.to_meta(self.plan))
        return ckpt_io.Checkpoint(self.params, self.spec, self.vocab, meta,
                                  dict(self.optimizer.slots), state)

    def _resumes_at(self, state):
        """Take (step, epoch, window, RNG state); False where the RNG's will not load."""
        try:
            self.step, self.epoch, self.window, self.rng.bit_generator.state = state
        except (KeyError, TypeError, ValueError):
            return False
        return True

    def restore(self, ckpt, where):
        """Take every piece of training state from a checkpoint (exact resume)."""
        meta, state = ckpt.meta, ckpt.meta.training_state()
        if state is None or not self._resumes_at(state):
            raise RnnlmError(f"{where} lacks the training state needed to resume (step, "
                             f"epoch, window, RNG)")
        self.best_val, self.lr_scale = meta.best_val_loss, meta.lr_scale
        self.started = self.began - meta.elapsed
        self.init_from, self.budget_spent = meta.init_from, meta.budget_spent
        if meta.config.get("max_seconds") == self.cfg.max_seconds:  # the budget planned for
            self.plan = plan_lib.from_meta(meta)
        for name, p in self.params.items():
            p[...] = ckpt.params[name]
        self.optimizer.load_slots(ckpt.slots)
        if ckpt.state is None or any(a.shape[0] != self.cfg.batch_size
                                     for s in ckpt.state for a in s):
            raise RnnlmError(f"{where} lacks the carried hidden state of "
                             f"{self.cfg.batch_size} streams")
        self.state = [tuple(a[self.rows].astype(np.float32) for a in s) for s in ckpt.state]


def train(cfg, vocab, ids, out_dir, corpus_name="corpus", corpus_record=None, resume=None,
          stop=lambda: False, metrics_from=None, check_memory=True, init_from=None,
          began=None, plan=None):
    """Train on ids (encoded with vocab) as cfg says, writing into out_dir, which it holds
    (rundir.Claim) until the last event. Yields events.

    resume: a Checkpoint to continue from exactly (its parameters, optimizer slots, step,
    data cursor, carried state, best val loss, RNG state, training time); metrics_from:
    the metrics.csv of its run where out_dir is another directory. stop: polled after
    every update; when it returns True, last.npz is saved and training ends with a Stopped
    event. check_memory: refuse a run whose estimated peak memory exceeds what the
    machine has available (memory.py), before allocating it. init_from: a Checkpoint to
    fine-tune: its weights, carried over to vocab (which holds its characters), start a new
    run. corpus_record: what the run is trained on (corpus.Corpus.record), kept in its
    checkpoints and config.yaml. began: time.perf_counter() when the run's process began
    its work (reading the corpus counts against a time budget); default now. plan: the
    updates a time budget is to buy (plan.Plan, from sizing), which the run's end and its
    checkpoints compare with those it made.
    """
    workers.check_streams(cfg.batch_size, workers.group().size)
    if vocab.size < 2:
        raise RnnlmError(f"{corpus_name} holds one distinct character, {vocab.chars!r}: "
                         f"there is nothing to predict (a model needs at least two)")
    train_ids, val_ids = split(ids, cfg.val_fraction)
    _check_lengths(cfg, ids, train_ids, val_ids, corpus_name)
    streams = Streams(train_ids, cfg.batch_size, cfg.seq_len, cfg.windows == "shifted")
    spec = Spec.of(cfg, vocab.size)
    needs = memory.estimate(cfg, spec)
    has = memory.available()
    if check_memory and has is not None and sum(needs.values()) > has:
        raise RnnlmError(f"training would need about {sum(needs.values()) / 2 ** 20:,.0f} MB, "
                         f"more than the {has / 2 ** 20:,.0f} MB available: lower hidden, "
                         f"layers, batch_size or seq_len (or use fewer distinct characters), "
                         f"or pass --ignore-memory")
    rng = np.random.default_rng(cfg.seed)
    params = init_params(spec, rng, np.float32, cfg.init, cfg.forget_bias)
    if init_from is not None:
        carry_over(params, init_from.params, init_from.vocab.chars, vocab.chars)
    run = Run(cfg, spec, vocab, params, rng, corpus_record, began)
    run.plan = plan
    if init_from is not None:
        run.init_from = {"path": init_from.path, "step": init_from.meta.step}
    if resume is not None:  # a new run whose set-up spent its budget makes one update
        _restore(run, resume, streams, corpus_name)
        _check_work_left(run)
    out_dir = Path(out_dir)
    writer = run.group.rank == 0  # worker 0 alone holds the directory and writes into it
    with rundir.Claim(out_dir, fresh=resume is None) if writer else contextlib.nullcontext():
        if writer:
            _prepare(out_dir, cfg, None if resume is None else run.step, metrics_from,
                     corpus_record)
        yield _begin(run, streams, ids, train_ids, val_ids, corpus_name, out_dir, resume, needs)
        yield from _loop(run, streams, val_ids, out_dir, stop)


def _check_lengths(cfg, ids, train_ids, val_ids, corpus_name):
    """RnnlmError unless the text fills one window of every stream, and validates."""
    need = cfg.batch_size * (cfg.seq_len + 1)
    if len(train_ids) < need:
        raise RnnlmError(
            f"{corpus_name} is too short: {len(ids)} characters, and batch_size="
            f"{cfg.batch_size} streams of seq_len={cfg.seq_len} need at least "
            f"{min_corpus_length(cfg.batch_size, cfg.seq_len, cfg.val_fraction)} "
            f"(lower batch_size or seq_len)")
    if cfg.val_fraction > 0 and len(val_ids) < 2:
        raise RnnlmError(f"val_fraction={cfg.val_fraction} leaves {len(val_ids)} validation "
                         f"character(s) of {corpus_name}; at least 2 are needed")


def _restore(run, resume, streams, corpus_name):
    """Continue from the checkpoint resume, which must fit this corpus."""
    if resume.vocab != run.vocab:
        added = "".join(sorted(set(run.vocab.chars) - set(resume.vocab.chars)))
        lost = "".join(sorted(set(resume.vocab.chars) - set(run.vocab.chars)))
        raise RnnlmError(f"cannot resume: {corpus_name}'s vocabulary differs from the "
                         f"checkpoint's (new: {added!r}, missing: {lost!r})")
    run.restore(resume, "the checkpoint")
    if run.window >= streams.windows:
        raise RnnlmError(f"cannot resume: the checkpoint's data cursor (window "
                         f"{run.window}) is past the {streams.windows} windows of "
                         f"{corpus_name}; is it the same corpus?")


def _check_work_left(run):
    """RnnlmError where a resumed run has already reached its limits."""
    cfg = run.cfg
    if 0 < cfg.max_steps <= run.step:
        raise RnnlmError(f"the checkpoint is at step {run.step}, and max_steps is "
                         f"{cfg.max_steps}: nothing to do (raise --max-steps)")
    if 0 < cfg.max_seconds <= max(run.elapsed(), run.budget_spent):
        raise RnnlmError(f"the checkpoint has trained for {run.elapsed():.0f} s of a "
                         f"{cfg.max_seconds:g} s budget: nothing to do (raise --time)")


def _begin(run, streams, ids, train_ids, val_ids, corpus_name, out_dir, resume, needs):
    cfg, spec, vocab = run.cfg, run.spec, run.vocab
    trimmed = len(train_ids) - streams.chars_per_epoch
    warning = memory.rare_vocabulary(spec, len(ids))
    return Begin(([warning] if warning else []) + [
        f"corpus: {corpus_name}, {len(ids):,} characters, vocabulary {vocab.size}",
        f"split: {len(train_ids):,} train, {len(val_ids):,} validation",
        f"model: {spec.name}, {count(spec):,} parameters; "
        f"{engines.describe(cfg.engine)}",
        memory.describe(needs),
        f"epoch: {streams.windows:,} windows of {cfg.batch_size} x {cfg.seq_len}; "
        + (f"{trimmed:,} characters not visited, elsewhere each pass (windows shifted)"
           if streams.shifted else f"{trimmed:,} trailing characters not visited"),
        (f"resuming at step {run.step} (epoch {run.epoch}, window {run.window})"
         if resume is not None else
         f"fine-tuning the weights of {run.init_from['path']} (step {run.init_from['step']})"
         if run.init_from else "starting from random weights"),
        f"writing to {out_dir}",
    ] + _schedule_on_resume(run, resume), run.step)


def _schedule_on_resume(run, resume):
    """The line saying what a resumed run's schedule does from here (optim.on_resume)."""
    if resume is None:
        return []
    saved = config.from_dict(resume.meta.config, "the checkpoint's config: ")
    line = optim.on_resume(saved, run.cfg, run.step, run.elapsed())
    return [line] if line else []


def _prepare(out_dir, cfg, resumed_step, metrics_from, corpus_record):
    """Fill the claimed run directory: config.yaml; metrics.csv, which a resumed run
    continues from its checkpoint's step (rows past it, logged after the checkpoint was
    saved, are dropped, so that steps only go forward); and no temporary files left by a
    process that was killed while saving."""
    try:
        for stale in out_dir.glob(".*.npz.*.tmp"):
            stale.unlink()
        (out_dir / CONFIG).write_text(to_yaml(cfg, corpus_record), encoding="utf-8")
        metrics = out_dir / METRICS
        source = Path(metrics_from) if metrics_from else metrics
        rows = []
        if resumed_step is not None and source.exists():
            with open(source, newline="") as f:
                rows = [r for r in csv.reader(f) if r and r[0].isdigit()
                        and int(r[0]) <= resumed_step]
        tmp = metrics.with_name(f".{METRICS}.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([COLUMNS] + rows)
        os.replace(tmp, metrics)
    except OSError as e:
        raise RnnlmError(f"cannot write to output directory {out_dir}: "
                         f"{e.strerror or e}") from None


def _last_good(out_dir):
    last = out_dir / LAST
    return (f"{last} holds the last good weights" if last.exists() else
            "no checkpoint had been saved yet")


# A model that has learned anything predicts better than uniform guessing, ln V nats per
# character. One that is a nat per character worse than that after its first evaluation
# has diverged, NaN or not (too high a learning rate sends the loss to the thousands).
DIVERGED_ABOVE_UNIFORM = 1.0


class _Diverged(Exception):
    """Raised inside the loop with the reason; handled by _roll_back."""


def _ceiling(run):
    return math.log(run.spec.vocab_size) + DIVERGED_ABOVE_UNIFORM


def _roll_back(run, why, out_dir, rollbacks):
    """Reload the last checkpoint and halve the learning rate; or give up, saying why."""
    last = out_dir / LAST
    if run.cfg.on_divergence != "rollback" or rollbacks >= MAX_ROLLBACKS or not last.exists():
        advice = (", or --set on_divergence=rollback" if run.cfg.on_divergence == "stop"
                  else "")
        raise RnnlmError(f"training diverged at step {run.step}: {why}. Nothing of it was "
                         f"saved; {_last_good(out_dir)}. Try a lower lr (now "
                         f"{run.cfg.lr * run.lr_scale:g}), a lower clip_norm{advice}")
    diverged_at, started, scale = run.step, run.started, run.lr_scale
    run.restore(ckpt_io.load(last), last)
    run.started = started  # the time spent since still counts
    run.lr_scale = scale * 0.5  # halved again at each roll-back, not reset by the checkpoint
    return RolledBack(diverged_at, run.step, run.lr_scale)


def _loop(run, streams, val_ids, out_dir, stop):
    with np.errstate(all="ignore"):  # overflow is detected below, not warned about
        yield from _steps(run, streams, val_ids, out_dir, stop)


def _update(run, streams, smoothed, evaluated, clock, decide):
    """One window: forward and BPTT over this worker's streams, the one reduction over the
    workers (which carries decide()'s decisions, and worker 0's clock: its training time,
    final evaluation's reserve and fastest update), clipping and, unless the run has
    diverged, the update. Returns (loss, gradient norm, learning rate, smoothed loss, why
    it diverged or None, the decisions every worker takes, worker 0's clock)."""
    cfg = run.cfg
    loss, grads, state = _gradients(run, streams)
    loss, grads, decisions, clock = run.reduce(loss, grads, decide(),
                                               (run.elapsed(),) + tuple(clock))
    elapsed, reserve, _ = clock
    norm = clip_gradients(grads, cfg.clip_norm, cfg.clip_value)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        why = f"the loss is {loss:.4g} and the gradient norm {norm:.4g}"
        return loss, norm, 0.0, smoothed, why, decisions, clock
    smoothed = loss if smoothed is None else 0.98 * smoothed + 0.02 * loss
    if evaluated and smoothed > _ceiling(run):
        return loss, norm, 0.0, smoothed, (
            f"the smoothed training loss is {smoothed:.4g} nats/char, far above uniform "
            f"guessing ({math.log(run.spec.vocab_size):.3g})"), decisions, clock
    lr = learning_rate(cfg, run.step, elapsed, reserve) * run.lr_scale
    run.optimizer.step(run.params, grads, lr)
    del grads  # not held while the next window's are made (peak memory)
    run.state = state
    run.step += 1
    run.window += 1
    if run.window == streams.windows:
        run.window, run.epoch = 0, run.epoch + 1
    return loss, norm, lr, smoothed, None, decisions, clock


def _gradients(run, streams):
    """(loss, gradients, state after the window) of the next window over this worker's
    streams: the loss the mean over their characters."""
    cfg = run.cfg
    if run.window == 0:
        run.state = run.zero_state()  # the streams start over
    x, y = streams.window(run.window, run.epoch)
    # Every stream's masks, drawn from the run's generator whatever the workers, so that
    # N workers follow the trajectory of one.
    masks = dropout_masks(run.spec, cfg.batch_size, cfg.seq_len, cfg.dropout, run.rng,
                          locked=cfg.dropout_mode == "locked")
    weight_masks = weight_drop_masks(run.spec, cfg.weight_drop, run.rng,  # one for all
                                     run.params["out.weight"].dtype)
    if run.group.size > 1:
        x, y = x[run.rows], y[run.rows]
        if masks is not None:
            masks = [np.ascontiguousarray(m[:, :, run.rows]) for m in masks]
    return engines.loss_and_grads(cfg.engine, run.params, run.spec, x, y, run.state, masks,
                                  weight_masks)


@dataclass
class _Interval:
    """The updates since the last row of metrics.csv: their summed loss and seconds."""
    loss: float = 0.0
    steps: int = 0
    time: float = 0.0

    def add(self, loss, seconds, chars_per_step):
        """Count an update; returns the interval's speed so far, in chars/s."""
        self.loss, self.steps, self.time = self.loss + loss, self.steps + 1, self.time + seconds
        return chars_per_step * self.steps / max(self.time, 1e-9)


def _steps(run, streams, val_ids, out_dir, stop):
    cfg = run.cfg
    run.val_total = len(val_ids)
    chars_per_step, interval = cfg.batch_size * cfg.seq_len, _Interval()
    rollbacks, smoothed, evaluated = 0, None, run.best_val is not None
    reserve = 0.0  # seconds kept at the end of a time budget for the final evaluation
    checked = run.elapsed()  # training time when _due last looked at the clock
    made = plan_lib.Made(chars_per_step)  # this process's updates: their times, threads
    tuner = threads_lib.tuner()  # the threads' count, chosen as it goes (or pinned)

    def decide():  # made before the reduction, so that it can carry them
        nonlocal checked
        if run.group.rank > 0:  # what the clock decides, worker 0's clock decides
            return bool(stop()), False, False
        last, evaluating = _due(run, checked, made.last, reserve,
                                made.updates + 1 >= WARM_UPDATES)
        checked = run.elapsed()
        return bool(stop()), last, evaluating

    while True:
        t0 = time.perf_counter()
        loss, norm, lr, smoothed, why, (stopping, last, evaluating), clock = _update(
            run, streams, smoothed, evaluated, (reserve, made.fastest), decide)
        if why:
            run.step += 1  # the update that diverged, never applied
            yield _roll_back(run, why, out_dir, rollbacks)
            rollbacks, smoothed = rollbacks + 1, None
            continue
        dt, ran_on = time.perf_counter() - t0, tuner.in_use  # the update's time, threads
        made.add(dt, ran_on)
        val_ids, reserve = _sized(run, val_ids, made, clock[2], last or evaluating)
        speed = interval.add(loss, dt, chars_per_step)
        epoch = run.epoch + run.window / streams.windows
        yield Step(run.step, epoch, loss, norm, lr, speed, run.elapsed(),  # threads: as run,
                   ran_on, tuner.observe(dt))  # and any change of them
        if stopping:
            yield _stop(run, out_dir)
            return
        if last and not 0 < cfg.max_steps <= run.step:  # ended by its time budget
            run.budget_spent = cfg.max_seconds
        event = None
        if last or evaluating:
            event = _evaluation(run, val_ids, out_dir, stop, smoothed)
            if isinstance(event, str):  # diverged: why
                yield _roll_back(run, event, out_dir, rollbacks)
                rollbacks, smoothed = rollbacks + 1, None
                continue
            if isinstance(event, Stopped):
                yield event
                return
            evaluated = True
        if event or run.step % cfg.log_every == 0:
            _log(run, out_dir, epoch, interval, event, norm, lr, speed, ran_on)
            interval = _Interval()
        if event:  # after its row of metrics.csv, which curves.png draws
            event.warning = _draw_curves(run, out_dir)
            yield event
        if last:
            yield _finished(run, made)
            return


def _finished(run, made):
    """The run has reached its budget, having made `made` (plan.Made) in this process."""
    warnings = (too_few(run.cfg, made.updates), plan_lib.shortfall(run.plan, run.step, made))
    return Finished(run.step, [w for w in warnings if w])


def _sized(run, val_ids, made, fastest, due):
    """(the validation text evaluations read, the seconds the final one will take) from
    the training speed (worker 0's fastest update, everywhere; made: this process's
    updates), once the first updates have measured it or an evaluation is due."""
    if run.group.size == 1:
        fastest = min(fastest, made.fastest)
    train_rate = made.chars_per_update / fastest
    if made.updates >= WARM_UPDATES or due:
        val_ids = _validation_slice(run, val_ids, train_rate)
    return val_ids, _eval_seconds(run, len(val_ids), train_rate)


def _stop(run, out_dir):
    """Save last.npz, for a signal; the Stopped event."""
    path = out_dir / LAST
    _save(run, [path], out_dir)
    return Stopped(run.step, path)


def _evaluation(run, val_ids, out_dir, stop, smoothed):
    """An evaluation and its save, timed (the time budget's reserve reads it): the Eval
    event; or, for a signal during it, the Stopped event once last.npz is saved; or, where
    the run has diverged, why (a string)."""
    try:
        t_eval = time.perf_counter()
        event = _evaluate_and_save(run, val_ids, out_dir, stop, smoothed)
    except _Diverged as e:
        return str(e)
    except Interrupted:
        return _stop(run, out_dir)
    spent = time.perf_counter() - t_eval
    run.eval_rate = min(run.eval_rate or math.inf, len(val_ids) / max(spent, 1e-9))
    return event


def _draw_curves(run, out_dir):
    """curves.png from metrics.csv, where Matplotlib is installed (worker 0). A picture
    is never worth a run: whatever stops it drawing is said once, and drawing stops.
    Returns what to say, or None."""
    if not run.drawing:
        return None
    try:
        plots.curves([out_dir], out_dir / CURVES)
    except Exception as e:  # noqa: BLE001 (Matplotlib's own errors included)
        run.drawing = False
        return f"not drawing {CURVES}: {e}"
    return None


def _log(run, out_dir, epoch, interval, event, norm, lr, speed, threads=None):
    """A row of metrics.csv (worker 0's) for the updates since the last row."""
    if run.group.rank == 0:
        val_loss = event.val_loss if event else None
        _append_metrics(out_dir, [
            run.step, f"{epoch:.4f}", f"{interval.loss / interval.steps:.5f}",
            "" if val_loss is None else f"{val_loss:.5f}", f"{norm:.4f}", f"{lr:.6g}",
            f"{speed:.0f}", f"{run.elapsed():.1f}", threads or ""])


FEW_UPDATES = 100  # a time budget that allows fewer has trained no model worth the name


def too_few(cfg, updates):
    """A warning where a run's time budget fitted too few updates to learn, else None."""
    if cfg.max_steps == 0 and updates < FEW_UPDATES:
        return (f"warning: only {updates} updates fitted in the time budget: the model has "
                f"barely begun to learn; give it more --time")
    return None


WARM_UPDATES = 3  # updates before a time budget's end is judged from their speed
EVAL_SHARE = 0.15  # of a time budget, for every evaluation together at most
EVAL_PER_TRAIN_CHAR = 3  # characters validated in a training character's time (forward only)


def _validation_slice(run, val_ids, train_rate):
    """The validation text each evaluation of a run with a time budget reads: all of it,
    or, where all of it would take more than EVAL_SHARE of the budget over the run's
    evaluations, its beginning, chosen once (so that every evaluation measures the same
    text, and the best checkpoint is chosen fairly), from the training speed."""
    cfg = run.cfg
    if cfg.max_seconds <= 0 or run.val_chars is not None:
        return val_ids[:run.val_chars] if run.val_chars else val_ids
    if not 0 < train_rate < math.inf:  # nothing measured yet: all of it
        run.val_chars = len(val_ids)
        return val_ids
    per_eval = EVAL_SHARE * cfg.max_seconds / (cfg.evaluations + 1)
    fits = int(per_eval * EVAL_PER_TRAIN_CHAR * train_rate)
    run.val_chars = len(val_ids) if fits >= len(val_ids) else max(fits, 2)
    return val_ids[:run.val_chars]


def _eval_seconds(run, chars, train_rate):
    """What an evaluation of `chars` validation characters, its sample and its save will
    take: measured by the evaluations so far, else estimated from the training speed."""
    rate = run.eval_rate or EVAL_PER_TRAIN_CHAR * train_rate
    if not 0 < rate < math.inf:
        return 1.0
    return chars / rate + (0.0 if run.eval_rate else 1.0)


def _due(run, checked, step_seconds, reserve, measured=True):
    """(is the update being made the last, is an evaluation due after it), the last update
    having taken step_seconds and the clock last checked at `checked` s of training.
    With a time budget, training stops while one more update and the final evaluation
    (`reserve` seconds) still fit in it, and not before the first updates have
    `measured` the machine's speed (they are slow: memory, caches; the log's speeds and the
    evaluation's reserve are read from them), however short the budget;
    evaluations are spaced evenly in it (one is due when a multiple of the spacing passed
    since the last check: the time between updates, spent by the caller, counts too);
    else every eval_every updates, and at max_steps."""
    cfg, elapsed, step = run.cfg, run.elapsed(), run.step + 1  # the update being made
    budget_ends = elapsed + step_seconds + (reserve if measured else 0.0)
    last = 0 < cfg.max_steps <= step or (0 < cfg.max_seconds <= budget_ends and measured)
    by_steps = cfg.eval_every > 0 and step % cfg.eval_every == 0
    by_time = False
    if cfg.max_seconds > 0:
        interval = cfg.max_seconds / cfg.evaluations
        by_time = elapsed // interval > checked // interval
    return last, last or by_steps or by_time


def _save(run, paths, out_dir):
    """Write the run to each path, unless its weights are no longer finite."""
    if not all(np.isfinite(p).all() for p in run.params.values()):
        raise RnnlmError(f"training diverged by step {run.step}: the weights are no longer "
                         f"finite. Nothing was saved; {_last_good(out_dir)}. Try a lower lr "
                         f"or clip_norm")
    checkpoint = run.to_checkpoint()  # every worker's streams, gathered at worker 0
    for path in paths if checkpoint is not None else ():
        ckpt_io.save(path, checkpoint)


def _evaluate_and_save(run, val_ids, out_dir, stop=lambda: False, training_loss=None):
    """Validate, sample and save; Interrupted where stop() says so before the save (one
    worker: many measure together, and act on a signal at the next update)."""
    cfg = run.cfg
    val_loss = None
    _check_in_step(run)
    if len(val_ids) >= 2:
        val_loss = _validation_loss(run, val_ids, stop)
        # NaN included: never saved, let alone as best. A training loss still below the
        # ceiling means the model fits its text and not the other: overfitting, not divergence.
        fitting = training_loss is not None and training_loss <= _ceiling(run)
        if not val_loss <= _ceiling(run) and not (math.isfinite(val_loss) and fitting):
            raise _Diverged(f"the validation loss is {val_loss:.4g} nats/char, far above "
                            f"uniform guessing ({math.log(run.spec.vocab_size):.3g})")
    best = val_loss is not None and (run.best_val is None or val_loss < run.best_val)
    if best:
        run.best_val = val_loss
    sample = ""
    if run.group.rank == 0:
        for ch in generate(run.params, run.spec, run.vocab, np.random.default_rng(
                [cfg.seed, run.step]), length=cfg.sample_length, temperature=0.8,
                engine=cfg.engine):
            sample += ch
            if run.group.size == 1 and len(sample) % 500 == 0 and stop():
                raise Interrupted
    saved = [out_dir / LAST] + ([out_dir / BEST] if best else [])
    _save(run, saved, out_dir)
    return Eval(run.step, val_loss, sample, saved, best, len(val_ids), run.val_total)


def _validation_loss(run, val_ids, stop=lambda: False):
    """The loss over the validation text, its streams split over the workers, summed (the
    same loss as one worker's, up to the order of the sums). One worker polls stop()."""
    cfg = run.cfg
    streams = min(cfg.batch_size, len(val_ids) - 1)  # as evaluate() cuts the text
    rows = workers.rows(streams, run.group.rank, run.group.size)
    sums = np.array(loss_sums(run.params, run.spec, val_ids, cfg.batch_size, rows=rows,
                              engine=cfg.engine,
                              stop=stop if run.group.size == 1 else lambda: False))
    total, count = run.group.allreduce(sums)
    return float(total / count)


def _check_in_step(run):
    """RnnlmError if the workers' parameters have drifted apart (they never should: each
    makes the same update from the same sum), before anything is saved."""
    if run.group.size == 1:
        return
    mine = float(sum(np.add.reduce(p, axis=None, dtype=np.float64) for p in run.params.values()))
    sums = run.group.allgather(mine)
    if len(set(sums)) > 1:
        raise RnnlmError(f"the workers' parameters have drifted apart at step {run.step} "
                         f"(checksums {', '.join(f'{v:.17g}' for v in sums)}): stopping "
                         f"before anything is saved; the last checkpoint is intact")


def _append_metrics(out_dir, row):
    try:
        with open(out_dir / METRICS, "a", newline="") as f:
            csv.writer(f).writerow(row)
    except OSError as e:
        raise RnnlmError(f"cannot write {out_dir / METRICS}: {e.strerror or e}") from None
