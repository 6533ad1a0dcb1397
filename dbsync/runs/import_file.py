"""``dbsync import``: Extended JSON (mongoexport lines or a JSON array) → a collection.

An import writes into a live database like a merge: the whole file is checked first; then the
documents are sorted by ``_id`` (in bounded memory) and compared with what the collection holds,
what changes is backed up (the records it replaces and the ones it inserts), and the writes are
made by compare-and-set, journaled. A record the application wrote after the import read it is
left as the application wrote it, and named. On the embedded store the import is one
transaction: interrupted, it leaves the collection as it was. On MongoDB its batches are undone
from the backup when it fails or is interrupted; killed, it is left in the journal for
``status`` to name, with ``dbsync restore ID`` to undo it.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from bson import ObjectId

from dbsync.config import Config
from dbsync.core import extjson
from dbsync.core.ordering import SortKey
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, encode_record, line_body, line_sort_key
from dbsync.edges import backups, journal
from dbsync.edges.changes import ChangeWriter, keep_current, line_value, spooled_changes
from dbsync.edges.snapshot_files import sorted_lines
from dbsync.edges.store import ChangeCounts, Document, Store, chunks, id_key
from dbsync.errors import DbsyncError, InvalidInput
from dbsync.progress import NoProgress, Progress

BATCH = 1000


class ImportMode(str, Enum):
    insert = "insert"
    upsert = "upsert"


@dataclass(frozen=True)
class ImportCounts:
    """How many imported documents were to be new, how many were to replace a stored one, and
    how many of those the import left as the application wrote them after it read them."""

    inserted: int = 0
    replaced: int = 0
    kept: int = 0


@dataclass(frozen=True)
class ImportResult:
    collection: str
    documents: int
    mode: ImportMode
    counts: ImportCounts = ImportCounts()
    converted: list[str] = field(default_factory=list)
    """Each value of a deprecated BSON type (``$symbol``...) and what it was stored as."""
    backup: str | None = None
    """The backup that undoes the import (``dbsync restore ID``)."""
    applied: ChangeCounts | None = None

    @property
    def inserted(self) -> int:
        return self.counts.inserted

    @property
    def replaced(self) -> int:
        return self.counts.replaced


def _first_character(path: Path) -> bytes:
    with path.open("rb") as handle:
        while chunk := handle.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[:1]
    return b""


def _decode(value: Any, where: str, notes: list[str] | None = None) -> Document:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(value).__name__}")
    converted: list[str] = []
    try:
        document = extjson.from_extended_json(value, notes=converted)
        extjson.check_storable(document)
    except InvalidInput as error:
        raise InvalidInput(f"{where}: {error.message}") from None
    if notes is not None and converted:
        shown = orjson.dumps(extjson.value_to_json(document.get("_id"))).decode()
        notes.extend(f"{where}: _id {shown}, {line}" for line in converted)
    return document


def read_documents(path: Path, notes: list[str] | None = None) -> Iterator[Document]:
    """The documents of a file: a JSON array, or one document per line (mongoexport's default).

    Canonical, relaxed and legacy Extended JSON are all read; a bad document names its line
    (or its position in the array). ``notes`` receives each deprecated type read as another.
    """
    try:
        first = _first_character(path)
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from None
    if first == b"[":
        yield from _read_array(path, notes)
        return
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise InvalidInput(f"{path}:{number}: not valid JSON ({error})") from None
            yield _decode(value, f"{path}:{number}", notes)


def _read_array(path: Path, notes: list[str] | None) -> Iterator[Document]:
    try:
        values = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"{path}: not a valid JSON array ({error})") from None
    for index, value in enumerate(values):
        yield _decode(value, f"{path}: item {index}", notes)


def _batches(documents: Iterator[Document]) -> Iterator[list[Document]]:
    while batch := list(islice(documents, BATCH)):
        yield batch


def _check_insertable(store: Store, collection: str, path: Path) -> int:
    """Read the whole file once: every document valid, no ``_id`` twice or already stored."""
    seen: set[Hashable] = set()  # id_key: small (an orjson result holds a 4 KiB buffer)
    count = 0
    for batch in _batches(read_documents(path)):
        ids = [doc["_id"] for doc in batch if "_id" in doc]
        for identifier in ids:
            key = id_key(identifier)
            if key in seen:
                shown = orjson.dumps(extjson.value_to_json(identifier)).decode()
                raise InvalidInput(f"{path}: _id {shown} appears twice in the file")
            seen.add(key)
        existing = store.find_by_ids(collection, ids) if ids else []
        if existing:
            shown = orjson.dumps(extjson.value_to_json(existing[0]["_id"])).decode()
            raise InvalidInput(
                f"{collection} already holds {len(existing)} of these documents (_id {shown}...)",
                hint="use --mode upsert to replace them",
            )
        count += len(batch)
    return count


@dataclass
class _Plan:
    """The writes an import makes, spooled, and what they do."""

    spool: Path
    counts: ImportCounts
    backup_bytes: int


def import_file(
    config: Config,
    store: Store,
    path: Path,
    collection: str,
    mode: ImportMode,
    progress: Progress | None = None,
) -> ImportResult:
    """Check the whole file, plan and back up what it changes, then write it (module docstring)."""
    progress = progress or NoProgress()
    if mode is ImportMode.insert:
        total = _check_insertable(store, collection, path)
    else:
        total = sum(1 for _ in read_documents(path))
    converted: list[str] = []
    backup = backups.new_backup_id()
    folder = backups.backup_folder(config.state_dir, backup)
    with tempfile.TemporaryDirectory(prefix="dbsync-import-") as scratch:
        folder.mkdir(parents=True)
        try:
            plan = _plan(store, path, collection, Path(scratch), folder, converted)
            backups.check_free_space(folder.parent, plan.backup_bytes)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        info = backups.BackupInfo(backup, created, [collection], f"import {path}", backups.CHANGES)
        backups.write_meta(folder, info)
        progress.start(f"import {collection}", total)
        applied = _apply(config, store, collection, plan.spool, folder, backup)
        progress.advance(total)
        progress.finish()
    counts = ImportCounts(plan.counts.inserted, plan.counts.replaced, applied.left)
    return ImportResult(collection, total, mode, counts, converted, backup, applied)


BY_ID = ("_id",)


def _plan(
    store: Store, path: Path, collection: str, work: Path, folder: Path, converted: list[str]
) -> _Plan:
    """The file's documents sorted by ``_id`` (the last of a repeated ``_id`` wins, as the
    file's order would have it), each compared with the stored record: what changes is
    spooled, and backed up in ``folder``."""
    header = Header(collection, Rules(BY_ID, None, ()))
    writer = ChangeWriter(
        work / "import.changes", backups.collection_file(folder, collection), header
    )
    inserted = replaced = 0
    try:
        for batch in chunks(_last_of_each_id(_sorted_lines(path, converted))):
            ids = [line_value(line)["_id"] for line in batch]
            stored = {
                id_key(document["_id"]): document for document in store.find_by_ids(collection, ids)
            }
            for line, identity in zip(batch, ids, strict=True):
                current = stored.get(id_key(identity))
                ours = None if current is None else encode_record(current, BY_ID)[1]
                if ours is not None and line_body(ours) == line_body(line):
                    continue  # already so
                writer.add(ours, line)
                inserted += ours is None
                replaced += ours is not None
    finally:
        writer.close()
    return _Plan(work / "import.changes", ImportCounts(inserted, replaced), writer.backup_bytes())


def _sorted_lines(path: Path, converted: list[str]) -> Iterator[tuple[SortKey, bytes]]:
    def keyed() -> Iterator[tuple[SortKey, bytes]]:
        for document in read_documents(path, converted):
            if "_id" not in document:
                document = {"_id": ObjectId(), **document}  # _id first, as MongoDB puts it
            yield encode_record(document, BY_ID)

    return sorted_lines(keyed(), partial(line_sort_key, fields=BY_ID))


def _last_of_each_id(pairs: Iterator[tuple[SortKey, bytes]]) -> Iterator[bytes]:
    """One line per ``_id``: the last one the file gives (the sort keeps the file's order)."""
    previous: tuple[SortKey, bytes] | None = None
    for pair in pairs:
        if previous is not None and previous[0] != pair[0]:
            yield previous[1]
        previous = pair
    if previous is not None:
        yield previous[1]


def _apply(
    config: Config, store: Store, collection: str, spool: Path, folder: Path, backup: str
) -> ChangeCounts:
    """The planned writes, journaled; on any failure (Ctrl-C included) what was written is
    undone from the backup, so that nothing stays half-imported."""
    entry = journal.begin(config.state_dir, journal.IMPORT, [collection], backup=backup)
    try:
        applied = store.apply_changes(collection, spooled_changes(spool), keep_current)
    except BaseException as error:
        if not store.atomic_changes:
            _undo(store, folder, collection, backup, error)
        journal.finish(config.state_dir, entry, [])
        raise
    journal.finish(config.state_dir, entry, [collection])
    return applied


def _undo(store: Store, folder: Path, collection: str, backup: str, error: BaseException) -> None:
    """Put back what the failed import wrote; when even that fails, say what is true and how
    to finish (the journal entry stays, for ``status``)."""
    try:
        backups.restore_collection(store, folder, collection)
    except BaseException as failure:
        raise DbsyncError(
            f"the import into {collection!r} stopped part-way ({type(error).__name__}: {error}) "
            f"and its writes could not be undone ({failure})",
            hint=f"run 'dbsync restore {backup}' to undo what it wrote",
        ) from None
