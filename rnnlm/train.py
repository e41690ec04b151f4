"""The training loop: windows in, updates out, with evaluation and checkpoints.

`train()` is a generator of events (Begin, Step, Eval) so that the caller decides what to
show; nothing here prints. Nothing here is specific to a cell either: the model is a pair
of functions over a parameter dict.
"""
import csv
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlm import RnnlmError
from rnnlm import checkpoint as ckpt_io
from rnnlm.config import to_yaml
from rnnlm.data import Streams, min_corpus_length, split
from rnnlm.model import Spec, dropout_masks, init_params, loss_and_grads, zero_state
from rnnlm.optim import clip_gradients, learning_rate, make_optimizer
from rnnlm.sample import evaluate, generate

METRICS = ("step", "epoch", "train_loss", "val_loss", "grad_norm", "lr", "chars_per_sec",
           "elapsed_s")


@dataclass
class Begin:
    lines: list  # what the run is about to do, for the log


@dataclass
class Step:
    step: int  # updates done
    epoch: float  # passes over the training text, fractional
    loss: float  # this window's mean cross-entropy, nats/char
    grad_norm: float  # global norm before clipping
    lr: float
    chars_per_sec: float  # over the last log interval


@dataclass
class Eval:
    step: int
    val_loss: float  # nats/char, or None without a validation split
    sample: str
    saved: list  # checkpoint paths written
    best: bool  # val_loss is the lowest so far


class Run:
    """Everything that changes as training goes, and so everything a checkpoint holds."""

    def __init__(self, cfg, spec, vocab, params, rng):
        self.cfg, self.spec, self.vocab = cfg, spec, vocab
        self.params = params
        self.optimizer = make_optimizer(cfg, params)
        self.rng = rng
        self.step = 0  # updates done
        self.epoch = 0  # completed passes
        self.window = 0  # next window within the epoch
        self.state = zero_state(spec, cfg.batch_size)
        self.best_val = None

    def to_checkpoint(self):
        meta = {"config": dataclasses.asdict(self.cfg), "step": self.step,
                "epoch": self.epoch, "window": self.window, "best_val_loss": self.best_val,
                "rng": self.rng.bit_generator.state}
        return ckpt_io.Checkpoint(self.params, self.spec, self.vocab, meta,
                                  dict(self.optimizer.slots), self.state)


def _nats_to_bits(nats):
    return nats / math.log(2)


def train(cfg, vocab, ids, out_dir, corpus_name="corpus"):
    """Train on ids (encoded with vocab) as cfg says, writing into out_dir. Yields events."""
    train_ids, val_ids = split(ids, cfg.val_fraction)
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
    streams = Streams(train_ids, cfg.batch_size, cfg.seq_len)
    spec = Spec(cfg.cell, vocab.size, cfg.hidden, cfg.layers)
    rng = np.random.default_rng(cfg.seed)
    run = Run(cfg, spec, vocab, init_params(spec, rng, np.float32, cfg.init, cfg.forget_bias),
              rng)
    out_dir = _prepare(Path(out_dir), cfg)
    n_params = sum(p.size for p in run.params.values())
    trimmed = len(train_ids) - streams.chars_per_epoch
    yield Begin([
        f"corpus: {corpus_name}, {len(ids):,} characters, vocabulary {vocab.size}",
        f"split: {len(train_ids):,} train, {len(val_ids):,} validation",
        f"model: {cfg.cell}, {cfg.layers} x {cfg.hidden}, {n_params:,} parameters",
        f"epoch: {streams.windows:,} windows of {cfg.batch_size} x {cfg.seq_len}; "
        f"{trimmed:,} trailing characters not visited",
        f"writing to {out_dir}",
    ])
    yield from _loop(run, streams, val_ids, out_dir)


def _prepare(out_dir, cfg):
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        with open(out_dir / "metrics.csv", "w", newline="") as f:
            csv.writer(f).writerow(METRICS)
    except OSError as e:
        raise RnnlmError(f"cannot write to output directory {out_dir}: "
                         f"{e.strerror or e}") from None
    return out_dir


def _loop(run, streams, val_ids, out_dir):
    cfg = run.cfg
    chars_per_step = cfg.batch_size * cfg.seq_len
    started = time.perf_counter()
    interval_loss, interval_steps, interval_time = 0.0, 0, 0.0
    while True:
        t0 = time.perf_counter()
        if run.window == 0:
            run.state = zero_state(run.spec, cfg.batch_size)  # the streams start over
        x, y = streams.window(run.window)
        masks = dropout_masks(run.spec, cfg.batch_size, cfg.seq_len, cfg.dropout, run.rng)
        loss, grads, state = loss_and_grads(run.params, run.spec, x, y, run.state, masks)
        norm = clip_gradients(grads, cfg.clip_norm, cfg.clip_value)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise RnnlmError(
                f"training diverged at step {run.step + 1}: the loss is {loss:.4g} and the "
                f"gradient norm {norm:.4g}; nothing of it was saved, and {out_dir}/last.npz "
                f"is the last good checkpoint. Try a lower lr (now {cfg.lr:g}) or clip_norm")
        lr = learning_rate(cfg, run.step)
        run.optimizer.step(run.params, grads, lr)
        run.state = state
        run.step += 1
        run.window += 1
        if run.window == streams.windows:
            run.window, run.epoch = 0, run.epoch + 1
        dt = time.perf_counter() - t0
        interval_loss += loss
        interval_steps += 1
        interval_time += dt
        epoch = run.epoch + run.window / streams.windows
        yield Step(run.step, epoch, loss, norm, lr,
                   chars_per_step * interval_steps / max(interval_time, 1e-9))

        elapsed = time.perf_counter() - started
        last = run.step >= cfg.max_steps or (0 < cfg.max_seconds <= elapsed)
        evaluating = last or run.step % cfg.eval_every == 0
        val_loss = None
        if evaluating:
            event = _evaluate_and_save(run, val_ids, out_dir)
            val_loss = event.val_loss
            yield event
        if evaluating or run.step % cfg.log_every == 0:
            _append_metrics(out_dir, [
                run.step, f"{epoch:.4f}", f"{interval_loss / interval_steps:.5f}",
                "" if val_loss is None else f"{val_loss:.5f}", f"{norm:.4f}", f"{lr:.6g}",
                f"{chars_per_step * interval_steps / max(interval_time, 1e-9):.0f}",
                f"{time.perf_counter() - started:.1f}"])
            interval_loss, interval_steps, interval_time = 0.0, 0, 0.0
        if last:
            return


def _evaluate_and_save(run, val_ids, out_dir):
    cfg = run.cfg
    val_loss = None
    if len(val_ids) >= 2:
        val_loss = evaluate(run.params, run.spec, val_ids, cfg.batch_size)
    best = val_loss is not None and (run.best_val is None or val_loss < run.best_val)
    if best:
        run.best_val = val_loss
    sample = "".join(generate(run.params, run.spec, run.vocab,
                              np.random.default_rng([cfg.seed, run.step]),
                              length=cfg.sample_length, temperature=0.8))
    checkpoint = run.to_checkpoint()
    saved = [out_dir / "last.npz"]
    ckpt_io.save(saved[0], checkpoint)
    if best:
        saved.append(out_dir / "best.npz")
        ckpt_io.save(saved[1], checkpoint)
    return Eval(run.step, val_loss, sample, saved, best)


def _append_metrics(out_dir, row):
    try:
        with open(out_dir / "metrics.csv", "a", newline="") as f:
            csv.writer(f).writerow(row)
    except OSError as e:
        raise RnnlmError(f"cannot write {out_dir}/metrics.csv: {e.strerror or e}") from None
