"""The one exception family the CLI turns into a one-line message and a non-zero exit.

Anything a user can cause and fix (a bad config, a malformed table, an unknown preset) raises
a :class:`LarrError` subclass with a one-line message; any other exception is a bug and keeps
its traceback.
"""


class LarrError(ValueError):
    """An expected failure the user can fix; its message is one line."""
