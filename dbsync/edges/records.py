"""A collection's records as a stream: read from the store, encoded, sorted by key, each key once.

What export, merge and dedupe read a database's side through: ``collection_lines`` streams the
records in key order with bounded memory (``sorted_lines``), ``unique_pairs`` and
``unique_lines`` set aside records sharing a key into ``KeyClashes``, for the caller to refuse
or fold them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

from dbsync.core.notes import RecordNotes
from dbsync.core.ordering import SortKey, describe_key
from dbsync.core.rules import Rules
from dbsync.core.snapshot import encode_record, line_document, line_sort_key
from dbsync.edges.snapshot_files import sorted_lines
from dbsync.edges.store import Store, decode_raw
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


def collection_lines(
    store: Store,
    collection: str,
    rules: Rules,
    progress: Progress,
    notes: RecordNotes | None = None,
) -> Iterator[tuple[SortKey, bytes]]:
    """The collection's records in key order, streamed with bounded memory; ``notes`` counts
    records lacking a key field or a timestamp."""
    progress.start(f"export {collection}", store.count(collection))
    note = notes.see_bson if notes is not None and notes.wanted else None
    see_raw = notes.see_raw if notes is not None else None

    def encoded() -> Iterator[tuple[SortKey, bytes]]:
        # Raw reads: the BSON as stored, so a deprecated type pymongo converts can be named.
        for raw in store.iter_raw_documents(collection):
            document = decode_raw(raw)
            key, line = encode_record(document, rules.key, raw)
            if note is not None:
                note(document, key)
            if see_raw is not None:
                see_raw(raw, document)
            yield key, line
            progress.advance()

    yield from sorted_lines(encoded(), partial(line_sort_key, fields=rules.key))
    progress.finish()
