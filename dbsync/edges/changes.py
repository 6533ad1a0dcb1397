"""The writes of a merge, as compare-and-set changes, and the backup that undoes them.

A merge decides every record from what it read; the records it changes are spooled here, two
lines each (what it read, what it writes), and become ``Change``s only when applied, so memory
does not grow with the change. The same walk writes the merge's backup: the pre-images of the
records it changes or deletes and the post-images of the records it writes (two snapshot
sections, verified like any other), and the ``_id`` of each record it inserts.

Undoing is a write into a live database like the merge itself: each record goes back to its
pre-image only if it still holds the post-image (compare-and-set); a record the application
changed since is left as the application wrote it, and named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from dbsync.core import extjson
from dbsync.core.merge import align, conflict_entry, redecide
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, SectionWriter, encode_record, line_document
from dbsync.edges.store import Change, Document, Redecide, Redecision, encode_document, same_id
from dbsync.errors import InvalidInput

NO_LINE = b"-\n"
"""Stands for "no record" in a spool (a record line always starts with ``{``)."""

INSERTED_SUFFIX = ".inserted"
"""Next to a backup's pre-images (``<collection>.jsonl``): the ``_id`` of every record the merge
inserted, one Extended JSON value a line (not ``.jsonl``, so no snapshot reader takes it)."""

WRITTEN_SUFFIX = ".written"
"""Next to a backup's pre-images: the post-images, every record the run wrote, as a snapshot
section (what an undo expects to find before it puts a pre-image back). Backups made before
dbsync kept them have none: those are undone as they always were, without the comparison."""


def line_value(line: bytes) -> Document:
    """A record line as the document it stores."""
    document = extjson.from_json_value(line_document(line))
    assert isinstance(document, dict)
    return document


def line_record_id(line: bytes) -> Any:
    """``record_id(line_value(line))`` without decoding the rest of the document: a merge
    compares the ids of the records it changes several times, and a document's other fields
    can cost many times its ``_id`` to decode. A line whose top level is escaped, or that has
    no ``_id``, is decoded in full (which names what is wrong)."""
    document = line_document(line)
    if next(iter(document), "").startswith("$") or "_id" not in document:
        return record_id(line_value(line))
    return extjson.from_json_value(document["_id"], "_id")


def record_id(document: Document) -> Any:
    if "_id" not in document:
        shown = orjson.dumps(extjson.to_json_value(document))[:200].decode(errors="replace")
        raise InvalidInput(f"a record has no _id: {shown}")
    return document["_id"]


def inserted_file(preimages: Path) -> Path:
    return preimages.with_name(preimages.name + INSERTED_SUFFIX)


def written_file(preimages: Path) -> Path:
    return preimages.with_name(preimages.name + WRITTEN_SUFFIX)


class ChangeWriter:
    """Spools one collection's changes and writes its backup (pre-images and inserted ids)."""

    def __init__(self, spool: Path, preimages: Path, header: Header) -> None:
        self._spool: BinaryIO = spool.open("wb")
        self._preimage_file: BinaryIO = preimages.open("wb")
        self._postimage_file: BinaryIO = written_file(preimages).open("wb")
        self._inserted: BinaryIO = inserted_file(preimages).open("wb")
        self._preimages = SectionWriter(self._preimage_file, header)
        self._postimages = SectionWriter(self._postimage_file, header)
        self.paths = (spool, preimages, inserted_file(preimages), written_file(preimages))

    def add(self, ours: bytes | None, result: bytes | None) -> None:
        """One record the merge changes: ``ours`` as read (None: absent), ``result`` written."""
        self._spool.write(ours or NO_LINE)
        self._spool.write(result or NO_LINE)
        if ours is not None:
            self._preimages.add(ours)
        if result is not None:
            self._postimages.add(result)
            result_id = line_record_id(result)
            if ours is None or not same_id(line_record_id(ours), result_id):
                self._inserted.write(orjson.dumps(extjson.value_to_json(result_id)) + b"\n")

    def close(self) -> None:
        self._preimages.finish()
        self._postimages.finish()
        for handle in (self._spool, self._preimage_file, self._postimage_file, self._inserted):
            handle.close()

    def backup_bytes(self) -> int:
        """What the backup takes on disk: the pre- and post-images and the inserted ids."""
        return sum(path.stat().st_size for path in self.paths[1:])


def spooled_pairs(spool: Path) -> Iterator[tuple[bytes | None, bytes | None]]:
    """The spooled records in key order: (what the merge read, what it writes), None for no
    record."""
    with spool.open("rb") as handle:
        while ours := handle.readline():
            result = handle.readline()
            yield (None if ours == NO_LINE else ours), (None if result == NO_LINE else result)


def spooled_changes(spool: Path) -> Iterator[Change]:
    """The spooled records as changes: first every record that goes (deleted, or moved to a
    new ``_id`` by a natural key), then every record written, so that a record arriving under
    an ``_id`` another one leaves finds it free."""
    for ours, result in spooled_pairs(spool):
        if ours is None:
            continue
        read_id = line_record_id(ours)
        if result is None or not same_id(read_id, line_record_id(result)):
            yield Change(read_id, encode_document(line_value(ours)), None)
    for ours, result in spooled_pairs(spool):
        if result is None:
            continue
        written = line_value(result)
        expected = None
        if ours is not None and same_id(line_record_id(ours), record_id(written)):
            expected = encode_document(line_value(ours))
        yield Change(record_id(written), expected, written, result)


def redecider(rules: Rules) -> Redecide:
    """How a record the application changed after the merge read it is decided again
    (``core.merge.redecide``), as a ``Redecision`` the store can make: the application's write
    is never overwritten blindly, and a conflict decided here is returned with the decision,
    so that its losing version is reported and kept once the decision holds."""

    def redecide_change(change: Change, current: Document | None) -> Redecision:
        current_line = None if current is None else encode_record(current, rules.key)[1]
        result, conflict = redecide(current_line, change.line if change.document else None, rules)
        entry = None if conflict is None else conflict_entry(conflict, rules.key)
        if result is None:
            return Redecision(None, entry)
        return Redecision(Change(change.id, None, line_value(result), result), entry)

    return redecide_change


def keep_current(change: Change, current: Document | None) -> Redecision:
    """For an undo: a record the application changed since the run wrote it keeps the
    application's version (the store counts and names it)."""
    return Redecision(None)


def overwrite(change: Change, current: Document | None) -> Redecision:
    """For a backup made before post-images were kept (nothing to compare with): the change
    is made whatever the record holds now."""
    return Redecision(change)


Lines = Callable[[], Iterable[bytes]]


def undo_changes(preimages: Lines, postimages: Lines, fields: Sequence[str]) -> Iterator[Change]:
    """The changes that undo a run, from its pre- and post-images (key-sorted sections, each
    read twice): each record back to its pre-image if it still holds its post-image. Records
    that go (the ones the run inserted) come first, so that a record coming back under an
    ``_id`` finds it free."""
    for before, after in _paired(preimages, postimages, fields):
        if after is not None and not _same_record(before, after):
            yield Change(record_id(after), encode_document(after), None)
    for before, after in _paired(preimages, postimages, fields):
        if before is not None:
            same = after is not None and _same_record(before, after)
            expected = encode_document(after) if after is not None and same else None
            yield Change(record_id(before), expected, before)


def _same_record(before: Document | None, after: Document | None) -> bool:
    """Whether a pre-image and a post-image on one key are one record (the same ``_id``)."""
    if before is None or after is None:
        return False
    return bool(same_id(record_id(before), record_id(after)))


def _paired(
    preimages: Lines, postimages: Lines, fields: Sequence[str]
) -> Iterator[tuple[Document | None, Document | None]]:
    for before, after in align([preimages(), postimages()], fields):
        yield (
            None if before is None else line_value(before),
            None if after is None else line_value(after),
        )


def undo_without_postimages(preimages: Iterator[Document], inserted: Path) -> Iterator[Change]:
    """The changes that undo a run whose backup kept no post-images: its inserted records
    deleted, its pre-images put back (``overwrite``)."""
    with inserted.open("rb") as handle:
        for line in handle:
            value = extjson.from_json_value(orjson.loads(line))
            yield Change(value, None, None)
    for document in preimages:
        yield Change(record_id(document), None, document)
