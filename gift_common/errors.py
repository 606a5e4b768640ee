"""Errors that are the user's to fix: the command line prints them as one line, never a traceback."""


class UserError(Exception):
    """Bad input or a missing file; the message names what is wrong and what to do."""
