"""How far back the gradient reaches: the norm of dL_t/ds_{t-k}, the gradient of the loss
at step t with respect to the hidden state k steps earlier, for k = 0..K.

By the chain rule the gradient is a product of k Jacobians,

    dL_t/ds_{t-k} = J_{t-k+1}^T ... J_t^T dL_t/ds_t,      J_j = ds_j/ds_{j-1},

and for the RNN J_j = diag(1 - s_j^2) W. Since |tanh'| <= 1, where W's largest singular
value is below 1 every factor shrinks the gradient and the product vanishes geometrically;
where the factors' norms are above 1, it explodes (clipping the gradient's norm then cuts
it). LSTM and GRU carry state through a sum (c = f c' + i g; h = (1 - z) n + z h'), whose
Jacobian is close to the identity where the gates let the state through, so their
gradient reaches further. Training truncates the sum at the window (seq_len): what lies
further back than that never reaches the weights.

The measurement runs the textbook engine's own cells (rnnlm/textbook.py) forward over
windows of text and back from the loss at each window's last step alone, recording the
gradient that reaches every earlier state: nothing here differentiates a second time.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm import textbook
from rnnlm.params import layer_keys


def state_gradients(params, spec, ids, activation="tanh"):
    """ids (B, T+1): B windows of text. Runs the model over the first T characters of each
    from a zero state and backpropagates the cross-entropy of predicting the last character
    from the last step (t = T-1) alone. Returns g (T, L, H, B), float64, where g[k, l] is
    dL/ds_{T-1-k} of layer l, one column per window."""
    layers, out = textbook.to_textbook(params, spec)
    (B, T), L = (ids.shape[0], ids.shape[1] - 1), spec.layers
    onehot = np.eye(spec.vocab_size)
    states = [tuple(np.zeros((spec.hidden, B)) for _ in range(spec.state_size))
              for _ in range(L)]
    caches = {}
    for t in range(T):
        inp = onehot[:, ids[:, t]]
        for l in range(L):
            states[l], caches[l, t] = textbook.cell_forward(spec.cell, inp, states[l],
                                                            layers[l], activation)
            inp = states[l][0]
    dlogits = textbook.softmax(out["V"] @ inp + out["by"])  # y - onehot(target), a loss
    dlogits[ids[:, T], np.arange(B)] -= 1                   # per column (not averaged)
    grads = np.zeros((T, L, spec.hidden, B))
    dnext = [tuple(np.zeros_like(a) for a in s) for s in states]  # from step t+1
    dabove = out["V"].T @ dlogits  # reaching the top layer's state at the last step
    for t in reversed(range(T)):
        for l in reversed(range(L)):
            ds = (dabove + dnext[l][0],) + dnext[l][1:]
            grads[T - 1 - t, l] = ds[0]
            g = textbook.cell_backward(spec.cell, ds, caches[l, t])
            dnext[l], dabove = g["dstate_prev"], g["dx_t"]  # to step t-1; to the layer below
        dabove = np.zeros((spec.hidden, B))  # steps before the last have no loss of their own
    return grads


@dataclass
class Flow:
    """What `measure` found for one model."""

    label: str
    cell: str
    trained: bool  # a checkpoint's model, or one freshly initialised
    norms: np.ndarray  # (K+1, L): mean over positions of |dL_t/ds_{t-k}| of each layer
    sigma: list  # the largest singular value of each layer's W_hh (scaled)
    window_norm: float  # the global norm of one training window's gradient (of the mean loss)
    clip_norm: float
    seq_len: int  # the training window: where truncation stops the gradient
    positions: int  # places averaged over: fewer than asked where the text has fewer

    @property
    def ratios(self):
        """norms relative to distance 0, each layer by its own."""
        return self.norms / self.norms[0]

    def reach(self, level=1e-3, layer=-1):
        """The first distance k where the gradient falls below `level` of its size at k = 0,
        or None where it never does within the distances measured."""
        below = np.flatnonzero(self.ratios[:, layer] < level)
        return int(below[0]) if below.size else None

    def overflow(self, layer=-1):
        """The first distance k where the gradient left float64's range, or None."""
        beyond = np.flatnonzero(~np.isfinite(self.norms[:, layer]))
        return int(beyond[0]) if beyond.size else None

    def summary(self, distance):
        """One line: W_hh's largest singular values, where the gradient fades or overflows,
        clipping."""
        reach, overflow = self.reach(), self.overflow()
        layers = f" (layers 1..{len(self.sigma)})" if len(self.sigma) > 1 else ""
        fades = (f"from k = {reach}" if reach is not None else f"nowhere up to k = {distance}")
        if overflow is not None and (reach is None or overflow < reach):
            fades = f"nowhere: it grows beyond float64's range from k = {overflow}"
        clipped = (f", which clip_norm {self.clip_norm:g} would scale by {self.clip_scale:.3g}"
                   if self.clip_scale < 1 else f" (clip_norm {self.clip_norm:g}: not clipped)")
        return (f"{self.label}: largest singular value of W_hh "
                + ", ".join(f"{s:.4g}" for s in self.sigma) + layers
                + f"; below 1e-3 of its start {fades}"
                + f"; a training window's gradient norm {self.window_norm:.4g}{clipped}")

    @property
    def clip_scale(self):
        """What clipping by clip_norm would multiply the window's gradient by (1: nothing)."""
        if self.clip_norm <= 0 or self.window_norm <= self.clip_norm:
            return 1.0
        return self.clip_norm / self.window_norm


def scaled(params, spec, factor):
    """A copy of params with every layer's W_hh multiplied by factor."""
    params = dict(params)
    for layer in range(spec.layers):
        key = layer_keys(layer)[1]
        params[key] = params[key] * factor
    return params


def measure(params, spec, ids, label, distance=200, positions=32, seq_len=64, clip_norm=5.0,
            scale_whh=1.0, activation="tanh", seed=0, trained=False):
    """The gradient's reach for distances 0..distance, averaged over `positions` places in
    ids (a text encoded with the model's vocabulary), each reached after a warm-up of
    seq_len characters so that the states are those of running text, not of a zero
    start. Also the largest singular value of each W_hh, and the global norm of the
    gradient of one training window (positions streams of seq_len) against clip_norm."""
    if distance < 1 or positions < 1 or seq_len < 1:
        raise RnnlmError("distance, positions and seq_len must be at least 1")
    span = seq_len + distance + 2  # warm-up, the distances, and the character predicted
    if len(ids) < span:
        raise RnnlmError(f"the text is too short for the measurement: {len(ids):,} characters, "
                         f"and a distance of {distance} after a warm-up of {seq_len} needs "
                         f"{span:,} (lower --distance)")
    params = scaled({k: v.astype(np.float64) for k, v in params.items()}, spec, scale_whh)
    rng = np.random.default_rng(seed)
    room = len(ids) - span + 1  # the distinct places the text has
    starts = rng.integers(0, room, size=positions) if positions < room else np.arange(room)
    windows = np.stack([ids[s:s + span] for s in starts]).astype(np.intp)
    try:
        with np.errstate(all="ignore"):  # an exploding gradient may leave float64's range
            grads = state_gradients(params, spec, windows, activation)[:distance + 1]
            norms = np.linalg.norm(grads, axis=2).mean(axis=-1)  # (K+1, L)
    except MemoryError:  # (distance + warm-up) x layers x hidden x positions float64s
        raise RnnlmError(f"out of memory measuring {label}: lower --positions, --distance "
                         f"or --hidden") from None
    if not np.isfinite(norms[0]).all():
        raise RnnlmError(f"{label}: the states themselves left float64's range over the "
                         f"{span - 1} steps run (warm-up and distance): nothing to measure; "
                         f"lower --scale-whh or --distance")
    sigma = [float(np.linalg.svd(params[layer_keys(l)[1]], compute_uv=False)[0])
             for l in range(spec.layers)]
    x, y = windows[:, :seq_len], windows[:, 1:seq_len + 1]
    state = [tuple(np.zeros((len(starts), spec.hidden)) for _ in range(spec.state_size))
             for _ in range(spec.layers)]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # the loss may be inf
        _, window_grads, _ = textbook.loss_and_grads(params, spec, x, y, state,
                                                     activation=activation)
        window_norm = float(np.sqrt(sum(float((g ** 2).sum()) for g in window_grads.values())))
    return Flow(label, spec.cell, trained, norms, sigma, window_norm, clip_norm, seq_len,
                len(starts))


BUILTIN_CHARS = 300_000  # of the built-in corpus, where no text is given: plenty of positions


ROWS = (0, 1, 2, 5, 10, 20, 50, 100, 150, 200, 300, 500)  # the table's, with seq_len and K


def rows(flows, distance):
    """The distances k the table shows: ROWS up to K, each flow's window, and K."""
    return sorted({k for k in ROWS if k <= distance}
                  | {f.seq_len for f in flows if f.seq_len <= distance} | {distance})


def report(flows, distance, positions):
    """The table of ratios by distance, a column a model, and a summary line each."""
    width = max(14, *(len(f.label) + 2 for f in flows))
    used = sorted({f.positions for f in flows})
    over = " or ".join(map(str, used)) + " positions" + (
        "" if used == [positions] else f" ({positions} asked: the text has room for no more)")
    lines = [f"|dL_t/ds_(t-k)| relative to k = 0 (the top layer), mean over {over}",
             f"{'k':>5}" + "".join(f"{f.label:>{width}}" for f in flows)]
    cell = lambda r: f"{r:>{width}.3e}" if np.isfinite(r) else f"{'overflow':>{width}}"
    lines += [f"{k:>5}" + "".join(cell(f.ratios[k, -1]) for f in flows)
              for k in rows(flows, distance)]
    return lines + [f.summary(distance) for f in flows]


def compare(text_path=None, checkpoints=(), cells=(), hidden=256, layers=2, distance=200,
            positions=32, seq_len=None, scale_whh=1.0, activation="tanh", seed=0,
            encoding=None, notify=lambda message: None):
    """measure() for each checkpoint (a run directory means its best.npz) and for a freshly
    initialised model of each cell (hidden x layers, PyTorch's initialisation, from seed),
    on the text at text_path (default: the built-in corpus). Checkpoints keep their own
    seq_len and clip_norm; fresh models take seq_len (default: the configured default) and
    the default clip_norm. The text is read in `encoding`, by default each checkpoint's
    own (utf-8 for fresh models). Returns a list of Flow, checkpoints first."""
    from rnnlm.io import checkpoint, corpus, data, rundir
    from rnnlm import config
    from rnnlm.params import Spec, init_params

    if not (np.isfinite(scale_whh) and scale_whh >= 0):  # NaN stops the SVD, inf the sums
        raise RnnlmError(f"--scale-whh must be a finite number >= 0, got {scale_whh!r}")
    if activation != "tanh" and (checkpoints or any(c != "rnn" for c in cells)):
        raise RnnlmError("the identity activation (--linear) is the vanilla RNN's: use it "
                         "with --cell rnn alone")
    defaults = config.Config()
    common = dict(distance=distance, positions=positions, scale_whh=scale_whh,
                  activation=activation, seed=seed)
    flows = []
    builtin = None if text_path is not None else data.builtin_text(BUILTIN_CHARS)
    for path in checkpoints:
        path = rundir.checkpoint_of(path)
        ckpt = checkpoint.load(path)
        if builtin is None:
            ids, skipped = data.encode_file(text_path, ckpt.vocab, encoding or ckpt.encoding,
                                            skip_unknown=True)
        else:
            ids, skipped = ckpt.vocab.encode(builtin, skip_unknown=True)
        if skipped:
            notify(f"{path}: {skipped:,} characters of the text are not in its vocabulary "
                   f"and were left out")
        cfg = ckpt.meta.config
        label = f"{path.resolve().parent.name} ({ckpt.spec.cell}, step {ckpt.meta.step})"
        flows.append(measure(ckpt.params, ckpt.spec, ids, label,
                             seq_len=cfg.get("seq_len", defaults.seq_len),
                             clip_norm=cfg.get("clip_norm", defaults.clip_norm), trained=True,
                             **common))
    if cells:
        if builtin is None:
            text = corpus.read([Path(text_path)], encoding or "utf-8")
            vocab, ids = text.vocab, text.ids
        else:
            vocab, ids = data.text_corpus(builtin)
        for cell in cells:
            spec = Spec(cell, vocab.size, hidden, layers)
            params = init_params(spec, np.random.default_rng(seed), np.float64)
            label = f"{spec.name}, initialised"
            flows.append(measure(params, spec, ids, label, seq_len=seq_len or defaults.seq_len,
                                 clip_norm=defaults.clip_norm, **common))
    return flows
