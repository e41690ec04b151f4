"""The one exception the library raises for what a user can act on."""


class RnnlmError(Exception):
    """An error the user can act on; the CLI prints its message on one line."""
