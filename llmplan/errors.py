"""Errors that reach the user as one line: what went wrong and how to fix it."""


class LlmplanError(Exception):
    """A user-facing error. The message names the problem and the fix, in one line."""


class DataNotFoundError(LlmplanError):
    """A dataset file is absent and could not be downloaded."""


class InfeasibleError(LlmplanError):
    """No placement or configuration satisfies the constraints."""
