"""The log index: what changed between two versions of a snapshot file, so that ``dbsync log``
reads almost no blob.

A row names a pair of blobs (the file at a parent commit, the file at a child commit) and one
record whose line differs between them: the 64-bit hash of its key (``snapshot.key_hash``), its
line in the parent (None: the record was not there) and its line in the child (None: it went).
A pair is content-addressed (git's blob ids), so it stays right across rebases, amends, clones
and rewritten history: the same two files always differ by the same lines. A pair whose change
is larger than ``LINES_KEPT`` bytes is kept ``wide``: without its lines, ``dbsync log`` reads
the two blobs of such a commit, as it would without the index.

The file (``database_sync/log-index.sqlite``, beside the state store) is a cache, local and
untracked: ``dbsync log`` fills it for the commits it has not seen, and a missing, damaged or
older file is started afresh, never an error. When it cannot be written at all (a read-only
folder), an index in memory serves the run.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

INDEX_FILE = "log-index.sqlite"
SCHEMA_VERSION = 1
LINES_KEPT = 1_000_000
"""Bytes of changed lines a pair keeps (about 1,500 edited PNL records); past it, ``wide``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    old BLOB NOT NULL,
    new BLOB NOT NULL,
    fields TEXT NOT NULL,
    wide INTEGER NOT NULL,
    UNIQUE (old, new, fields)
);
CREATE TABLE IF NOT EXISTS changes (
    pair INTEGER NOT NULL,
    key INTEGER NOT NULL,
    old BLOB,
    new BLOB
);
CREATE INDEX IF NOT EXISTS changes_by_key ON changes (pair, key);
"""

WIDE = "wide"
"""A pair known to differ by more than its rows: its blobs must be read."""


@dataclass(frozen=True)
class Change:
    """One record's lines in the two versions of a file (None: not in that version)."""

    key: int
    old: bytes | None
    new: bytes | None


def _signed(key: int) -> int:
    """SQLite integers are signed 64-bit; key hashes are unsigned."""
    return key - (1 << 64) if key >= 1 << 63 else key


class LogIndex:
    """The index file, opened for one ``dbsync log``."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None) -> None:
        self._db, self.path = connection, path

    @classmethod
    def open(cls, state_dir: Path) -> LogIndex:
        """The index of this asset; a file that is not a readable index of this schema is
        replaced by a fresh one, and a folder that cannot hold one gives an index in memory."""
        path = state_dir / INDEX_FILE
        for _ in range(2):
            try:
                state_dir.mkdir(parents=True, exist_ok=True)
                return cls(_connect(path), path)
            except (sqlite3.Error, OSError):
                _remove(path)
        return cls.in_memory()

    @classmethod
    def in_memory(cls) -> LogIndex:
        return cls(_memory(), None)

    def known(self, old: str, new: str, fields: Sequence[str]) -> bool:
        try:
            return self._pair(old, new, fields) is not None
        except sqlite3.DatabaseError:
            self._start_afresh()
            return False

    def lookup(self, old: str, new: str, fields: Sequence[str], key: int) -> list[Change] | str:
        """The changes of the pair with this key hash (empty: the record's line is the same in
        both), or ``WIDE`` (also for a pair the index does not hold)."""
        try:
            pair = self._pair(old, new, fields)
            if pair is None or pair[1]:
                return WIDE
            rows = self._db.execute(
                "SELECT old, new FROM changes WHERE pair = ? AND key = ?",
                (pair[0], _signed(key)),
            ).fetchall()
        except sqlite3.DatabaseError:
            self._start_afresh()
            return WIDE
        return [Change(key, old_line, new_line) for old_line, new_line in rows]

    def add(
        self, old: str, new: str, fields: Sequence[str], changes: Iterable[Change] | None
    ) -> None:
        """Record a pair: its changes, or None for a wide pair."""
        names = (bytes.fromhex(old), bytes.fromhex(new), json.dumps(list(fields)))
        try:
            self._db.execute(
                "DELETE FROM changes WHERE pair IN "
                "(SELECT id FROM pairs WHERE old = ? AND new = ? AND fields = ?)",
                names,
            )
            cursor = self._db.execute(
                "INSERT OR REPLACE INTO pairs (old, new, fields, wide) VALUES (?, ?, ?, ?)",
                (*names, changes is None),
            )
            self._db.executemany(
                "INSERT INTO changes (pair, key, old, new) VALUES (?, ?, ?, ?)",
                ((cursor.lastrowid, _signed(c.key), c.old, c.new) for c in changes or ()),
            )
        except sqlite3.OperationalError:  # another log holds the file: this pair waits
            self._db.rollback()
        except sqlite3.DatabaseError:
            self._start_afresh()

    def save(self) -> None:
        """Keep what was added so far (an interrupted log keeps the pairs it computed)."""
        try:
            self._db.commit()
        except sqlite3.OperationalError:
            self._db.rollback()
        except sqlite3.DatabaseError:
            self._start_afresh()

    def close(self) -> None:
        self.save()
        self._db.close()

    def _pair(self, old: str, new: str, fields: Sequence[str]) -> tuple[int, int] | None:
        found = self._db.execute(
            "SELECT id, wide FROM pairs WHERE old = ? AND new = ? AND fields = ?",
            (bytes.fromhex(old), bytes.fromhex(new), json.dumps(list(fields))),
        ).fetchone()
        return None if found is None else (int(found[0]), int(found[1]))

    def _start_afresh(self) -> None:
        """The file proved damaged while in use: it is removed (the next log builds a new one)
        and this run goes on with an index in memory."""
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        if self.path is not None:
            _remove(self.path)
        self._db, self.path = _memory(), None


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=2)
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"schema version {version}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.executescript(_SCHEMA)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("SELECT count(*) FROM pairs").fetchone()
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def _memory() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.executescript(_SCHEMA)
    return connection


def _remove(path: Path) -> None:
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
