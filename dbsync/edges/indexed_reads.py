"""The database's records read for a snapshot, through the change index where it serves.

A document whose raw BSON the change index knows takes its line from the snapshot on disk; only
new and changed documents are decoded and encoded. The export writes from these reads
(``dbsync.runs.export``), and a merge reads the database's side with them
(``indexed_collection_lines``), so both cost what changed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import bson

from dbsync.core.notes import RecordNotes
from dbsync.core.ordering import SortKey, part_of
from dbsync.core.rules import Rules
from dbsync.core.snapshot import encode_record, line_sort_key
from dbsync.edges.change_index import STREAM, ChangeIndex, Recorded, Row, id_bytes, raw_hash
from dbsync.edges.changes import line_value, record_id
from dbsync.edges.parts import CollectionFiles, file_lines
from dbsync.edges.snapshot_files import sorted_lines
from dbsync.edges.store import Store, change_feed, chunks, decode_raw, encode_document
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
            key, line, flagged, identity = encoded_record(raw, rules, notes)
            if rows is not None:
                rows.add((raw_hash(raw), line[6:22], flagged, identity))
            yield key, line
            progress.advance()

    yield from sorted_lines(encoded(), partial(line_sort_key, fields=rules.key))
    progress.finish()


def encoded_record(
    raw: bytes, rules: Rules, notes: RecordNotes | None
) -> tuple[SortKey, bytes, int, bytes]:
    """A raw document's key and line, 1 if ``notes`` noted it (0 otherwise), and its ``_id``
    (``id_bytes``)."""
    document = decode_raw(raw)
    key, line = encode_record(document, rules.key, raw)
    identity = id_bytes(document.get("_id"))
    if notes is None:
        return key, line, 0, identity
    before = _noted(notes)
    if notes.wanted:
        notes.see_bson(document, key)
    notes.see_raw(raw, document)
    return key, line, int(_noted(notes) > before), identity


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
    forgotten: list[bytes] = field(default_factory=list)
    """The ``_id`` of the documents read again through the change stream: their old rows go
    before ``rows`` are added."""


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
            key, line, flagged, identity = encoded_record(raw, rules, notes)
            if hit is None:
                changes.rows.append((hashed, line[6:22], flagged, identity))
            changes.encoded[part_of(key, count) if count > 1 else 0].append((key, line))
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
    identities = list(dict.fromkeys([*changed, *index.flagged_ids(name)]))
    changes = Changes(index.line_hashes(name), [[] for _ in range(count)], [])
    changes.unchanged -= set(index.by_ids(name, identities).values())
    for batch in chunks(identities):
        for raw in feed.raw_by_ids(name, [bson.decode(key)[""] for key in batch]):
            key, line, flagged, identity = encoded_record(raw, rules, notes)
            changes.rows.append((raw_hash(raw), line[6:22], flagged, identity))
            changes.encoded[part_of(key, count) if count > 1 else 0].append((key, line))
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
    known = index.by_ids(name, changed)
    found = 0
    for raw in feed.raw_by_ids(name, [bson.decode(key)[""] for key in changed]):
        _, line, _, identity = encoded_record(raw, rules, None)
        found += 1
        if known.get(identity) != line[6:22]:
            return True
    return found != len(known)


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
    index.forget_ids(name, (identity for pair in written() for identity in _identities(pair)))
    notes = RecordNotes(name, rules)
    index.add(name, (_row(line, rules, notes) for _, line in written() if line is not None))
    index.record(name, fingerprint, digest)
    return True


def _identities(pair: tuple[bytes | None, bytes | None]) -> Iterator[bytes]:
    for line in pair:
        if line is not None:
            yield id_bytes(record_id(line_value(line)))


def _row(line: bytes, rules: Rules, notes: RecordNotes) -> Row:
    """The row an export would add for the document a merge stored from ``line``."""
    raw = encode_document(line_value(line))
    _, encoded, flagged, identity = encoded_record(raw, rules, notes)
    return raw_hash(raw), encoded[6:22], flagged, identity


Row3 = tuple[SortKey, bytes | None, bytes | None]


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
    if not index.holds(name, rules):
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
        if line[6:22] in unchanged:
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
            if line[6:22] not in unchanged:
                yield (line_sort_key(line, fields) if keyed else ()), None, line

    start = 0
    for at, line, (key, record) in _positions(held, encoded, position, fields):
        yield from alone(held[start:at])
        start = at
        if line is None:
            yield key, record, None
        elif line[6:22] in unchanged:
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
            if line[6:22] not in changes.unchanged:
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
