"""One exception tree; each subclass carries the exit code PRODUCT.md §1 gives it.

The CLI maps these to exit codes in one place (``cli.main``); nothing else decides exit codes.
"""

from __future__ import annotations


class DbsyncError(Exception):
    """Root of every error dbsync expects. ``hint`` says what to type next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\nhint: {self.hint}"


class UsageError(DbsyncError):
    """Wrong options or arguments."""

    exit_code = 2


class DatabaseUnreachable(DbsyncError):
    """The database could not be reached, retries included."""

    exit_code = 3


class DatabaseBusy(DatabaseUnreachable):
    """The database answers, but another transaction kept the records locked past the wait
    (exit 3 like an unreachable one: the run could not get to the data; the message says
    which it was)."""


class InvalidInput(DbsyncError):
    """A file, a document or a configuration that cannot be trusted; nothing was written."""

    exit_code = 4


class SafetyRefusal(DbsyncError):
    """A safety guard refused; the hint names the flag or command that gets past it."""

    exit_code = 5


class GitFailed(DbsyncError):
    """A git command failed: the remote is unreachable, a push is still refused after the
    retries, a pull cannot be merged... The message is git's own, without any password."""

    exit_code = 6
