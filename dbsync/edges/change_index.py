"""The change index: which database documents an export already encoded, and into which line.

The one module that knows the index: its file, its rows and every read and write of them go
through this module's public functions; ``runs/export.py`` (an export that encodes only new
and changed documents), ``runs/merge.py`` (a merge that reads the database's side, or only the
keys it changed, at that cost) and ``runs/status.py`` (whether the database moved since its
last export, told without reading it) call them and see neither SQL nor rows.

A row maps the xxh3-128 of a document's raw BSON to the ``h`` of its record line (the hash the
snapshot format writes in every line, ``line_hash_bytes``). It is content-addressed, so it is
right whatever happened since it was written: a document changed behind dbsync's back has other
bytes and misses; a line that a ``git checkout`` removed from the snapshot is simply not found
there, and its document is encoded again. An export reads the database as raw bytes, looks them
up here, and takes the lines of the documents it finds from the snapshot on disk (their order
and part are already right); only the others are decoded and encoded (``records.encoded_record``,
the encoding a full read uses: the same bytes).

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
import heapq
import sqlite3
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bson
import xxhash
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.code import Code

from dbsync.core.notes import RecordNotes
from dbsync.core.ordering import SortKey, part_of
from dbsync.core.rules import Rules
from dbsync.core.snapshot import content_hash, encode_record, line_hash_bytes, line_sort_key
from dbsync.edges.change_log import LOG_MARK
from dbsync.edges.changes import line_record_id, line_value
from dbsync.edges.parts import CollectionFiles, file_lines
from dbsync.edges.records import encoded_record
from dbsync.edges.store import STREAM_MARK, Document, Store, change_feed, chunks, encode_document
from dbsync.errors import InvalidInput
from dbsync.progress import Progress

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
    if digest is None or not index._holds(collection, rules):
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


# --- The index file (SQLite) ---------------------------------------------------------------------


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

    def _prepare(self, collection: str, rules: Rules) -> bool:
        """Whether the collection's rows hold for ``rules``; if not, they are dropped."""
        wanted = signature(rules)
        found = self._db.execute(
            "SELECT signature FROM collections WHERE collection = ?", (collection,)
        ).fetchone()
        if found is not None and found[0] == wanted:
            return True
        self._reset(collection, wanted)
        return False

    def _holds(self, collection: str, rules: Rules) -> bool:
        """Whether the collection's rows hold for ``rules`` (``prepare`` without resetting)."""
        found = self._db.execute(
            "SELECT signature FROM collections WHERE collection = ?", (collection,)
        ).fetchone()
        return found is not None and found[0] == signature(rules)

    def _reset(self, collection: str, wanted: str) -> None:
        self._db.execute("DELETE FROM lines WHERE collection = ?", (collection,))
        self._db.execute(
            "INSERT OR REPLACE INTO collections (collection, signature) VALUES (?, ?)",
            (collection, wanted),
        )

    def _row_count(self, collection: str) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM lines WHERE collection = ?", (collection,)
        ).fetchone()
        return int(count)

    def _lookup(self, collection: str, hashes: Sequence[bytes]) -> dict[bytes, tuple[bytes, int]]:
        """The known ones of ``hashes``: raw hash → (line hash, flagged)."""
        found: dict[bytes, tuple[bytes, int]] = {}
        for start in range(0, len(hashes), LOOKUP_BATCH):
            batch = hashes[start : start + LOOKUP_BATCH]
            marks = ",".join("?" * len(batch))
            query = f"SELECT raw, h, flagged FROM lines WHERE collection = ? AND raw IN ({marks})"
            for raw, h, flagged in self._db.execute(query, (collection, *batch)):
                found[raw] = (h, flagged)
        return found

    def _add(self, collection: str, rows: Iterable[Row]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO lines (collection, raw, h, flagged, id) VALUES (?, ?, ?, ?, ?)",
            ((collection, raw, h, flagged, key) for raw, h, flagged, key in rows),
        )

    def _line_hashes(self, collection: str) -> set[bytes]:
        """The line hash of every document the index knows (one row each)."""
        query = "SELECT h FROM lines WHERE collection = ?"
        return {h for (h,) in self._db.execute(query, (collection,))}

    def _by_ids(self, collection: str, ids: Sequence[bytes]) -> dict[bytes, bytes]:
        """The known ones of ``ids`` (``id_bytes``): id → line hash."""
        found: dict[bytes, bytes] = {}
        for start in range(0, len(ids), LOOKUP_BATCH):
            batch = ids[start : start + LOOKUP_BATCH]
            marks = ",".join("?" * len(batch))
            query = f"SELECT id, h FROM lines WHERE collection = ? AND id IN ({marks})"
            for key, h in self._db.execute(query, (collection, *batch)):
                found[key] = h
        return found

    def _flagged_ids(self, collection: str) -> list[bytes]:
        """The ``_id`` of the documents noted when they were encoded (encoded again each time,
        so that the notes say what a full export says)."""
        query = "SELECT id FROM lines WHERE collection = ? AND flagged = 1"
        return [key for (key,) in self._db.execute(query, (collection,))]

    def _forget_ids(self, collection: str, ids: Iterable[bytes]) -> None:
        """Drop the rows of these documents (changed or gone: their new rows come after)."""
        self._db.executemany(
            "DELETE FROM lines WHERE collection = ? AND id = ?",
            ((collection, key) for key in ids),
        )

    def _forget(self, collection: str, line_hashes: Iterable[bytes]) -> None:
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


# --- The database read through the index ---------------------------------------------------------


class IndexRows:
    """Rows for the change index, written in batches as a full export goes: ``see`` is the
    ``seen`` of ``records.collection_lines``."""

    def __init__(self, index: ChangeIndex, collection: str) -> None:
        self.index, self.collection = index, collection
        self.batch: list[Row] = []

    def see(self, raw: bytes, line: bytes, noted: int, document: Document) -> None:
        self.batch.append(_row(raw_hash(raw), line, noted, document))
        if len(self.batch) >= 1000:
            self.flush()

    def flush(self) -> None:
        self.index._add(self.collection, self.batch)
        self.batch = []


def _row(hashed: bytes, line: bytes, noted: int, document: Document) -> Row:
    """The index's row of a document whose raw BSON hashes to ``hashed`` (``raw_hash``),
    encoded into ``line``."""
    return hashed, line_hash_bytes(line), noted, id_bytes(document.get("_id"))


def export_rows(index: ChangeIndex, collection: str, rules: Rules) -> IndexRows:
    """The rows of a full export: the collection's index starts afresh."""
    index._reset(collection, signature(rules))
    return IndexRows(index, collection)


MISSES_HELD = 100_000
"""Changed documents an export holds in memory before it writes the collection in full."""


@dataclass
class Changes:
    """What the database holds beside the snapshot on disk, read once."""

    unchanged: set[bytes]  # line hashes of documents the index knows: taken from the snapshot
    encoded: list[list[tuple[SortKey, bytes]]]  # the others, encoded, by part
    rows: list[Row]  # what the index learns
    forgotten: list[bytes] = field(default_factory=list)
    """The ``_id`` of the documents read again through the change stream: their old rows go
    before ``rows`` are added."""

    def encode(
        self, raw: bytes, hashed: bytes, rules: Rules, notes: RecordNotes | None, learn: bool
    ) -> None:
        """Encode a document the snapshot cannot give (into its part), and its row if the
        index is to ``learn`` it."""
        key, line, noted, document = encoded_record(raw, rules, notes)
        if learn:
            self.rows.append(_row(hashed, line, noted, document))
        count = len(self.encoded)
        self.encoded[part_of(key, count) if count > 1 else 0].append((key, line))


def read_changes(
    index: ChangeIndex,
    store: Store,
    name: str,
    rules: Rules,
    notes: RecordNotes | None,
    count: int,
    progress: Progress,
) -> Changes | None:
    """Every document: known ones by their line hash, the others encoded (None: too many
    changed to hold, the full export is as cheap)."""
    changes = Changes(set(), [[] for _ in range(count)], [])
    held = 0
    for batch in chunks(store.iter_raw_documents(name)):
        hashes = [raw_hash(raw) for raw in batch]
        known = index._lookup(name, hashes)
        for raw, hashed in zip(batch, hashes, strict=True):
            hit = known.get(hashed)
            # a noted record is encoded, so that the notes say what a full export says
            if hit is not None and not hit[1] and hit[0] not in changes.unchanged:
                changes.unchanged.add(hit[0])
                continue
            changes.encode(raw, hashed, rules, notes, learn=hit is None)
            held += 1
            if held > MISSES_HELD:
                return None
        progress.advance(len(batch))
    return changes


def read_changes_by_feed(
    index: ChangeIndex,
    store: Store,
    name: str,
    rules: Rules,
    notes: RecordNotes | None,
    count: int,
    since: str | None,
) -> Changes | None:
    """``read_changes`` reading only the documents changed since the change stream's token
    ``since`` (a fingerprint ``STREAM...``): the index's other rows are the unchanged ones. None
    when the store has no change stream, the token is gone from the server's history, or too
    many documents changed to hold: read every document instead."""
    feed = change_feed(store)
    if feed is None or since is None or not since.startswith(STREAM):
        return None
    changed = feed.changed_ids(name, since[len(STREAM) :], MISSES_HELD)
    if changed is None:
        return None
    identities = list(dict.fromkeys([*changed, *index._flagged_ids(name)]))
    changes = Changes(index._line_hashes(name), [[] for _ in range(count)], [])
    changes.unchanged -= set(index._by_ids(name, identities).values())
    for batch in chunks(identities):
        for raw in feed.raw_by_ids(name, [bson.decode(key)[""] for key in batch]):
            changes.encode(raw, raw_hash(raw), rules, notes, learn=True)
    changes.forgotten = identities
    return changes


STATUS_READS = 1000
"""Changed documents ``stream_moved`` reads at most before it says it cannot tell cheaply."""


def stream_moved(
    index: ChangeIndex, store: Store, name: str, rules: Rules, since: str
) -> bool | None:
    """Whether the documents the change stream reports since ``since`` now differ from the
    lines the index knows for them: the database moved since the export only if one does (an
    import undone, a record written back as it was, leave it where it was). Reads those
    documents alone; None when the stream cannot tell, or too many changed to read cheaply."""
    feed = change_feed(store)
    if feed is None or not since.startswith(STREAM):
        return None
    changed = feed.changed_ids(name, since[len(STREAM) :], STATUS_READS)
    if changed is None or len(changed) > STATUS_READS:
        return None
    known = index._by_ids(name, changed)
    found = 0
    for raw in feed.raw_by_ids(name, [bson.decode(key)[""] for key in changed]):
        _, line, _, document = encoded_record(raw, rules, None)
        found += 1
        if known.get(id_bytes(document.get("_id"))) != line_hash_bytes(line):
            return True
    return found != len(known)


Row3 = tuple[SortKey, bytes | None, bytes | None]


Written = Callable[[], Iterable[tuple[bytes | None, bytes | None]]]
"""A merge's writes, in a form read twice: (the record line it read, the line it wrote), None
for no record."""


def learn_merged(
    index: ChangeIndex, name: str, rules: Rules, written: Written, seen: Recorded, digest: str
) -> bool:
    """Teach the index what a merge wrote, so that ``stream_moved`` finds the database equal
    to what the index knows, and the snapshot of ``digest`` (what the merge made the database
    hold) as what it would export: the rows of the documents the merge read or wrote are
    replaced by the rows of the lines it wrote. The fingerprint stays the one ``seen``, taken
    before the merge: every document written since, by the merge or by anyone, is still
    reported by the feed and compared with its row, so a write of the application during or
    after the merge is still told.

    Only for a merge that read the database as the index knew it (``seen``, its record then,
    with a feed's fingerprint, and nothing written since): False, and nothing learnt, when the
    record is another now."""
    fingerprint = seen.fingerprint
    if fingerprint is None or not fingerprint.startswith(STREAM) or index.recorded(name) != seen:
        return False
    index._forget_ids(name, (identity for pair in written() for identity in _identities(pair)))
    notes = RecordNotes(name, rules)
    index._add(name, (_merged_row(line, rules, notes) for _, line in written() if line is not None))
    index.record(name, fingerprint, digest)
    return True


def _identities(pair: tuple[bytes | None, bytes | None]) -> Iterator[bytes]:
    for line in pair:
        if line is not None:
            yield id_bytes(line_record_id(line))


def _merged_row(line: bytes, rules: Rules, notes: RecordNotes) -> Row:
    """The row an export would add for the document a merge stored from ``line``."""
    raw = encode_document(line_value(line))
    _, encoded, flagged, document = encoded_record(raw, rules, notes)
    return _row(raw_hash(raw), encoded, flagged, document)


class IndexMismatch(Exception):
    """``indexed_collection_lines`` found lines it cannot vouch for (a known document's line
    missing from the snapshot, two records on one key): read the collection in full."""


def indexed_collection_lines(
    index: ChangeIndex,
    store: Store,
    name: str,
    rules: Rules,
    files: CollectionFiles | None,
    progress: Progress,
) -> Iterator[bytes] | None:
    """The lines ``collection_lines`` would give, in key order, each key once, at the cost of
    one read of the database and of ``files``: the documents the change index knows take their
    lines from ``files`` (a snapshot this asset exported or merged), only the others are
    encoded. None when the index does not serve (``indexed_changes``); the stream raises
    ``IndexMismatch`` when ``files`` lack a known document's line, or hold a line on the key
    of a changed document: the database is then to be read in full."""
    changes = indexed_changes(index, store, name, rules, files, progress)
    if changes is None or files is None:
        return None
    return _indexed_lines(files, name, rules.key, changes)


def indexed_changes(
    index: ChangeIndex,
    store: Store,
    name: str,
    rules: Rules,
    files: CollectionFiles | None,
    progress: Progress,
) -> Changes | None:
    """What the database holds beside ``files``, read once, the changed documents in key order
    (by part). None when the index does not serve: no rows for these rules, no usable
    snapshot, too many changed documents to hold, two changed ones on one key."""
    if files is None or files.complete() or files.rules.key != rules.key:
        return None
    if not index._holds(name, rules):
        return None
    progress.start(f"export {name}", files.records())
    notes = RecordNotes(name, rules)
    recorded = index.recorded(name)
    since = recorded.fingerprint if recorded is not None else None
    changes = read_changes_by_feed(index, store, name, rules, notes, files.count, since)
    if changes is None:
        changes = read_changes(index, store, name, rules, notes, files.count, progress)
    progress.finish()
    if changes is None:
        return None
    for encoded in changes.encoded:
        encoded.sort(key=first_of)
        if any(a[0] == b[0] for a, b in zip(encoded, encoded[1:], strict=False)):
            return None
    return changes


def changed_rows(
    parts: Sequence[Iterable[bytes]],
    changes: Changes,
    name: str,
    fields: Sequence[str],
    keyed: bool = False,
) -> Iterator[Row3]:
    """``(key, database's line, snapshot's line)`` for each key where they differ, in key
    order, when ``parts`` (each file's lines, key-sorted, as ``changes`` were read by part) are
    the lines ``changes`` were read against: a line of an unchanged document is the database's
    too, and is only counted. The key is ``()`` unless ``keyed`` or the collection has parts.
    Raises ``IndexMismatch`` as ``indexed_collection_lines`` does."""
    kept = [0]
    unchanged = changes.unchanged
    if len(parts) == 1:
        yield from _part_rows(parts[0], changes.encoded[0], changes, name, fields, kept, keyed)
    else:
        streams = [
            _part_rows(lines, encoded, changes, name, fields, kept, keyed=True)
            for lines, encoded in zip(parts, changes.encoded, strict=True)
        ]
        yield from heapq.merge(*streams, key=_row_key)
    if kept[0] != len(unchanged):
        raise IndexMismatch(f"{name}: the snapshot lacks lines of unchanged documents")


def _row_key(row: Row3) -> SortKey:
    return row[0]


def _part_rows(
    lines: Iterable[bytes],
    encoded: list[tuple[SortKey, bytes]],
    changes: Changes,
    name: str,
    fields: Sequence[str],
    kept: list[int],
    keyed: bool = False,
) -> Iterator[Row3]:
    """``changed_rows`` of one file, each row with its key when ``keyed`` (else ``()``)."""
    unchanged = changes.unchanged
    position, end = 0, len(encoded)
    held: list[bytes] = []
    for line in lines:
        if line_hash_bytes(line) in unchanged:
            kept[0] += 1
            if position == end:
                continue
        elif position == end:  # the database changed or deleted this document
            yield (line_sort_key(line, fields) if keyed else ()), None, line
            continue
        held.append(line)
        if len(held) == STRIDE:
            position = yield from _paired(held, encoded, position, fields, name, unchanged, keyed)
            held = []
    position = yield from _paired(held, encoded, position, fields, name, unchanged, keyed)
    for key, line in encoded[position:]:
        yield key, line, None


def _paired(
    held: list[bytes],
    encoded: list[tuple[SortKey, bytes]],
    position: int,
    fields: Sequence[str],
    name: str,
    unchanged: set[bytes],
    keyed: bool,
) -> Generator[Row3, None, int]:
    """``_placed`` for ``changed_rows``: the changed records among the held lines, each paired
    with the snapshot's line on its key (None: none there); the held lines of unchanged
    documents left out."""

    def alone(lines: list[bytes]) -> Iterator[Row3]:
        for line in lines:
            if line_hash_bytes(line) not in unchanged:
                yield (line_sort_key(line, fields) if keyed else ()), None, line

    start = 0
    for at, line, (key, record) in _positions(held, encoded, position, fields):
        yield from alone(held[start:at])
        start = at
        if line is None:
            yield key, record, None
        elif line_hash_bytes(line) in unchanged:
            raise IndexMismatch(_SHARED_KEY.format(name=name))
        else:
            yield key, record, line
            start = at + 1
        position += 1
    yield from alone(held[start:])
    return position


def _indexed_lines(
    files: CollectionFiles, name: str, fields: Sequence[str], changes: Changes
) -> Iterator[bytes]:
    kept = [0]

    def part(index: int, path: Path, keyed: bool) -> Iterator[tuple[SortKey, bytes]]:
        encoded = changes.encoded[index]
        position, end = 0, len(encoded)
        held: list[bytes] = []
        for line in file_lines(path, name):
            if line_hash_bytes(line) not in changes.unchanged:
                continue  # a document changed or gone since this line was written
            kept[0] += 1
            if keyed:  # merged with the other parts by key: every line's key
                key = line_sort_key(line, fields)
                while position < end and encoded[position][0] < key:
                    yield encoded[position]
                    position += 1
                if position < end and encoded[position][0] == key:
                    raise IndexMismatch(_SHARED_KEY.format(name=name))
                yield key, line
            elif position == end:
                yield (), line
            else:
                held.append(line)
                if len(held) == STRIDE:
                    position = yield from _placed(held, encoded, position, fields, name)
                    held = []
        position = yield from _placed(held, encoded, position, fields, name)
        yield from encoded[position:]

    if files.count == 1:
        yield from (line for _, line in part(0, files.files[0][0], False))
    else:
        streams = [part(i, path, True) for i, (path, _) in enumerate(files.files)]
        previous: SortKey | None = None
        for key, line in heapq.merge(*streams, key=first_of):
            if key == previous:
                raise IndexMismatch(f"{name}: two parts hold one key")
            previous = key
            yield line
    if kept[0] != len(changes.unchanged):
        raise IndexMismatch(f"{name}: the snapshot lacks lines of unchanged documents")


STRIDE = 64
"""Kept lines held before their last one's key is computed: a changed record is put among
them by a binary search, so a sparse change costs a few keys per ``STRIDE`` lines, not one
per line."""

_SHARED_KEY = "{name}: a changed record shares the key of a kept line"


def _placed(
    held: list[bytes],
    encoded: list[tuple[SortKey, bytes]],
    position: int,
    fields: Sequence[str],
    name: str,
) -> Generator[tuple[SortKey, bytes], None, int]:
    """The held lines (in key order) with the changed records from ``position`` that sort
    before the last of them, each in its place; returns the position of the next record."""
    start = 0
    for at, line, record in _positions(held, encoded, position, fields):
        if line is not None:
            raise IndexMismatch(_SHARED_KEY.format(name=name))
        for other in held[start:at]:
            yield (), other
        yield record
        start = at
        position += 1
    for other in held[start:]:
        yield (), other
    return position


def _positions(
    held: list[bytes], encoded: list[tuple[SortKey, bytes]], position: int, fields: Sequence[str]
) -> Iterator[tuple[int, bytes | None, tuple[SortKey, bytes]]]:
    """For each changed record from ``position`` that sorts no later than the last held line:
    the index of the first held line not below it, that line if it has the record's key (else
    None), and the record (its key and line). A binary search: a few keys computed per record."""
    end = len(encoded)
    if not held or position >= end:
        return
    keys: dict[int, SortKey] = {}

    def key_at(i: int) -> SortKey:
        found = keys.get(i)
        if found is None:
            found = keys[i] = line_sort_key(held[i], fields)
        return found

    start, last = 0, len(held) - 1
    while position < end and encoded[position][0] <= key_at(last):
        target = encoded[position][0]
        low, high = start, last
        while low < high:
            middle = (low + high) // 2
            if key_at(middle) < target:
                low = middle + 1
            else:
                high = middle
        yield low, held[low] if key_at(low) == target else None, encoded[position]
        position, start = position + 1, low


def first_of(pair: tuple[SortKey, bytes]) -> SortKey:
    return pair[0]


# --- An export through the index -----------------------------------------------------------------


ROWS_KEPT_PER_RECORD = 2
"""Rows of documents long gone pile up: past this many per record (and a thousand), a full
export clears them."""


def serves_export(
    index: ChangeIndex, collection: str, rules: Rules, existing: CollectionFiles | None
) -> bool:
    """Whether an export of the collection can take the lines of known documents from
    ``existing`` (the snapshot on disk, this asset's last export or merge); rows made under
    other rules are dropped."""
    if existing is None or existing.complete() or existing.rules.key != rules.key:
        return False
    limit = ROWS_KEPT_PER_RECORD * (existing.records() or 0) + 1000
    return index._prepare(collection, rules) and index._row_count(collection) <= limit


def unchanged_since_export(
    index: ChangeIndex, store: Store, collection: str, digest: str | None
) -> bool:
    """Whether the database holds what its last export wrote, told without reading a
    document: the database's change feed says nothing was written since that export (its
    mark, taken before that export read), whose digest is ``digest``; and no record of it is
    noted (a note is said again at every export)."""
    recorded = index.recorded(collection)
    if recorded is None or recorded.fingerprint is None or recorded.digest is None:
        return False
    if not recorded.fingerprint.startswith(STREAM):
        return False  # figures of a file, not a feed: they can miss a write
    if recorded.digest != digest or index._flagged_ids(collection):
        return False
    return moved_since(store, collection, recorded.fingerprint) is False


def feed_name(index: ChangeIndex, collection: str) -> str:
    """What told the last export's mark: the embedded store's change log, or a replica set's
    change stream."""
    recorded = index.recorded(collection)
    fingerprint = recorded.fingerprint if recorded is not None else None
    logged = fingerprint is not None and fingerprint.startswith(STREAM + LOG_MARK)
    return "change log" if logged else "change stream"


def read_for_export(
    index: ChangeIndex,
    store: Store,
    collection: str,
    rules: Rules,
    notes: RecordNotes,
    existing: CollectionFiles,
    progress: Progress,
) -> tuple[Changes | None, str]:
    """What the database holds beside ``existing``, and how it was read: through the change
    feed when the store has one and the last export's mark still answers (only the documents
    changed since are read); else every document, hashed (only the changed ones are encoded).
    None: too many changed to hold, the full export is as cheap."""
    recorded = index.recorded(collection)
    since = recorded.fingerprint if recorded is not None else None
    count = existing.count
    changes = read_changes_by_feed(index, store, collection, rules, notes, count, since)
    if changes is not None:
        read = f"{feed_name(index, collection)}: {len(changes.forgotten)} document(s) read"
        progress.advance(existing.records() or 0)
        return changes, read
    changes = read_changes(index, store, collection, rules, notes, count, progress)
    return changes, "every document read"


def encode_lost(
    index: ChangeIndex,
    store: Store,
    collection: str,
    rules: Rules,
    changes: Changes,
    existing: CollectionFiles,
) -> bool:
    """Encode the known documents whose lines ``existing`` no longer has (git changed it, or
    a merge kept this asset's version): one more read, of those only. False: the snapshot
    cannot be read, the full export rewrites it."""
    count, lost = existing.count, set(changes.unchanged)
    try:
        for path, _ in existing.files:
            lost.difference_update(map(line_hash_bytes, file_lines(path, collection)))
    except InvalidInput:
        return False
    if not lost:
        return True
    changes.unchanged -= lost
    for batch in chunks(store.iter_raw_documents(collection)):
        known = index._lookup(collection, [raw_hash(raw) for raw in batch])
        for raw in batch:
            hit = known.get(raw_hash(raw))
            if hit is not None and hit[0] in lost:
                key, line, _, _ = encoded_record(raw, rules, None)
                changes.encoded[part_of(key, count) if count > 1 else 0].append((key, line))
    return True


def learn_export(
    index: ChangeIndex, collection: str, changes: Changes, dropped: Iterable[bytes]
) -> None:
    """What an export through the index wrote: the rows of the lines that left the snapshot
    (``dropped``, their line hashes) and of the documents read again through the change feed
    go, the rows of the documents encoded come."""
    index._forget(collection, dropped)
    index._forget_ids(collection, changes.forgotten)
    index._add(collection, changes.rows)


# --- Status: did the database move since its export? ---------------------------------------------


def moved_since_export(
    index: ChangeIndex, store: Store, collection: str, rules: Rules
) -> tuple[bool, str] | None:
    """Whether the database moved since its last export, and the digest that export wrote;
    None when this cannot be told cheaply (no export recorded, a fingerprint that cannot
    answer, too many changed documents to read). On a change feed, documents written back as
    they were leave it where it was (``stream_moved``)."""
    recorded = index.recorded(collection)
    if recorded is None or recorded.fingerprint is None or recorded.digest is None:
        return None
    moved = moved_since(store, collection, recorded.fingerprint)
    if moved and recorded.fingerprint.startswith(STREAM):  # events: did the records change?
        moved = stream_moved(index, store, collection, rules, recorded.fingerprint)
    return None if moved is None else (moved, recorded.digest)
