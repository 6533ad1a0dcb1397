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

import xxhash

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


_STEP = 1 << 16


def _common_length(old: memoryview, new: memoryview, limit: int, *, from_end: bool) -> int:
    """How many first (or last) bytes the two have in common, at most ``limit``: 64 KiB
    slices compared by their xxh3-128 (hashed in place, no copy), then byte by byte in a
    binary search of the first slice that differs."""

    def ranges(begin: int, end: int) -> tuple[memoryview, memoryview]:
        if from_end:
            return old[len(old) - end : len(old) - begin], new[len(new) - end : len(new) - begin]
        return old[begin:end], new[begin:end]

    done = 0
    while done < limit:
        step = min(_STEP, limit - done)
        first, second = ranges(done, done + step)
        if xxhash.xxh3_128_digest(first) == xxhash.xxh3_128_digest(second):
            done += step
            continue
        low, high = done, done + step  # the first ``low`` bytes agree, one before ``high`` not
        while high - low > 1:
            middle = (low + high) // 2
            first, second = ranges(low, middle)
            if first.tobytes() == second.tobytes():
                low = middle
            else:
                high = middle
        return low
    return limit


def _is_section(data: bytes) -> bool:
    """Shaped like a snapshot section: a header line, lines, and a trailer line at the end."""
    if not data.startswith(b"{") or not data.endswith(b"\n"):
        return False
    if data.find(b"\n") == len(data) - 1:  # one line: no header and trailer
        return False
    return data.startswith(b'{"end":', data.rfind(b"\n", 0, len(data) - 1) + 1)


def changed_records(old: bytes, new: bytes) -> tuple[list[bytes], list[bytes]] | None:
    """The record lines of two versions of a snapshot section that are only in ``old``, and
    only in ``new`` (header and trailer left out); None when one is no section.

    The two versions share all but a few lines as a rule: their common start and end are
    found by comparing slices, and only the lines between are split and compared as sets
    (records are unique and sorted: a line in both is the same record, unchanged).
    """
    if not (_is_section(old) and _is_section(new)):
        return None
    first_old, first_new = old.find(b"\n") + 1, new.find(b"\n") + 1
    last_old = old.rfind(b"\n", 0, len(old) - 1) + 1  # where the trailer starts
    last_new = new.rfind(b"\n", 0, len(new) - 1) + 1
    body_old = memoryview(old)[first_old:last_old]
    body_new = memoryview(new)[first_new:last_new]
    shorter = min(len(body_old), len(body_new))
    head = _common_length(body_old, body_new, shorter, from_end=False)
    tail = _common_length(body_old, body_new, shorter - head, from_end=True)
    # both to line boundaries, at a newline inside the common part: the same in both
    newline = old.rfind(b"\n", first_old, first_old + head)
    head = newline + 1 - first_old if newline >= 0 else 0
    if tail:
        tail = last_old - (old.find(b"\n", last_old - tail) + 1)
    only_old = old[first_old + head : last_old - tail].splitlines(keepends=True)
    only_new = new[first_new + head : last_new - tail].splitlines(keepends=True)
    in_old, in_new = set(only_old), set(only_new)
    return [n for n in only_old if n not in in_new], [n for n in only_new if n not in in_old]


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
