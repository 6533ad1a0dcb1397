"""The database's records read for a snapshot, through the change index where it serves.

A document whose raw BSON the change index knows takes its line from the snapshot on disk; only
new and changed documents are decoded and encoded. The export writes from these reads
(``dbsync.runs.export``), and a merge reads the database's side with them
(``indexed_collection_lines``), so both cost what changed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from dbsync.core.notes import RecordNotes
from dbsync.core.ordering import SortKey, part_of
from dbsync.core.rules import Rules
from dbsync.core.snapshot import encode_record, line_sort_key
from dbsync.edges.change_index import ChangeIndex, Row, raw_hash
from dbsync.edges.parts import CollectionFiles, file_lines
from dbsync.edges.snapshot_files import sorted_lines
from dbsync.edges.store import Store, chunks, decode_raw
from dbsync.progress import Progress


def exported_lines(
    store: Store,
    name: str,
    rules: Rules,
    progress: Progress,
    notes: RecordNotes | None,
    rows: IndexRows | None,
    total: int,
) -> Iterator[tuple[SortKey, bytes]]:
    """``collection_lines`` read as raw BSON, each document's line told to ``rows``."""
    progress.start(f"export {name}", total)

    def encoded() -> Iterator[tuple[SortKey, bytes]]:
        for raw in store.iter_raw_documents(name):
            key, line, flagged = encoded_record(raw, rules, notes)
            if rows is not None:
                rows.add((raw_hash(raw), line[6:22], flagged))
            yield key, line
            progress.advance()

    yield from sorted_lines(encoded(), partial(line_sort_key, fields=rules.key))
    progress.finish()


def encoded_record(
    raw: bytes, rules: Rules, notes: RecordNotes | None
) -> tuple[SortKey, bytes, int]:
    """A raw document's key and line, and 1 if ``notes`` noted it (0 otherwise)."""
    document = decode_raw(raw)
    key, line = encode_record(document, rules.key, raw)
    if notes is None:
        return key, line, 0
    before = _noted(notes)
    if notes.wanted:
        notes.see_bson(document, key)
    notes.see_raw(raw, document)
    return key, line, int(_noted(notes) > before)


def _noted(notes: RecordNotes) -> int:
    return notes.null_key.count + notes.no_timestamp.count + notes.converted.count


class IndexRows:
    """Rows for the change index, written in batches as an export goes."""

    def __init__(self, index: ChangeIndex, collection: str) -> None:
        self.index, self.collection = index, collection
        self.batch: list[Row] = []

    def add(self, row: Row) -> None:
        self.batch.append(row)
        if len(self.batch) >= 1000:
            self.flush()

    def flush(self) -> None:
        self.index.add(self.collection, self.batch)
        self.batch = []


MISSES_HELD = 100_000
"""Changed documents an export holds in memory before it writes the collection in full."""


@dataclass
class Changes:
    """What the database holds beside the snapshot on disk, read once."""

    unchanged: set[bytes]  # line hashes of documents the index knows: taken from the snapshot
    encoded: list[list[tuple[SortKey, bytes]]]  # the others, encoded, by part
    rows: list[Row]  # what the index learns


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
        known = index.lookup(name, hashes)
        for raw, hashed in zip(batch, hashes, strict=True):
            hit = known.get(hashed)
            # a noted record is encoded, so that the notes say what a full export says
            if hit is not None and not hit[1] and hit[0] not in changes.unchanged:
                changes.unchanged.add(hit[0])
                continue
            key, line, flagged = encoded_record(raw, rules, notes)
            if hit is None:
                changes.rows.append((hashed, line[6:22], flagged))
            changes.encoded[part_of(key, count) if count > 1 else 0].append((key, line))
            held += 1
            if held > MISSES_HELD:
                return None
        progress.advance(len(batch))
    return changes


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
    encoded. None when the index does not serve (no rows for these rules, no usable snapshot,
    too many changed documents to hold, two changed ones on one key); the stream raises
    ``IndexMismatch`` when ``files`` lack a known document's line, or hold a line on the key
    of a changed document: the database is then to be read in full."""
    if files is None or files.complete() or files.rules.key != rules.key:
        return None
    if not index.holds(name, rules):
        return None
    progress.start(f"export {name}", files.records())
    changes = read_changes(
        index, store, name, rules, RecordNotes(name, rules), files.count, progress
    )
    progress.finish()
    if changes is None:
        return None
    for encoded in changes.encoded:
        encoded.sort(key=first_of)
        if any(a[0] == b[0] for a, b in zip(encoded, encoded[1:], strict=False)):
            return None
    return _indexed_lines(files, name, rules.key, changes)


def _indexed_lines(
    files: CollectionFiles, name: str, fields: Sequence[str], changes: Changes
) -> Iterator[bytes]:
    kept = [0]

    def part(index: int, path: Path, keyed: bool) -> Iterator[tuple[SortKey, bytes]]:
        encoded = changes.encoded[index]
        position, end = 0, len(encoded)
        for line in file_lines(path, name):
            if line[6:22] not in changes.unchanged:
                continue  # a document changed or gone since this line was written
            kept[0] += 1
            if position < end or keyed:  # keys only while needed
                key = line_sort_key(line, fields)
                while position < end and encoded[position][0] < key:
                    yield encoded[position]
                    position += 1
                if position < end and encoded[position][0] == key:
                    raise IndexMismatch(f"{name}: a changed record shares the key of a kept line")
                yield key, line
            else:
                yield (), line
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


def first_of(pair: tuple[SortKey, bytes]) -> SortKey:
    return pair[0]
