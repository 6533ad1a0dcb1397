"""The log a bug leaves: an unexpected error's traceback, written where whoever met it finds it.

A bug (exit 1) must be reportable by whoever met it, a git hook or the agent included, which
cannot run the command again with ``-v``. The traceback goes to ``database_sync/dbsync.log`` in
a project (appended; started afresh past ``MAX_BYTES``), or to a new temporary file when there
is no project, and the command names the file, as pre-commit's ``error_handler`` does with
``pre-commit.log``. Passwords of the URIs in use are scrubbed from what is written.
"""

from __future__ import annotations

import datetime
import os
import platform
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from dbsync import __version__
from dbsync.config import STATE_DIR

LOG_FILE = "dbsync.log"
MAX_BYTES = 1 << 20
"""A log past this size is started afresh: it holds the latest bugs, not years of them."""


def scrubbed(text: str, uris: Sequence[str]) -> str:
    """``text`` without the passwords of ``uris``."""
    from dbsync.edges.secrets import scrub_secrets, uri_secrets  # only when a bug happened

    secrets = [secret for uri in uris for secret in uri_secrets(uri)]
    return scrub_secrets(text, secrets)


def crash_report(error: BaseException, argv: Sequence[str], uris: Sequence[str]) -> str:
    """What a bug report needs: when, which dbsync, Python and system, the command, the
    traceback."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [
        f"=== {now}: dbsync {__version__}, Python {platform.python_version()}, "
        f"{platform.platform()}",
        "command: " + " ".join(argv),
        "",
        *traceback.format_exception(type(error), error, error.__traceback__),
    ]
    return scrubbed("\n".join(line.rstrip("\n") for line in lines) + "\n\n", uris)


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.is_file() and path.stat().st_size > MAX_BYTES
    with path.open("w" if fresh else "a", encoding="utf-8") as handle:
        handle.write(text)


def _temporary(text: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="dbsync-bug-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(name)


def write_crash_log(text: str, root: Path | None) -> Path | None:
    """Write a crash report to the project's log (``root``), else to a temporary file; its
    path, or None when neither could be written (a full disk, say)."""
    if root is not None:
        path = root / STATE_DIR / LOG_FILE
        try:
            _append(path, text)
            return path
        except OSError:
            pass
    try:
        return _temporary(text)
    except OSError:
        return None
