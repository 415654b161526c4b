"""Errors a user can fix: printed as one line by the CLI, never as a traceback."""


class UserError(Exception):
    """Bad input or arguments; the message says what to change."""
