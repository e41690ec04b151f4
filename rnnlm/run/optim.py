"""Optimizers over parameter dicts, gradient clipping and the learning-rate schedule.

An optimizer keeps its state in `slots`, a flat dict of arrays (checkpoints save it as is),
and updates every parameter in place with the same few ufuncs (Adam with one fused kernel of
the fast engine's, engines.adam_update); none has per-weight code.
"""
import math

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm import engines


class Optimizer:
    """Updates every parameter in place. Each update writes its intermediate results into
    `tmp`, a view of one scratch array as large as the largest parameter, so a step
    allocates nothing: a fresh temporary of a few MB page-faults on first touch, and these
    run for every parameter every step."""

    slot_kinds = ()  # per-parameter state arrays, e.g. ("m", "v")

    def __init__(self, params, **hyper):
        self.hyper = hyper
        self.slots = {f"{kind}.{name}": np.zeros_like(p)
                      for kind in self.slot_kinds for name, p in params.items()}
        self.slots["t"] = np.zeros((), np.int64)  # updates done
        self.scratch = np.empty(0)

    def step(self, params, grads, lr):
        self.slots["t"] += 1
        largest = max(p.size for p in params.values())
        dtype = next(iter(params.values())).dtype
        if self.scratch.size < largest or self.scratch.dtype != dtype:
            self.scratch = np.empty(largest, dtype)
        for name, p in params.items():
            tmp = self.scratch[:p.size].reshape(p.shape)
            slots = (self.slots[f"{k}.{name}"] for k in self.slot_kinds)
            self.update(p, grads[name], lr, *slots, tmp)

    def load_slots(self, slots):
        """Take slot arrays from a checkpoint; RnnlmError if any is missing or misshapen."""
        for key, mine in self.slots.items():
            if key not in slots:
                raise RnnlmError(f"optimizer slot {key} is missing")
            if slots[key].shape != mine.shape:
                raise RnnlmError(f"optimizer slot {key} has shape {slots[key].shape}, "
                                 f"expected {mine.shape}")
            mine[...] = slots[key]


class SGD(Optimizer):
    """PyTorch's momentum: buf = momentum * buf + g;  p -= lr * buf."""
    slot_kinds = ("buf",)

    def update(self, p, g, lr, buf, tmp):
        buf *= self.hyper["momentum"]
        buf += g
        np.multiply(buf, lr, out=tmp)
        p -= tmp


class Adagrad(Optimizer):
    """sum += g^2;  p -= lr * g / (sqrt(sum) + eps). min-char-rnn's optimizer."""
    slot_kinds = ("sum",)

    def update(self, p, g, lr, acc, tmp):
        np.multiply(g, g, out=tmp)
        acc += tmp
        _scaled_step(p, g, acc, lr, 1.0, self.hyper["eps"], tmp)


class RMSprop(Optimizer):
    """v = alpha v + (1 - alpha) g^2;  p -= lr * g / (sqrt(v) + eps)."""
    slot_kinds = ("v",)

    def update(self, p, g, lr, v, tmp):
        alpha = self.hyper["alpha"]
        v *= alpha
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - alpha
        v += tmp
        _scaled_step(p, g, v, lr, 1.0, self.hyper["eps"], tmp)


class Adam(Optimizer):
    """Adam with bias correction, written as PyTorch writes it."""
    slot_kinds = ("m", "v")

    def update(self, p, g, lr, m, v, tmp):
        """m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
        p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps), as one kernel: one pass
        over memory where Numba compiles it (measured 3 ms -> 0.7 ms per update of the
        2-layer LSTM of 256)."""
        t, b1, b2 = int(self.slots["t"]), self.hyper["beta1"], self.hyper["beta2"]
        engines.adam_update(p, g, m, v, b1, b2, lr / (1.0 - b1 ** t),
                            1.0 / math.sqrt(1.0 - b2 ** t), self.hyper["eps"])


def _scaled_step(p, num, sq, lr, sq_scale, eps, tmp):
    """p -= lr * num / (sqrt(sq) * sq_scale + eps), through tmp."""
    np.sqrt(sq, out=tmp)
    if sq_scale != 1.0:
        tmp *= sq_scale
    tmp += eps
    np.divide(num, tmp, out=tmp)
    tmp *= lr
    p -= tmp


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam}


def make_optimizer(cfg, params):
    return OPTIMIZERS[cfg.optimizer](params, momentum=cfg.momentum, beta1=cfg.beta1,
                                     beta2=cfg.beta2, alpha=cfg.alpha, eps=cfg.eps)


def global_norm(grads):
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def clip_gradients(grads, max_norm=0.0, max_value=0.0):
    """Scale all gradients together so that their global norm is at most max_norm (0: no
    limit), then clip each entry to [-max_value, max_value] (0: no limit). In place.
    Returns the global norm before clipping."""
    norm = global_norm(grads)
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= scale
    if max_value > 0:
        for g in grads.values():
            np.clip(g, -max_value, max_value, out=g)
    return norm


def progress(cfg, step, elapsed=0.0, reserve=0.0):
    """How far a run is from its start (0) to its end (1): by updates (step of max_steps)
    or by wall-clock time (elapsed seconds of the max_seconds budget, less the `reserve`
    kept for the final evaluation), whichever ends the run first."""
    parts = []
    if cfg.max_steps > 0:
        parts.append(step / cfg.max_steps)
    if cfg.max_seconds > 0:
        parts.append(elapsed / max(cfg.max_seconds - reserve, 1e-9))
    return min(max(parts, default=0.0), 1.0)


def learning_rate(cfg, step, elapsed=0.0, reserve=0.0):
    """The rate for update number `step` (0-based), `elapsed` seconds into the run.

    constant: lr.  step: lr * decay_rate ** (step // decay_every).  cosine, linear: from lr
    down to min_lr over the run, as `progress` measures it: with a time budget, the rate
    reaches its floor as the budget ends. Any of them after a linear warm-up over
    warmup_steps.
    """
    if cfg.schedule == "step":
        lr = cfg.lr * cfg.decay_rate ** (step // cfg.decay_every)
    elif cfg.schedule == "cosine":
        done = progress(cfg, step, elapsed, reserve)
        lr = cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * done))
    elif cfg.schedule == "linear":
        lr = cfg.lr + (cfg.min_lr - cfg.lr) * progress(cfg, step, elapsed, reserve)
    else:
        lr = cfg.lr
    if step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    return lr


def on_resume(saved, cfg, step, elapsed):
    """What the schedule does as a run resumes at `step`, `elapsed` seconds in, under cfg
    where it ran under `saved` (its checkpoint's settings), in one line; None where the
    rate neither depends on the run's limits nor changed. A resume that moves the end
    (--max-steps, --time) moves a cosine or linear schedule with it: the rate may jump
    back up, or be left so near its floor that the remaining updates barely move."""
    before, now = learning_rate(saved, step, elapsed), learning_rate(cfg, step, elapsed)
    if cfg.schedule in ("constant", "step") and math.isclose(before, now):
        return None
    done = progress(cfg, step, elapsed)
    line = (f"schedule: {cfg.schedule}, the rate {now:.3g} from here ({done:.0%} of the "
            f"run done)" + ("" if math.isclose(before, now, rel_tol=0.01) else
                            f", where it had reached {before:.3g}"))
    if cfg.schedule in ("cosine", "linear") and now < 0.01 * cfg.lr:
        line = (f"warning: {line}: what is left of the run barely moves the weights; for "
                f"more learning, give --set schedule=constant or --set min_lr=...")
    return line
