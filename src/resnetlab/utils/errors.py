"""Errors a user can cause.  The CLI prints them as one line (no traceback) and exits 2."""


class UserError(Exception):
    """A mistake in input, a flag or a file.  The message names the file/row/flag and the fix."""


class DataError(UserError, ValueError):
    """Bad or missing data: the message names the file (and row or index)."""


class ConfigError(UserError, ValueError):
    """An impossible combination of options: the message names the option."""
