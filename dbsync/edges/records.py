"""A collection's records as a stream: read from the store, encoded, sorted by key, each key once.

"The database as sorted lines" is written here once: ``collection_lines`` streams the records in
key order with bounded memory (``sorted_lines``); a full export (which tells the change index
each document's line as it goes, ``seen``), a merge's full read and dedupe all read through it,
and ``encoded_record`` is the one encoding of a stored document, which the change index's reads
of new and changed documents use too (``dbsync.edges.change_index``), so that both give the
same bytes. ``unique_pairs`` and ``unique_lines`` set aside records sharing a key into
``KeyClashes``, for the caller to refuse or fold them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

from dbsync.core.notes import RecordNotes
from dbsync.core.ordering import SortKey, describe_key
from dbsync.core.rules import Rules
from dbsync.core.snapshot import encode_record, line_document, line_sort_key
from dbsync.edges.snapshot_files import sorted_lines
from dbsync.edges.store import Document, Store, decode_raw
from dbsync.progress import Progress

CLASHES_SHOWN = 20


@dataclass
class KeyClashes:
    """Groups of records sharing one key, found while streaming a sorted collection."""

    fields: Sequence[str]
    groups: list[list[bytes]] = field(default_factory=list)

    def message(self, collection: str) -> str:
        records = sum(len(group) for group in self.groups)
        lines = [
            f"{collection}: the key ({', '.join(self.fields)}) is not unique: "
            f"{len(self.groups)} key(s) shared by {records} records"
        ]
        for group in self.groups[:CLASHES_SHOWN]:
            ids = ", ".join(_id_text(line) for line in group)
            lines.append(f"  {describe_key(line_document(group[0]), self.fields)}  ← _id {ids}")
        if len(self.groups) > CLASHES_SHOWN:
            lines.append(f"  ... and {len(self.groups) - CLASHES_SHOWN} more")
        return "\n".join(lines)


def _id_text(line: bytes) -> str:
    return describe_key(line_document(line), ["_id"]).removeprefix("_id=")


def unique_pairs(
    pairs: Iterable[tuple[SortKey, bytes]], clashes: KeyClashes
) -> Iterator[tuple[SortKey, bytes]]:
    """The (key, line) pairs of a key-sorted stream; records sharing a key are set aside in
    ``clashes``."""
    current_key: SortKey = ()
    current: list[bytes] = []
    for key, line in pairs:
        if current and key == current_key:
            current.append(line)
            continue
        if len(current) == 1:
            yield current_key, current[0]
        elif current:
            clashes.groups.append(current)
        current_key, current = key, [line]
    if len(current) == 1:
        yield current_key, current[0]
    elif current:
        clashes.groups.append(current)


def unique_lines(pairs: Iterable[tuple[SortKey, bytes]], clashes: KeyClashes) -> Iterator[bytes]:
    """The lines of a key-sorted stream; records sharing a key are set aside in ``clashes``."""
    return (line for _, line in unique_pairs(pairs, clashes))


Seen = Callable[[bytes, bytes, int, Document], None]
"""Told each document read, as ``(raw BSON, line, noted, document)``: ``noted`` is 1 when the
record was noted (``RecordNotes``), else 0."""


def collection_lines(
    store: Store,
    collection: str,
    rules: Rules,
    progress: Progress,
    notes: RecordNotes | None = None,
    *,
    total: int | None = None,
    seen: Seen | None = None,
) -> Iterator[tuple[SortKey, bytes]]:
    """The collection's records in key order, streamed with bounded memory; ``notes`` counts
    records lacking a key field or a timestamp; ``seen`` is told each document as it is read.
    ``total``: the count the progress shows, when the caller has it (montydb counts by decoding
    every document)."""
    progress.start(f"export {collection}", store.count(collection) if total is None else total)

    def encoded() -> Iterator[tuple[SortKey, bytes]]:
        # Raw reads: the BSON as stored, so a deprecated type pymongo converts can be named.
        for raw in store.iter_raw_documents(collection):
            key, line, noted, document = encoded_record(raw, rules, notes)
            if seen is not None:
                seen(raw, line, noted, document)
            yield key, line
            progress.advance()

    yield from sorted_lines(encoded(), partial(line_sort_key, fields=rules.key))
    progress.finish()


def encoded_record(
    raw: bytes, rules: Rules, notes: RecordNotes | None
) -> tuple[SortKey, bytes, int, Document]:
    """A stored document's key and line, 1 if ``notes`` noted it (0 otherwise), and the
    document decoded."""
    document = decode_raw(raw)
    key, line = encode_record(document, rules.key, raw)
    if notes is None:
        return key, line, 0, document
    before = _noted(notes)
    if notes.wanted:
        notes.see_bson(document, key)
    notes.see_raw(raw, document)
    return key, line, int(_noted(notes) > before), document


def _noted(notes: RecordNotes) -> int:
    return notes.null_key.count + notes.no_timestamp.count + notes.converted.count
