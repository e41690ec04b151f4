"""rnnlm: character-level recurrent language models in NumPy, trained by truncated BPTT."""

__version__ = "0.1.0"


class RnnlmError(Exception):
    """An error the user can act on; the CLI prints its message on one line."""
