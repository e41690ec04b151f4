"""rnnlm: character-level recurrent language models in NumPy, trained by truncated BPTT.

    import rnnlm
    model = rnnlm.load("runs/shk")          # a checkpoint, or a run directory (its best.npz)
    print(model.sample("ROMEO:", 200, seed=7))
    run_dir = rnnlm.train("notes.txt", time="2m")

The API lives in rnnlm/api.py; it is imported on first use, so that `import rnnlm` (and
the command line's start-up, which sets NumPy's threads first) loads nothing heavy.
"""

__version__ = "0.1.0"


class RnnlmError(Exception):
    """An error the user can act on; the CLI prints its message on one line."""


def __getattr__(name):  # rnnlm.load, rnnlm.train, rnnlm.Model: the API, loaded when asked for
    if name in ("load", "train", "Model"):
        from rnnlm import api
        return getattr(api, name)
    raise AttributeError(f"module 'rnnlm' has no attribute {name!r}")
