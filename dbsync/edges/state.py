"""The local state of one asset: what ran, how it went, and merges still to do.

SQLite at ``database_sync/state.sqlite`` (WAL, one transaction per change, a schema version in
``PRAGMA user_version``). It is local and untracked: losing it loses the audit trail, never data.

* ``history``: one row per collection per attempt (export, merge, import, restore), and one
  placeholder row while a run is in progress. A placeholder whose process is gone is a run that
  was killed: ``history`` shows it as ``interrupted`` and ``status`` warns about it.
* ``collection_state``: per collection and operation, the last success (time, records,
  duration, snapshot digest) and the number of failures since.
* ``pending_merges``: snapshots that could not be merged (say, the database was down during
  ``git pull``) and must be retried by the next command that changes the database.
* ``losing_versions``: every version a conflict rule decided against, wherever it was decided
  (merge, hooks, merge driver, dedupe), kept until ``prune --conflicts-older-than`` removes it:
  pruning reports never touches them.

The schema grows by migrations (``_MIGRATIONS``): a database at version N runs the migrations
after N, in one transaction each, so an asset upgrades in place and keeps its history.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dbsync.errors import DbsyncError, DiskFull, InvalidInput, full_disk_error

STATE_FILE = "state.sqlite"
HISTORY_KEPT = 10_000
"""History rows kept by ``prune``: years of syncing, a few MB at most."""

RUNNING, SUCCESS, FAILED, REFUSED, INTERRUPTED = (
    "running",
    "success",
    "failed",
    "refused",
    "interrupted",
)
CANCELLED = "cancelled"
"""A run stopped by Ctrl-C: in the history, but not a failure of the asset, so
``consecutive_failures`` does not count it."""
NO_SPACE = "no space"
"""A run the disk filling up stopped: a failure (counted), told apart so ``status`` says so."""
FAILURES = (FAILED, REFUSED, NO_SPACE)

_SCHEMA_V1 = """
CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    time TEXT NOT NULL,
    operation TEXT NOT NULL,
    collection TEXT,
    status TEXT NOT NULL,
    records INTEGER,
    duration_ms INTEGER,
    error TEXT,
    asset TEXT,
    pid INTEGER
);
CREATE INDEX history_run ON history (run_id);
CREATE TABLE collection_state (
    collection TEXT NOT NULL,
    operation TEXT NOT NULL,
    last_success TEXT,
    last_records INTEGER,
    last_duration_ms INTEGER,
    last_digest TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_failure TEXT,
    last_error TEXT,
    PRIMARY KEY (collection, operation)
);
CREATE TABLE pending_merges (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    base TEXT,
    commit_sha TEXT,
    created TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_retry TEXT,
    last_error TEXT
);
"""

_LOSING_VERSIONS_V2 = """
CREATE TABLE losing_versions (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    loser TEXT NOT NULL,
    winner_hash TEXT NOT NULL,
    winner TEXT,
    rule TEXT NOT NULL,
    asset TEXT NOT NULL,
    place TEXT NOT NULL,
    report TEXT
);
CREATE INDEX losing_versions_collection ON losing_versions (collection, time);
"""

_JOURNAL_V3 = """
CREATE TABLE journal (
    id INTEGER PRIMARY KEY,
    operation TEXT NOT NULL,
    started TEXT NOT NULL,
    pid INTEGER NOT NULL,
    backup TEXT,
    source TEXT,
    base TEXT,
    collections TEXT NOT NULL,
    finished TEXT
);
"""
"""Merges and restores that write the database: a row is written before the first write and
finished after the last, so a row left unfinished by a dead process is an interrupted run."""

_PENDING_BEFORE_V4 = """
ALTER TABLE pending_merges ADD COLUMN before_sha TEXT;
"""
"""Where HEAD was before the pull a pending merge comes from (ORIG_HEAD): with the commit, what
finds the same three-way base the hook's merge had."""

_MIGRATIONS = (_SCHEMA_V1, _LOSING_VERSIONS_V2, _JOURNAL_V3, _PENDING_BEFORE_V4)
"""Schema version N is reached by running the first N scripts; append, never edit."""
SCHEMA_VERSION = len(_MIGRATIONS)


def now_text() -> str:
    """UTC, to the millisecond, ISO 8601: sorts as text and reads as a time."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


@dataclass(frozen=True)
class JournalEntry:
    """A merge or restore that started writing the database (``journal``)."""

    id: int
    operation: str
    started: str
    pid: int
    backup: str | None
    source: str | None
    base: str | None
    collections: list[str]


@dataclass(frozen=True)
class HistoryEntry:
    time: str
    operation: str
    collection: str | None
    status: str
    records: int | None
    duration_ms: int | None
    error: str | None
    asset: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time,
            "operation": self.operation,
            "collection": self.collection,
            "status": self.status,
            "records": self.records,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }


@dataclass(frozen=True)
class CollectionState:
    collection: str
    operation: str
    last_success: str | None
    last_records: int | None
    last_duration_ms: int | None
    last_digest: str | None
    consecutive_failures: int
    last_failure: str | None
    last_error: str | None


@dataclass(frozen=True)
class PendingMerge:
    id: int
    source: str
    base: str | None
    commit: str | None
    created: str
    attempts: int
    next_retry: str | None
    last_error: str | None
    before: str | None = None


@dataclass(frozen=True)
class CollectionResult:
    """How one collection fared in a finished run (``collection`` None: the run as a whole)."""

    collection: str | None
    status: str
    records: int | None = None
    digest: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class NewLosingVersion:
    """A version a conflict rule decided against, as recorded when it is decided.

    ``key`` is the record's key as canonical Extended JSON text (a JSON list of the key
    values); ``loser`` and ``winner`` are documents as snapshot record bodies (the ``d`` of a
    record line); ``place`` says where it was decided: ``merge``, ``hook``, ``merge-driver``
    or ``dedupe``; ``report`` is the merge report that lists it, if any.
    """

    collection: str
    key: str
    loser: str
    winner_hash: str
    winner: str | None
    rule: str
    asset: str
    place: str
    report: str | None = None


@dataclass(frozen=True)
class LosingVersion(NewLosingVersion):
    """A recorded losing version, with its id (``dbsync conflicts show ID``) and time."""

    id: int = 0
    time: str = ""


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (permission errors mean it does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_INSERT_LOSING = (
    "INSERT INTO losing_versions (time, collection, key, loser, winner_hash, "
    "winner, rule, asset, place, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _losing_row(time: str, version: NewLosingVersion) -> tuple[object, ...]:
    return (
        time,
        version.collection,
        version.key,
        version.loser,
        version.winner_hash,
        version.winner,
        version.rule,
        version.asset,
        version.place,
        version.report,
    )


class StateStore:
    """The open state database. Every method is one transaction."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    # ------------------------------------------------------------ runs and history

    def start_run(self, operation: str, asset: str) -> int:
        """A placeholder row for a run in progress; returns the run id."""
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO history (run_id, time, operation, status, asset, pid) "
                "VALUES (0, ?, ?, ?, ?, ?)",
                (now_text(), operation, RUNNING, asset, os.getpid()),
            )
            run_id = int(cursor.lastrowid or 0)
            self._db.execute("UPDATE history SET run_id = id WHERE id = ?", (run_id,))
        return run_id

    def finish_run(
        self, run_id: int, duration_ms: int, outcomes: Sequence[CollectionResult]
    ) -> None:
        """Replace the placeholder by one row per outcome, and update the per-collection state."""
        with self._db:
            row = self._db.execute(
                "SELECT time, operation, asset, pid FROM history WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM history WHERE id = ?", (run_id,))
            started, operation, asset, pid = row
            for outcome in outcomes:
                self._db.execute(
                    "INSERT INTO history (run_id, time, operation, collection, status, records, "
                    "duration_ms, error, asset, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        started,
                        operation,
                        outcome.collection,
                        outcome.status,
                        outcome.records,
                        duration_ms,
                        outcome.error,
                        asset,
                        pid,
                    ),
                )
                if outcome.collection is not None:
                    self._update_collection(operation, outcome, duration_ms, started)

    def _update_collection(
        self, operation: str, outcome: CollectionResult, duration_ms: int, when: str
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO collection_state (collection, operation) VALUES (?, ?)",
            (outcome.collection, operation),
        )
        if outcome.status == SUCCESS:
            self._db.execute(
                "UPDATE collection_state SET last_success = ?, last_records = ?, "
                "last_duration_ms = ?, last_digest = ?, consecutive_failures = 0 "
                "WHERE collection = ? AND operation = ?",
                (when, outcome.records, duration_ms, outcome.digest, outcome.collection, operation),
            )
        elif outcome.status in FAILURES:
            self._db.execute(
                "UPDATE collection_state SET consecutive_failures = consecutive_failures + 1, "
                "last_failure = ?, last_error = ? WHERE collection = ? AND operation = ?",
                (when, outcome.error, outcome.collection, operation),
            )

    def discard_run(self, run_id: int) -> None:
        """Forget a run that did nothing (a usage error refused it): no row at all."""
        with self._db:
            self._db.execute("DELETE FROM history WHERE id = ? AND status = ?", (run_id, RUNNING))

    def history(self, limit: int | None = None) -> list[HistoryEntry]:
        """Newest first; a placeholder whose process is gone reads as ``interrupted``."""
        rows = self._db.execute(
            "SELECT time, operation, collection, status, records, duration_ms, error, asset, pid "
            "FROM history ORDER BY run_id DESC, id ASC LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [self._entry(row) for row in rows]

    @staticmethod
    def _entry(row: tuple[object, ...]) -> HistoryEntry:
        time, operation, collection, status, records, duration, error, asset, pid = row
        if status == RUNNING and isinstance(pid, int) and not process_alive(pid):
            status = INTERRUPTED
            error = "the run stopped before it finished (killed, or the machine went down)"
        return HistoryEntry(
            str(time),
            str(operation),
            None if collection is None else str(collection),
            str(status),
            records if isinstance(records, int) else None,
            duration if isinstance(duration, int) else None,
            None if error is None else str(error),
            None if asset is None else str(asset),
        )

    def last_run(self, operation: str) -> HistoryEntry | None:
        """The newest run of ``operation`` (its first row), interrupted runs included."""
        row = self._db.execute(
            "SELECT time, operation, collection, status, records, duration_ms, error, asset, pid "
            "FROM history WHERE operation = ? ORDER BY run_id DESC, id ASC LIMIT 1",
            (operation,),
        ).fetchone()
        return None if row is None else self._entry(row)

    def succeeded_since(self, time: str, operations: Sequence[str]) -> bool:
        """Whether one of ``operations`` succeeded after ``time`` (say, a restore after a merge
        that was killed: the database is consistent again)."""
        marks = ", ".join("?" for _ in operations)
        row = self._db.execute(
            f"SELECT 1 FROM history WHERE status = ? AND time > ? AND operation IN ({marks})",
            (SUCCESS, time, *operations),
        ).fetchone()
        return row is not None

    def known_collections(self, operation: str) -> list[str]:
        rows = self._db.execute(
            "SELECT collection FROM collection_state WHERE operation = ? ORDER BY collection",
            (operation,),
        ).fetchall()
        return [str(name) for (name,) in rows]

    def collection_states(self) -> list[CollectionState]:
        rows = self._db.execute(
            "SELECT collection, operation, last_success, last_records, last_duration_ms, "
            "last_digest, consecutive_failures, last_failure, last_error "
            "FROM collection_state ORDER BY collection, operation"
        ).fetchall()
        return [CollectionState(*row) for row in rows]

    def trim_history(self, keep: int | None = None) -> int:
        """Remove all but the newest ``keep`` rows (``HISTORY_KEPT``); returns how many went."""
        keep = HISTORY_KEPT if keep is None else keep
        with self._db:
            cursor = self._db.execute(
                "DELETE FROM history WHERE id NOT IN "
                "(SELECT id FROM history ORDER BY id DESC LIMIT ?)",
                (keep,),
            )
        return cursor.rowcount

    # ------------------------------------------------------------ pending merges

    def add_pending(
        self,
        source: str,
        base: str | None = None,
        commit: str | None = None,
        before: str | None = None,
    ) -> PendingMerge:
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO pending_merges (source, base, commit_sha, created, before_sha) "
                "VALUES (?, ?, ?, ?, ?)",
                (source, base, commit, now_text(), before),
            )
        return self.pending(int(cursor.lastrowid or 0))

    def pending(self, pending_id: int) -> PendingMerge:
        row = self._db.execute(_PENDING_SELECT + " WHERE id = ?", (pending_id,)).fetchone()
        if row is None:
            raise KeyError(pending_id)
        return PendingMerge(*row)

    def list_pending(self) -> list[PendingMerge]:
        """Oldest first: the order in which they must be retried."""
        rows = self._db.execute(_PENDING_SELECT + " ORDER BY id").fetchall()
        return [PendingMerge(*row) for row in rows]

    def mark_pending_attempt(
        self, pending_id: int, error: str | None, next_retry: str | None
    ) -> None:
        with self._db:
            self._db.execute(
                "UPDATE pending_merges SET attempts = attempts + 1, last_error = ?, "
                "next_retry = ? WHERE id = ?",
                (error, next_retry, pending_id),
            )

    def remove_pending(self, pending_id: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM pending_merges WHERE id = ?", (pending_id,))

    # ------------------------------------------------------------ losing versions

    def add_losing_versions(self, versions: Sequence[NewLosingVersion]) -> list[int]:
        """Record versions decided against, in one transaction; returns their ids."""
        ids: list[int] = []
        time = now_text()
        with self._db:
            for version in versions:
                cursor = self._db.execute(_INSERT_LOSING, _losing_row(time, version))
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def insert_losing_versions(self, versions: Iterable[NewLosingVersion]) -> int:
        """Record versions decided against, streamed, in one transaction; returns how many."""
        time = now_text()
        with self._db:
            rows = (_losing_row(time, version) for version in versions)
            cursor = self._db.executemany(_INSERT_LOSING, rows)
        return int(cursor.rowcount)

    def losing_versions(
        self, collection: str | None = None, since: str | None = None, limit: int | None = None
    ) -> list[LosingVersion]:
        """Newest first; ``since`` is a time as ``now_text`` writes it (ISO-8601, UTC)."""
        query, arguments = _LOSING_SELECT + " WHERE 1", list[str]()
        if collection is not None:
            query, arguments = query + " AND collection = ?", [*arguments, collection]
        if since is not None:
            query, arguments = query + " AND time >= ?", [*arguments, since]
        query += " ORDER BY id DESC" + ("" if limit is None else f" LIMIT {int(limit)}")
        return [_losing(row) for row in self._db.execute(query, arguments)]

    def losing_version(self, version_id: int) -> LosingVersion:
        row = self._db.execute(_LOSING_SELECT + " WHERE id = ?", (version_id,)).fetchone()
        if row is None:
            raise KeyError(version_id)
        return _losing(row)

    def prune_losing_versions(self, older_than: str) -> int:
        """Remove losing versions recorded before ``older_than``; returns how many."""
        with self._db:
            cursor = self._db.execute("DELETE FROM losing_versions WHERE time < ?", (older_than,))
        return cursor.rowcount

    # ------------------------------------------------------------ journal

    def begin_writing(
        self,
        operation: str,
        collections: Sequence[str],
        *,
        backup: str | None = None,
        source: str | None = None,
        base: str | None = None,
    ) -> int:
        """Record that ``operation`` starts writing ``collections``; returns the entry's id."""
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO journal (operation, started, pid, backup, source, base, collections)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (operation, now_text(), os.getpid(), backup, source, base, json.dumps(collections)),
            )
        return int(cursor.lastrowid or 0)

    def finish_writing(self, entry_id: int, collections: Sequence[str] = ()) -> None:
        """The run ``entry_id`` is over; interrupted runs on no other collection than
        ``collections`` are over too (the run wrote those collections whole again)."""
        done = now_text()
        with self._db:
            self._db.execute("UPDATE journal SET finished = ? WHERE id = ?", (done, entry_id))
            for entry in self.interrupted_runs():
                if set(entry.collections) <= set(collections):
                    self._db.execute(
                        "UPDATE journal SET finished = ? WHERE id = ?", (done, entry.id)
                    )

    def interrupted_runs(self) -> list[JournalEntry]:
        """Runs that started writing and never finished, their process gone; oldest first."""
        rows = self._db.execute(
            "SELECT id, operation, started, pid, backup, source, base, collections FROM journal "
            "WHERE finished IS NULL ORDER BY id"
        ).fetchall()
        entries = [_journal(row) for row in rows]
        return [entry for entry in entries if not process_alive(entry.pid)]

    def close(self) -> None:
        self._db.close()


_LOSING_SELECT = (
    "SELECT collection, key, loser, winner_hash, winner, rule, asset, place, report, id, time "
    "FROM losing_versions"
)


def _journal(row: tuple[object, ...]) -> JournalEntry:
    entry_id, operation, started, pid, backup, source, base, collections = row
    return JournalEntry(
        int(str(entry_id)),
        str(operation),
        str(started),
        int(str(pid)),
        None if backup is None else str(backup),
        None if source is None else str(source),
        None if base is None else str(base),
        json.loads(str(collections)),
    )


def _losing(row: tuple[object, ...]) -> LosingVersion:
    return LosingVersion(*row)  # type: ignore[arg-type]


_PENDING_SELECT = (
    "SELECT id, source, base, commit_sha, created, attempts, next_retry, last_error, before_sha "
    "FROM pending_merges"
)


def _damaged(path: Path, error: Exception) -> DbsyncError:
    """A state database SQLite cannot use: damaged, or on a disk too full to open it (then
    nothing is wrong with the file, and moving it away would lose the history for nothing)."""
    if full_disk_error(error, path.parent) is not None:
        return DiskFull(
            f"the state database {path} cannot be opened: the disk is full ({error})",
            hint="free space on that disk; nothing is wrong with the file",
        )
    return InvalidInput(
        f"the state database {path} cannot be used: {error}",
        hint=f"move it away (mv {path} {path}.broken): dbsync starts a new one; "
        "only the history is lost, no data",
    )


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    if read_only:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    else:
        connection = sqlite3.connect(path, timeout=10)
    connection.execute("PRAGMA busy_timeout = 10000")
    return connection


def _prepare(connection: sqlite3.Connection, path: Path) -> None:
    """Create or check the schema: a newer version than this dbsync knows is refused."""
    connection.execute("PRAGMA journal_mode = WAL")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise _damaged(path, _newer_schema(version))
    for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
        with connection:
            connection.executescript(f"BEGIN;{script}PRAGMA user_version = {number}; COMMIT;")


def _newer_schema(version: int) -> ValueError:
    return ValueError(f"schema version {version}, this dbsync knows up to {SCHEMA_VERSION}")


def open_state(state_dir: Path) -> StateStore:
    """Open (creating it if needed) the state database of this asset."""
    path = state_path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        connection = _connect(path, read_only=False)
        _prepare(connection, path)
    except sqlite3.DatabaseError as error:
        raise _damaged(path, error) from None
    return StateStore(connection, path)


def open_state_read_only(state_dir: Path) -> StateStore | None:
    """The state database for reading, or None if this asset has none yet; creates nothing."""
    path = state_path(state_dir)
    if not path.is_file():
        return None
    try:
        connection = _connect(path, read_only=True)
        version = connection.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise _damaged(path, error) from None
    if version < SCHEMA_VERSION:  # written by an older dbsync: migrate it once, then read
        connection.close()
        open_state(state_dir).close()
        return open_state_read_only(state_dir)
    if version > SCHEMA_VERSION:
        connection.close()
        raise _damaged(path, _newer_schema(version))
    return StateStore(connection, path)


@contextmanager
def reading_state(state_dir: Path) -> Iterator[StateStore | None]:
    state = open_state_read_only(state_dir)
    try:
        yield state
    finally:
        if state is not None:
            state.close()
