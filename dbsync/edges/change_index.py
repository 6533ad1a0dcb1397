"""The change index: which database documents an export already encoded, and into which line.

A row maps the xxh3-128 of a document's raw BSON to the ``h`` of its record line (the hash the
snapshot format writes in every line). It is content-addressed, so it is right whatever
happened since it was written: a document changed behind dbsync's back has other bytes and
misses; a line that a ``git checkout`` removed from the snapshot is simply not found there, and
its document is encoded again. An export reads the database as raw bytes, looks them up here,
and takes the lines of the documents it finds from the snapshot on disk (their order and part
are already right); only the others are decoded and encoded.

The rows of a collection are valid for one encoder and one set of rules (``signature``): a
dbsync whose encoder writes other bytes, or a new key or timestamp field, starts the
collection's rows afresh. The file lives beside the state store, in SQLite (1M documents: 1M
small rows on disk, a batch of them in memory).

Beside the rows, each collection keeps the cheap figures of the database (``fingerprint``)
and the snapshot digest its last export wrote: ``status`` compares them instead of reading
every document.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import bson
import xxhash
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.code import Code

from dbsync.core.rules import Rules
from dbsync.core.snapshot import content_hash, encode_record
from dbsync.edges.store import STREAM_MARK, Store, change_feed

INDEX_FILE = "change-index.sqlite"
LOOKUP_BATCH = 500
"""Raw hashes per lookup query: below SQLite's oldest limit of 999 parameters."""

SCHEMA_VERSION = 2
"""Version 2 added each row's ``_id``. The file is a cache: an older one is emptied, and the next
export fills it again."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    collection TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    fingerprint TEXT,
    digest TEXT
);
CREATE TABLE IF NOT EXISTS lines (
    collection TEXT NOT NULL,
    raw BLOB NOT NULL,
    h BLOB NOT NULL,
    flagged INTEGER NOT NULL,
    id BLOB NOT NULL,
    PRIMARY KEY (collection, raw)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lines_by_h ON lines (collection, h);
CREATE INDEX IF NOT EXISTS lines_by_id ON lines (collection, id);
"""

Row = tuple[bytes, bytes, int, bytes]
"""(xxh3-128 of the raw BSON, the line's 16-hex-digit ``h``, 1 when the record is noted, the
document's ``_id`` as a BSON element, ``id_bytes``)."""

STREAM = STREAM_MARK


def id_bytes(value: object) -> bytes:
    """An ``_id`` as the BSON of ``{"": value}``: what a change stream's ``documentKey`` and a
    decoded document give alike (the same type, the same bytes)."""
    return bson.encode({"": value})


def raw_hash(raw: bytes) -> bytes:
    return xxhash.xxh3_128_digest(raw)


def moved_since(store: Store, collection: str, fingerprint: str | None) -> bool | None:
    """Whether the collection changed since ``fingerprint`` was taken, told without reading a
    document: an event on its change stream since (a replica set), or other figures (the
    embedded store). None when this cannot be told (no fingerprint, a token gone from the
    server's history): only reading every document tells then."""
    if fingerprint is None:
        return None
    if fingerprint.startswith(STREAM):
        feed = change_feed(store)
        return None if feed is None else feed.changed_since(collection, fingerprint[len(STREAM) :])
    now = database_fingerprint(store, collection)
    return None if now is None else now != fingerprint


def unchanged_since(store: Store, collection: str, fingerprint: str | None) -> bool:
    """Whether the collection is known to be as it was when ``fingerprint`` was taken."""
    return moved_since(store, collection, fingerprint) is False


def database_fingerprint(store: Store, collection: str) -> str | None:
    """Cheap figures of a collection that change when its documents do (None: the store has
    none, and only reading every document tells).

    Stores offer them through an optional ``fingerprint`` method, outside the ``Store``
    protocol: a store without one is still a store.
    """
    method = getattr(store, "fingerprint", None)
    if method is None:
        return None
    found = method(collection)
    return None if found is None else str(found)


def holds_exported(
    index: ChangeIndex, store: Store, collection: str, rules: Rules, digest: str | None
) -> bool:
    """Whether the database holds exactly the records of a snapshot of ``digest``, told
    without reading a document: its last export, under these rules, wrote that digest, and
    the store's fingerprint has not moved since. The fingerprint is taken before an export
    reads, and any write changes it (through dbsync or behind its back), so a database changed
    since, or during that export, is never taken for the snapshot; a store without
    fingerprints never is either."""
    if digest is None or not index.holds(collection, rules):
        return False
    recorded = index.recorded(collection)
    if recorded is None or recorded.fingerprint is None or recorded.digest != digest:
        return False
    return unchanged_since(store, collection, recorded.fingerprint)


def _probe_document() -> dict[str, object]:
    """A document of every BSON type: its encoding names the encoder's behaviour."""
    return {
        "_id": ObjectId("0123456789abcdef01234567"),
        "s": "é\u2028",
        "i": 1,
        "l": Int64(2**40),
        "big": 2**62,
        "f": 0.1,
        "neg": -0.0,
        "nan": float("nan"),
        "d": Decimal128("1.50"),
        "t": datetime.datetime(2024, 1, 2, 3, 4, 5, 678000),
        "b": Binary(b"\x00\x01", 0),
        "u": Binary(b"0123456789abcdef", 4),
        "n": None,
        "yes": True,
        "a": [1, "x", {"k": [None]}],
        "o": {"$x": 1, "a.b": 2},
        "ts": Timestamp(5, 6),
        "re": Regex("^a", "i"),
        "code": Code("f()"),
        "min": MinKey(),
        "max": MaxKey(),
    }


def signature(rules: Rules) -> str:
    """What the rows of a collection depend on: the encoder's output, the key and timestamp."""
    _, line = encode_record(_probe_document(), rules.key)
    return f"{content_hash(line)} key={list(rules.key)} timestamp={rules.timestamp}"


@dataclass(frozen=True)
class Recorded:
    """What the last export of a collection left: the database's figures and the digest."""

    fingerprint: str | None
    digest: str | None


class ChangeIndex:
    """The index file, opened for one run."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, state_dir: Path) -> ChangeIndex:
        state_dir.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(state_dir / INDEX_FILE)
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if version != SCHEMA_VERSION:  # a cache: start afresh rather than migrate
            connection.executescript(
                "DROP TABLE IF EXISTS lines; DROP TABLE IF EXISTS collections;"
            )
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.executescript(_SCHEMA)
        return cls(connection)

    @classmethod
    def open_read_only(cls, state_dir: Path) -> ChangeIndex | None:
        """The index as it is, or None when there is none (``status`` creates nothing)."""
        path = state_dir / INDEX_FILE
        if not path.is_file():
            return None
        try:
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            connection.execute("SELECT 1 FROM collections LIMIT 1")
        except sqlite3.Error:
            return None
        if version != SCHEMA_VERSION:
            connection.close()
            return None
        return cls(connection)

    def close(self) -> None:
        self._db.commit()
        self._db.close()

    def prepare(self, collection: str, rules: Rules) -> bool:
        """Whether the collection's rows hold for ``rules``; if not, they are dropped."""
        wanted = signature(rules)
        found = self._db.execute(
            "SELECT signature FROM collections WHERE collection = ?", (collection,)
        ).fetchone()
        if found is not None and found[0] == wanted:
            return True
        self.reset(collection, wanted)
        return False

    def holds(self, collection: str, rules: Rules) -> bool:
        """Whether the collection's rows hold for ``rules`` (``prepare`` without resetting)."""
        found = self._db.execute(
            "SELECT signature FROM collections WHERE collection = ?", (collection,)
        ).fetchone()
        return found is not None and found[0] == signature(rules)

    def reset(self, collection: str, wanted: str) -> None:
        self._db.execute("DELETE FROM lines WHERE collection = ?", (collection,))
        self._db.execute(
            "INSERT OR REPLACE INTO collections (collection, signature) VALUES (?, ?)",
            (collection, wanted),
        )

    def reset_rows(self, collection: str, rules: Rules) -> None:
        self.reset(collection, signature(rules))

    def rows(self, collection: str) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM lines WHERE collection = ?", (collection,)
        ).fetchone()
        return int(count)

    def lookup(self, collection: str, hashes: Sequence[bytes]) -> dict[bytes, tuple[bytes, int]]:
        """The known ones of ``hashes``: raw hash → (line hash, flagged)."""
        found: dict[bytes, tuple[bytes, int]] = {}
        for start in range(0, len(hashes), LOOKUP_BATCH):
            batch = hashes[start : start + LOOKUP_BATCH]
            marks = ",".join("?" * len(batch))
            query = f"SELECT raw, h, flagged FROM lines WHERE collection = ? AND raw IN ({marks})"
            for raw, h, flagged in self._db.execute(query, (collection, *batch)):
                found[raw] = (h, flagged)
        return found

    def add(self, collection: str, rows: Iterable[Row]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO lines (collection, raw, h, flagged, id) VALUES (?, ?, ?, ?, ?)",
            ((collection, raw, h, flagged, key) for raw, h, flagged, key in rows),
        )

    def line_hashes(self, collection: str) -> set[bytes]:
        """The line hash of every document the index knows (one row each)."""
        query = "SELECT h FROM lines WHERE collection = ?"
        return {h for (h,) in self._db.execute(query, (collection,))}

    def by_ids(self, collection: str, ids: Sequence[bytes]) -> dict[bytes, bytes]:
        """The known ones of ``ids`` (``id_bytes``): id → line hash."""
        found: dict[bytes, bytes] = {}
        for start in range(0, len(ids), LOOKUP_BATCH):
            batch = ids[start : start + LOOKUP_BATCH]
            marks = ",".join("?" * len(batch))
            query = f"SELECT id, h FROM lines WHERE collection = ? AND id IN ({marks})"
            for key, h in self._db.execute(query, (collection, *batch)):
                found[key] = h
        return found

    def flagged_ids(self, collection: str) -> list[bytes]:
        """The ``_id`` of the documents noted when they were encoded (encoded again each time,
        so that the notes say what a full export says)."""
        query = "SELECT id FROM lines WHERE collection = ? AND flagged = 1"
        return [key for (key,) in self._db.execute(query, (collection,))]

    def forget_ids(self, collection: str, ids: Iterable[bytes]) -> None:
        """Drop the rows of these documents (changed or gone: their new rows come after)."""
        self._db.executemany(
            "DELETE FROM lines WHERE collection = ? AND id = ?",
            ((collection, key) for key in ids),
        )

    def forget(self, collection: str, line_hashes: Iterable[bytes]) -> None:
        """Drop the rows of lines that left the snapshot (their documents changed or went)."""
        self._db.executemany(
            "DELETE FROM lines WHERE collection = ? AND h = ?",
            ((collection, h) for h in line_hashes),
        )

    def record(self, collection: str, fingerprint: str | None, digest: str) -> None:
        self._db.execute(
            "UPDATE collections SET fingerprint = ?, digest = ? WHERE collection = ?",
            (fingerprint, digest, collection),
        )

    def recorded(self, collection: str) -> Recorded | None:
        found = self._db.execute(
            "SELECT fingerprint, digest FROM collections WHERE collection = ?", (collection,)
        ).fetchone()
        return None if found is None else Recorded(found[0], found[1])

    def commit(self) -> None:
        self._db.commit()
