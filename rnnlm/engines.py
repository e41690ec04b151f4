"""The two engines, by name. Both are modules with one contract:

    loss_and_grads(params, spec, x, y, state, masks=None) -> (loss, grads, new_state)
    forward(params, spec, x, state) -> (logits (B, T, V), new_state)
    stepper(params, spec) -> step(char_id) -> logits (V,) of the next character

over the same checkpoint-named parameters, so that a checkpoint never depends on the
engine that wrote it. "textbook" is the specification (rnnlm/textbook.py), "fast" the
same mathematics arranged for the machine (rnnlm/fast/).
"""
import importlib

ENGINES = {"fast": "rnnlm.fast.engine", "textbook": "rnnlm.textbook"}


def get(name="fast"):
    return importlib.import_module(ENGINES[name])


def describe(name="fast"):
    """The engine, and for the fast one which kernels it runs: "fast engine, numba kernels"."""
    if name != "fast":
        return f"{name} engine"
    from rnnlm.fast import kernels
    return f"fast engine, {kernels.active.name} kernels"
