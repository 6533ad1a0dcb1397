"""How a run that changes things is recorded in the history.

``recorded_run`` (called by ``dbsync.runs.pipeline`` for every changing run, under the asset's lock)
writes a placeholder history row (so a killed run shows as interrupted), runs the block, then
records how each collection fared, with the duration and record counts, or the error without any
URI password. A usage error leaves no row (the run did nothing); Ctrl-C leaves ``cancelled``,
a full disk ``no space`` (with the message ``disk_full`` makes of it).

Recording is bookkeeping: if the state database cannot be written, the command still does its
work and the problem is reported through ``warn``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from dbsync.config import Config
from dbsync.core.guards import TooManyDeletes
from dbsync.core.report import MergeReport
from dbsync.edges.secrets import scrub_secrets, uri_secrets
from dbsync.edges.state import (
    CANCELLED,
    FAILED,
    NO_SPACE,
    REFUSED,
    SUCCESS,
    CollectionResult,
    StateStore,
    open_state,
)
from dbsync.errors import (
    DbsyncError,
    DiskFull,
    SafetyRefusal,
    UsageError,
    free_bytes,
    full_disk_error,
)

Warn = Callable[[str], None]


@dataclass
class RunRecord:
    """What the run tells the history: the collections it works on, and their results."""

    operation: str
    collections: list[str] = field(default_factory=list)
    results: list[CollectionResult] = field(default_factory=list)
    status: str = SUCCESS
    nested: bool = False
    """True when the run goes on under a parent dbsync run's lock (see ``dbsync.edges.lock``)."""

    def done(self, collection: str, records: int | None, digest: str | None = None) -> None:
        self.results.append(CollectionResult(collection, self.status, records, digest))


def error_text(error: BaseException, config: Config) -> str:
    """What went wrong in one line, never with a password in it."""
    if isinstance(error, DbsyncError):
        text = error.message
    elif isinstance(error, KeyboardInterrupt):
        text = "interrupted (Ctrl-C)"
    else:
        text = f"{type(error).__name__}: {error}"
    return scrub_secrets(text, uri_secrets(config.uri or ""))


def failure_status(error: BaseException) -> str:
    """How a run that raised ended: ``failed``, ``refused`` and ``no space`` are failures of
    the asset (``status`` counts them); Ctrl-C says nothing about its health."""
    if isinstance(error, KeyboardInterrupt):
        return CANCELLED
    if isinstance(error, DiskFull):
        return NO_SPACE
    return REFUSED if isinstance(error, SafetyRefusal) else FAILED


# ---------------------------------------------------------------- a full disk

MERGE_MARGIN_BYTES = 16 << 20
"""The margin a merge's free-space guard keeps beyond twice its backup (``backups``)."""

AFTERMATH = {
    "export": "the snapshot files are as they were (an export renames its files into place only "
    "when every one is complete)",
    "merge": "a merge that fails rolls back what it wrote; if that failed too, 'dbsync status' "
    "names the backup to restore",
    "restore": "a restore that fails rolls back what it wrote; if that failed too, 'dbsync "
    "status' names the backup to restore",
    "import": "an import that stops may have written part of its file: 'dbsync stats' shows "
    "what the collection holds now",
}
"""What a run of each kind leaves when the disk fills up under it: what was written, what not."""


def size_text(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _folder_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def needed_bytes(config: Config, operation: str) -> int:
    """About what a run needs free: an export, a snapshot as large as the one there (or as the
    embedded store, before the first); the others, what a merge's guard asks for."""
    snapshot = _folder_bytes(config.snapshot_dir)
    if operation == "export":
        return snapshot or _folder_bytes(config.state_dir / "db")
    return 2 * snapshot + MERGE_MARGIN_BYTES


def disk_full(error: BaseException, config: Config, operation: str) -> DiskFull | None:
    """``error`` as the full disk it is, if it is one (``errors.full_disk_error``): where, what
    was written and what was not, and about how much space to free."""
    if isinstance(error, DiskFull):
        return error
    cause = full_disk_error(error, config.root)
    if cause is None:
        return None
    free = free_bytes(config.root)
    where = f" writing {cause.filename}" if isinstance(cause, OSError) and cause.filename else ""
    left = "" if free is None else f"; {size_text(free)} free on the disk of {config.root}"
    aftermath = AFTERMATH.get(operation, "'dbsync status' says what is left to do")
    return DiskFull(
        f"the disk is full: the {operation} stopped{where} ({cause}{left}); {aftermath}",
        hint=f"free about {size_text(needed_bytes(config, operation))} on that disk "
        "('dbsync prune' removes old backups and reports), then run the command again",
    )


def failure_results(
    run: RunRecord, error: BaseException, config: Config, state: StateStore
) -> list[CollectionResult]:
    """One row per collection the run was about: the one a guard names, those the command
    named, else every collection this operation has handled before (a database that is down
    fails them all); at least one row."""
    status = failure_status(error)
    text = error_text(error, config)
    names: Sequence[str | None] = run.collections or state.known_collections(run.operation)
    if isinstance(error, TooManyDeletes):
        names = [error.collection]
    return [CollectionResult(name, status, error=text) for name in names or [None]]


class _Recorder:
    """Opens the state lazily and turns any trouble with it into a warning."""

    def __init__(self, config: Config, warn: Warn) -> None:
        self.config = config
        self.warn = warn
        self.state: StateStore | None = None

    def attempt(self, action: Callable[[StateStore], object]) -> None:
        try:
            if self.state is None:
                self.state = open_state(self.config.state_dir)
            action(self.state)
        except (DbsyncError, sqlite3.Error, OSError) as error:
            self.warn(f"this run was not recorded in the history: {error}")

    def close(self) -> None:
        if self.state is not None:
            self.state.close()


@contextlib.contextmanager
def recorded_run(
    config: Config, operation: str, *, collections: Sequence[str] = (), warn: Warn
) -> Iterator[RunRecord]:
    """Record the block as one run of ``operation`` (see the module docstring)."""
    run = RunRecord(operation, list(collections))
    recorder = _Recorder(config, warn)
    run_ids: list[int] = []
    recorder.attempt(lambda state: run_ids.append(state.start_run(operation, config.asset)))
    started = time.monotonic()
    try:
        yield run
    except UsageError:  # refused for its options or arguments: it did nothing, says nothing
        if run_ids:
            recorder.attempt(lambda state: state.discard_run(run_ids[0]))
        raise
    except BaseException as error:
        full = disk_full(error, config, operation) if isinstance(error, Exception) else None
        failure = full or error
        _finish(recorder, run_ids, started, partial(failure_results, run, failure, config))
        if full is not None and full is not error:
            raise full from error
        raise
    else:
        _finish(
            recorder,
            run_ids,
            started,
            lambda s: run.results or [CollectionResult(None, run.status)],
        )
    finally:
        recorder.close()


def _finish(
    recorder: _Recorder,
    run_ids: list[int],
    started: float,
    results: Callable[[StateStore], list[CollectionResult]],
) -> None:
    if not run_ids:
        return
    duration_ms = int((time.monotonic() - started) * 1000)
    recorder.attempt(lambda state: state.finish_run(run_ids[0], duration_ms, results(state)))


def record_report(run: RunRecord, report: MergeReport) -> None:
    """What a merge tells the history: its status, and each collection's total."""
    run.status = report.status
    for name, counts in report.collections.items():
        run.done(name, counts.total)
