"""``dbsync import``: Extended JSON (mongoexport lines or a JSON array) → a collection."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from bson import ObjectId

from dbsync.core import extjson
from dbsync.edges.store import Document, Store, id_key
from dbsync.errors import InvalidInput
from dbsync.progress import NoProgress, Progress

BATCH = 1000


class ImportMode(str, Enum):
    insert = "insert"
    upsert = "upsert"


@dataclass(frozen=True)
class ImportCounts:
    """How many imported documents were new, and how many replaced a stored one."""

    inserted: int = 0
    replaced: int = 0


@dataclass(frozen=True)
class ImportResult:
    collection: str
    documents: int
    mode: ImportMode
    counts: ImportCounts = ImportCounts()
    converted: list[str] = field(default_factory=list)
    """Each value of a deprecated BSON type (``$symbol``...) and what it was stored as."""

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


def import_file(
    store: Store,
    path: Path,
    collection: str,
    mode: ImportMode,
    progress: Progress | None = None,
) -> ImportResult:
    """Validate the whole file first, then write it in batches (by key: linear in the file)."""
    progress = progress or NoProgress()
    if mode is ImportMode.insert:
        total = _check_insertable(store, collection, path)
    else:
        total = sum(1 for _ in read_documents(path))
    progress.start(f"import {collection}", total)
    inserted = 0
    converted: list[str] = []
    for batch in _batches(read_documents(path, converted)):
        batch = [doc if "_id" in doc else {"_id": ObjectId(), **doc} for doc in batch]  # _id first
        if mode is ImportMode.insert:
            inserted += store.insert_many(collection, batch)
        else:
            inserted += store.apply(collection, batch, []).inserted
        progress.advance(len(batch))
    progress.finish()
    counts = ImportCounts(inserted, total - inserted)
    return ImportResult(collection, total, mode, counts, converted)
