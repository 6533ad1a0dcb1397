"""One exception tree; each subclass carries the exit code PRODUCT.md §1 gives it.

The CLI maps these to exit codes in one place (``cli.run_command``; ``launch`` for the calls
git makes); nothing else decides exit codes.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a command Ctrl-C stopped
INTERRUPTED_MESSAGE = "interrupted (Ctrl-C): nothing was left half-written"


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


class DiskFull(DbsyncError):
    """The disk filled up while a run wrote: an expected failure, not a bug. Exit 5, as a
    merge that its free-space guard refuses: the run stopped before leaving anything half
    written; the message says what was written and what was not, the hint how much to free."""

    exit_code = 5


LOW_SPACE_BYTES = 1 << 20
"""Below this much free space, an SQLite I/O error is taken for what it almost surely is: the
disk filling up (SQLite then cannot grow its write-ahead log or shared-memory file)."""
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL, _SQLITE_IOERR = 13, 10


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what it was raised from or while handling, and so on."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def free_bytes(path: Path) -> int | None:
    """Free space on the file system holding ``path`` (or its nearest existing parent)."""
    for place in (path, *path.parents):
        if place.exists():
            try:
                return shutil.disk_usage(place).free
            except OSError:
                return None
    return None


def full_disk_error(error: BaseException, where: Path | None = None) -> BaseException | None:
    """The error in ``error``'s chain saying the disk is full (ENOSPC, a quota, SQLite's
    "database or disk is full"), if one does. When the disk of ``where`` has almost no room
    left, an SQLite I/O error counts too: that is how SQLite fails when a full disk keeps it
    from growing its write-ahead log or shared-memory file."""
    free = free_bytes(where) if where is not None else None
    low_space = free is not None and free < LOW_SPACE_BYTES
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in _FULL_ERRNOS:
            return link
        if type(link).__module__ != "sqlite3":
            continue
        code = getattr(link, "sqlite_errorcode", None)  # Python 3.11+; the text before
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == _SQLITE_FULL or "database or disk is full" in str(link):
            return link
        if low_space and (primary == _SQLITE_IOERR or "disk I/O error" in str(link)):
            return link
    return None
