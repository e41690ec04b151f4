"""What both engines share: the model's shape, its parameters' names, shapes and
initialisation, the zero state and dropout masks. Depends on no engine.

Parameters are a dict named and shaped like PyTorch's state_dict for
`rnn = nn.RNN|LSTM|GRU(V, H, L)` plus `out = nn.Linear(H, V)`; gate blocks are stacked in
PyTorch's order (LSTM i, f, g, o; GRU r, z, n), so checkpoints load into PyTorch unchanged.
"""
from dataclasses import dataclass

import numpy as np

from rnnlm.errors import RnnlmError

# --- The cells' structural facts: one table ---------------------------------------------
#
# Everything about a cell except its equations (rnnlm/textbook.py) and its fused steps
# (rnnlm/fast/kernels_*.py) lives here, and everything else reads it: the parameters'
# shapes, the textbook's names, the fast engine's window buffers, the memory estimate,
# inspect's states. Adding a cell is its equations, its kernels, and one entry below.

@dataclass(frozen=True)
class Cell:
    """A cell's structure. `gates` are the blocks of H rows stacked in W_ih, W_hh and
    the biases, in PyTorch's order, each with its nonlinearity in `activations`. `states`
    are what a layer carries from one step to the next, each (B, H). `separate_biases`
    names the gates whose b_ih and b_hh do not add up before the nonlinearity (the GRU's
    n, where r scales the hidden side). `window` is the fast engine's buffers for a window
    of T steps of B streams: name -> shape, in units "T", "T+1", "H", "G*H", "B"; with
    `own_gradients`, its backward pass needs dgx and dgh buffers of their own instead of
    writing over the activations."""

    gates: tuple
    activations: tuple
    states: tuple
    window: dict
    separate_biases: tuple = ()
    own_gradients: bool = False

    def window_shapes(self, T, B, H):
        size = {"T": T, "T+1": T + 1, "H": H, "G*H": len(self.gates) * H, "B": B}
        return {name: tuple(size[d] for d in dims) for name, dims in self.window.items()}


CELLS = {
    "rnn": Cell(gates=("h",), activations=("tanh",), states=("h",),
                window={"h": ("T+1", "H", "B"), "hh": ("H", "B")}),
    "lstm": Cell(gates=("i", "f", "g", "o"), activations=("sigmoid", "sigmoid", "tanh", "sigmoid"),
                 states=("h", "c"),
                 window={"h": ("T+1", "H", "B"), "c": ("T+1", "H", "B"),
                         "acts": ("T", "G*H", "B"),  # the gates after activation
                         "hh": ("G*H", "B")}),  # a step's recurrent product
    "gru": Cell(gates=("r", "z", "n"), activations=("sigmoid", "sigmoid", "tanh"), states=("h",),
                window={"h": ("T+1", "H", "B"),
                        "gh": ("T", "G*H", "B"),  # the hidden side W_hh h_prev + b_hh
                        "rzn": ("T", "G*H", "B")},  # r, z, n after activation
                separate_biases=("n",), own_gradients=True),
}


@dataclass(frozen=True)
class Spec:
    """What fixes the shapes of a model."""

    cell: str  # rnn | lstm | gru
    vocab_size: int  # V
    hidden: int  # H
    layers: int  # L

    @classmethod
    def of(cls, cfg, vocab_size=0):
        """The shape of cfg's model (a config.Config) over a vocabulary of vocab_size."""
        return cls(cfg.cell, vocab_size, cfg.hidden, cfg.layers)

    @property
    def name(self):
        """The model in words, as rnnlm says it everywhere: 'GRU 2 x 256'."""
        return f"{self.cell.upper()} {self.layers} x {self.hidden}"

    @property
    def facts(self):
        """The cell's row of CELLS."""
        return CELLS[self.cell]

    @property
    def gates(self):
        """Blocks of H rows stacked in W_ih, W_hh and the biases (G)."""
        return len(CELLS[self.cell].gates)

    @property
    def state_size(self):
        """Arrays in one layer's state tuple: 1, or 2 for the LSTM's (h, c)."""
        return len(CELLS[self.cell].states)


def layer_keys(layer):
    return (f"rnn.weight_ih_l{layer}", f"rnn.weight_hh_l{layer}",
            f"rnn.bias_ih_l{layer}", f"rnn.bias_hh_l{layer}")


def param_shapes(spec):
    """name -> shape, in PyTorch's order."""
    GH, H, V = spec.gates * spec.hidden, spec.hidden, spec.vocab_size
    shapes = {}
    for layer in range(spec.layers):
        w_ih, w_hh, b_ih, b_hh = layer_keys(layer)
        shapes[w_ih] = (GH, V if layer == 0 else H)
        shapes[w_hh] = (GH, H)
        shapes[b_ih] = (GH,)
        shapes[b_hh] = (GH,)
    shapes["out.weight"] = (V, H)
    shapes["out.bias"] = (V,)
    return shapes


def count(spec):
    """Number of parameters, computed from the shapes alone (nothing allocated)."""
    return sum(int(np.prod(shape)) for shape in param_shapes(spec).values())


def init_params(spec, rng, dtype=np.float32, init="uniform", forget_bias=0.0):
    """PyTorch's default: every entry U(-1/sqrt(H), 1/sqrt(H)), the output layer
    U(-1/sqrt(H), 1/sqrt(H)) too. With init="orthogonal", each gate's block of W_hh is a
    random orthogonal matrix instead. The LSTM forget-gate biases (b_ih + b_hh) start at
    forget_bias."""
    bound = 1.0 / np.sqrt(spec.hidden)
    params = {}
    for name, shape in param_shapes(spec).items():
        params[name] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    H = spec.hidden
    for layer in range(spec.layers):
        _, w_hh, b_ih, b_hh = layer_keys(layer)
        if init == "orthogonal":
            for g in range(spec.gates):
                q, r = np.linalg.qr(rng.standard_normal((H, H)))
                params[w_hh][g * H:(g + 1) * H] = q * np.sign(np.diag(r))
        if "f" in spec.facts.gates:  # the LSTM's forget gate
            f = spec.facts.gates.index("f")
            params[b_ih][f * H:(f + 1) * H] = forget_bias / 2
            params[b_hh][f * H:(f + 1) * H] = forget_bias / 2
    return params


def zero_state(spec, batch, dtype=np.float32):
    """Hidden state for every layer: a list of tuples (h,) or (h, c), each (B, H)."""
    return [tuple(np.zeros((batch, spec.hidden), dtype) for _ in range(spec.state_size))
            for _ in range(spec.layers)]


def check_params(params, spec):
    """Raise RnnlmError unless params has exactly the names and shapes spec asks for."""
    expected = param_shapes(spec)
    missing = sorted(set(expected) - set(params))
    if missing:
        raise RnnlmError(f"missing parameter(s): {', '.join(missing)}")
    extra = sorted(set(params) - set(expected))
    if extra:
        raise RnnlmError(f"unexpected parameter(s): {', '.join(extra)}")
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise RnnlmError(f"parameter {name} has shape {tuple(params[name].shape)}, "
                             f"expected {shape}")


def dropout_masks(spec, batch, seq_len, p, rng, dtype=np.float32, locked=False):
    """Inverted-dropout masks for every layer's output: 0 or 1/(1-p), each (T, H, B), so
    that masks[layer][t] is the (H, B) mask of step t's column vectors. Drawn in the
    masks' own memory. None when p is 0.

    locked: variational ("locked") dropout (Gal and Ghahramani, 2016; AWD-LSTM): one mask
    per stream for the whole window, the same at every step, as a read-only (T, H, B)
    view of one (H, B) draw."""
    if p <= 0:
        return None
    draw = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    steps = 1 if locked else seq_len
    masks = rng.random((spec.layers, steps, spec.hidden, batch), dtype=draw)
    masks = masks.astype(dtype, copy=False)
    for m in masks:
        np.multiply(m < 1.0 - p, 1.0 / (1.0 - p), out=m)
    if locked:
        return [np.broadcast_to(m, (seq_len,) + m.shape[1:]) for m in masks]
    return list(masks)


def weight_drop_masks(spec, p, rng, dtype=np.float32):
    """DropConnect on each layer's W_hh ("weight drop", AWD-LSTM): an inverted mask of
    W_hh's shape (G*H, H), 0 or 1/(1-p), one per layer for the whole update, the same for
    every stream and step. None when p is 0."""
    if p <= 0:
        return None
    draw = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    shape = (spec.layers, spec.gates * spec.hidden, spec.hidden)
    masks = rng.random(shape, dtype=draw).astype(dtype, copy=False)
    for m in masks:
        np.multiply(m < 1.0 - p, 1.0 / (1.0 - p), out=m)
    return list(masks)


def carry_over(params, old_params, old_chars, new_chars):
    """Fine-tuning onto a larger vocabulary: copy a trained model's weights into params,
    freshly initialised for the vocabulary new_chars, which holds every character of
    old_chars. Each old character keeps its column of W_ih (layer 0) and its row of the
    output layer; new characters keep their fresh ones; everything else is copied."""
    where = {ch: i for i, ch in enumerate(new_chars)}
    index = np.array([where[ch] for ch in old_chars])  # old id -> new id
    for name, old in old_params.items():
        if name == "rnn.weight_ih_l0":
            params[name][:, index] = old
        elif name.startswith("out."):
            params[name][index] = old
        else:
            params[name][...] = old
    return params
