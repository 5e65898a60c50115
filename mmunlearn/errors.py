"""Errors a user must act on: stages print them as one line and exit 2."""


class UserError(RuntimeError):
    """Bad input or environment, reported as one line before heavy compute."""
