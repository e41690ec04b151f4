"""The two engines, by name, and everything the rest of rnnlm asks of them.

Both engines are modules with one contract:

    loss_and_grads(params, spec, x, y, state, masks=None) -> (loss, grads, new_state)
    forward(params, spec, x, state) -> (logits (B, T, V), new_state)
    stepper(params, spec) -> step, where step(char_id) -> logits (V,) of the next character
                             and step.state is the network's state after the characters fed
                             (per layer, (h,) or (h, c), each (1, H))

over the same checkpoint-named parameters, so that a checkpoint never depends on the
engine that wrote it. "textbook" is the specification (rnnlm/textbook.py), "fast" the
same mathematics arranged for the machine (rnnlm/fast/). The fast engine's compiled
kernels also serve the optimizer's update; no module but this one imports rnnlm.fast.
"""
import numpy as np

from rnnlm.errors import RnnlmError

from rnnlm import textbook
from rnnlm.fast import blas, engine as fast, kernels
from rnnlm.fast.buffers import scratch
from rnnlm.params import layer_keys

ENGINES = {"fast": fast, "textbook": textbook}


def get(name="fast"):
    """The engine module called name."""
    return ENGINES[name]


def loss_and_grads(name, params, spec, x, y, state, masks=None, weight_masks=None):
    """The named engine's loss_and_grads over one window, with weight drop where
    weight_masks (params.weight_drop_masks) are given: DropConnect on each layer's W_hh,
    applied here, once for both engines. The window runs on W~ = W_hh * M, so
    dL/dW_hh = dL/dW~ * M: a dropped entry gets no gradient."""
    if weight_masks is None:
        return get(name).loss_and_grads(params, spec, x, y, state, masks)
    dropped = dict(params)
    for layer, m in enumerate(weight_masks):  # W~ in kept buffers (fast/buffers.py: no
        w_hh = layer_keys(layer)[1]            # fresh MBs to page-fault in every update)
        out = scratch(f"dropped_whh{layer}", m.shape, params[w_hh].dtype)
        dropped[w_hh] = np.multiply(params[w_hh], m, out=out)
    loss, grads, new_state = get(name).loss_and_grads(dropped, spec, x, y, state, masks)
    for layer, m in enumerate(weight_masks):
        grads[layer_keys(layer)[1]] *= m
    return loss, grads, new_state


def describe(name="fast"):
    """The engine, and for the fast one which kernels and BLAS it runs: "fast engine, numba
    kernels, products by openblas 0.3.31 (SkylakeX kernels)"."""
    if name != "fast":
        return f"{name} engine"
    return f"fast engine, {kernels.active.name} kernels, products by {blas.active.describe()}"


def precision(cfg, notify=None):
    """The precision of the products a run with `cfg` computes in: cfg.precision, where
    "auto" becomes bf16 or float32 as this machine measures (fast/blas.py: bf16_pays).
    bfloat16 products are the fast engine's alone."""
    if cfg.precision == "bf16" and cfg.engine != "fast":
        raise RnnlmError(f"precision bf16 is the fast engine's (engine={cfg.engine} computes "
                         f"in float32 or float64)")
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if cfg.engine == "fast" and blas.bf16_pays(notify) else "float32"


def load_kernels(name=None, notify=None, prefer=None, precision="float32", products=None):
    """Choose the fast engine's kernels now (fast/kernels.py: numba where it imports, else
    numpy; $RNNLM_KERNELS or name forces one), compiling or loading them from the cache,
    and the BLAS of its products (fast/blas.py: as measured on this machine; $RNNLM_BLAS
    forces one, and so does `products`; MKL's bfloat16 products where `precision` is
    "bf16"). Returns the kernels' name."""
    chosen = kernels.load(name, notify, prefer).name
    blas.load(products, notify=notify, precision=precision)
    return chosen


def products(notify=None, precision="float32"):
    """The library that runs the fast engine's products, as this machine chose it (or
    $RNNLM_BLAS forces it): "openblas" or "mkl"."""
    return blas.load(notify=notify, precision=precision).name


def cores():
    """The cores this process may run on (fast/blas.py counts them for its measurements;
    the run's thread tuner counts them here)."""
    return blas.cores()


def limit_threads(n):
    """Run the matrix products on n threads from now on, in a process whose NumPy has
    loaded already (threadpoolctl); RnnlmError where that cannot be done."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise RnnlmError("takes effect only where rnnlm starts the process: run it as the "
                         "rnnlm command or python -m rnnlm") from None
    threadpool_limits(n)


def kernel_name():
    """The fast engine's kernels in use: "numpy" or "numba"."""
    return kernels.active.name


def adam_update(p, g, m, v, beta1, beta2, step_size, v_scale, eps):
    """One Adam update of p, m, v in place, as the fast engine's kernel does it (one pass
    over memory where Numba compiles it)."""
    kernels.active.adam(p, g, m, v, beta1, beta2, step_size, v_scale, eps)
