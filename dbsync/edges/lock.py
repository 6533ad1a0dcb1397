"""One dbsync run at a time per asset: an ``flock`` on ``database_sync/dbsync.lock``.

The operating system releases an ``flock`` when its process dies, however it dies, so there is
never a stale lock to clean up. The file also says who holds the lock (pid, host, command,
since), for the message the next run prints while it waits.

A dbsync started by the holder itself (a git hook fired by a git command the holder runs) would
wait for its own parent forever. The holder therefore puts a random token in the environment
(``DBSYNC_LOCK_TOKEN``) that its children inherit; a run whose token is the holder's goes on
without taking the lock, as part of the holder's run.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path

from dbsync.config import DEFAULT_LOCK_TIMEOUT
from dbsync.errors import SafetyRefusal

LOCK_FILE = "dbsync.lock"
TOKEN_VARIABLE = "DBSYNC_LOCK_TOKEN"
DEFAULT_TIMEOUT_SECONDS = DEFAULT_LOCK_TIMEOUT
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    command: str
    since: str
    token: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, running 'dbsync {self.command}' since {self.since}"


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_FILE


def read_holder(path: Path) -> Holder | None:
    """Who the lock file says holds the lock; None if nobody wrote it (or it is being written)."""
    try:
        data = json.loads(path.read_text())
        return Holder(**data)
    except (OSError, ValueError, TypeError):
        return None


def _write_holder(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(holder)).encode() + b"\n", 0)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _busy(path: Path, timeout: float) -> SafetyRefusal:
    holder = read_holder(path)
    who = holder.describe() if holder else "a process that has not said who it is yet"
    stop = f"kill {holder.pid}" if holder else f"fuser {path}"
    return SafetyRefusal(
        f"another dbsync run holds the lock on this asset ({who}); waited {timeout:g} s",
        hint=f"wait for it to finish and run the command again; if it is stuck, stop it "
        f"({stop}) — the lock is released as soon as it exits. "
        "DBSYNC_LOCK_TIMEOUT=SECONDS waits longer",
    )


@contextlib.contextmanager
def run_lock(
    state_dir: Path,
    command: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    environ: MutableMapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Holder | None]:
    """Hold this asset's lock for the block; yields the holder, or None when the block runs
    inside a parent dbsync run that holds it (its token is in the environment). A busy lock is
    tried again every ``POLL_SECONDS`` until ``timeout`` seconds have passed by ``clock``."""
    environ = os.environ if environ is None else environ
    path = lock_path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = clock()
        while not _try_lock(fd):
            holder = read_holder(path)
            if holder is not None and environ.get(TOKEN_VARIABLE) == holder.token:
                yield None
                return
            if clock() - started >= timeout:
                raise _busy(path, timeout)
            sleep(POLL_SECONDS)
        with _held(fd, command, environ) as holder:
            yield holder
    finally:
        os.close(fd)


@contextlib.contextmanager
def _held(fd: int, command: str, environ: MutableMapping[str, str]) -> Iterator[Holder]:
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    holder = Holder(os.getpid(), socket.gethostname(), command, since, secrets.token_hex(16))
    _write_holder(fd, holder)
    previous = environ.get(TOKEN_VARIABLE)
    environ[TOKEN_VARIABLE] = holder.token
    try:
        yield holder
    finally:
        if previous is None:
            environ.pop(TOKEN_VARIABLE, None)
        else:
            environ[TOKEN_VARIABLE] = previous
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
