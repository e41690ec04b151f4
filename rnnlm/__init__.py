"""rnnlm: character-level recurrent language models in NumPy, trained by truncated BPTT.

    import rnnlm
    model = rnnlm.load("runs/shk")          # a checkpoint, or a run directory (its best.npz)
    print(model.sample("ROMEO:", 200, seed=7))
    run_dir = rnnlm.train("notes.txt", time="2m")

This file only hands names on: no module of rnnlm imports it. The API lives in
rnnlm/api.py; it is imported on first use, so that `import rnnlm` (and the command line's
start-up, which sets NumPy's threads first) loads nothing heavy.
"""
from rnnlm.errors import RnnlmError
from rnnlm.version import __version__

__all__ = ["RnnlmError", "__version__", "load", "train", "Model"]


def __getattr__(name):  # rnnlm.load, rnnlm.train, rnnlm.Model: the API, loaded when asked for
    if name in ("load", "train", "Model"):
        from rnnlm import api
        return getattr(api, name)
    raise AttributeError(f"module 'rnnlm' has no attribute {name!r}")
