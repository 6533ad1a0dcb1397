"""Backups of collections before a merge changes them, and restoring them.

A backup is a folder ``database_sync/backups/<id>/`` holding one snapshot file per collection
(the same verified format as ``database_backup/``) and ``backup.json`` describing it. The id
sorts by creation time. A ``full`` backup holds whole collections (``restore`` takes one before
it writes); a merge's backup is ``changes``: the pre-images of the records the merge changed or
deleted, and ``<collection>.jsonl.inserted``, the ``_id`` of each record it inserted, which is
what undoing it needs, at the cost of the change.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from dbsync.core import extjson
from dbsync.core.snapshot import line_document, snapshot_filename
from dbsync.edges.changes import inserted_file, overwrite, undo_changes
from dbsync.edges.files import write_bytes_atomically
from dbsync.edges.parts import collection_files
from dbsync.edges.store import Document, Store
from dbsync.errors import InvalidInput, SafetyRefusal, UsageError

META = "backup.json"
FULL, CHANGES = "full", "changes"


@dataclass(frozen=True)
class BackupInfo:
    id: str
    created: str
    collections: list[str]
    reason: str
    kind: str = FULL

    @property
    def sort_key(self) -> str:
        return self.id


def new_backup_id(now: datetime.datetime | None = None) -> str:
    """``20261122T054012123Z-1a2b``: sortable, and unique even within one millisecond."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(2)


def backups_dir(state_dir: Path) -> Path:
    return state_dir / "backups"


def backup_folder(state_dir: Path, backup_id: str) -> Path:
    return backups_dir(state_dir) / backup_id


def collection_file(folder: Path, collection: str) -> Path:
    return folder / snapshot_filename(collection)


def write_meta(folder: Path, info: BackupInfo) -> None:
    write_bytes_atomically(folder / META, json.dumps(asdict(info), indent=2).encode() + b"\n")


def list_backups(state_dir: Path) -> list[BackupInfo]:
    """Complete backups, newest first (a folder without ``backup.json`` was never finished)."""
    root = backups_dir(state_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        meta = folder / META
        if meta.is_file():
            found.append(BackupInfo(**json.loads(meta.read_text())))
    return sorted(found, key=lambda info: info.id, reverse=True)


def find_backup(state_dir: Path, backup_id: str) -> BackupInfo:
    for info in list_backups(state_dir):
        if info.id == backup_id:
            return info
    known = ", ".join(info.id for info in list_backups(state_dir)[:5]) or "none yet"
    raise UsageError(f"no backup {backup_id!r}", hint=f"see 'dbsync backups' (newest: {known})")


def backup_documents(folder: Path, collection: str) -> Iterator[Document]:
    """The documents of one collection in a backup, checked against their hashes."""
    files = collection_files(folder).get(collection)
    if files is None:
        raise InvalidInput(f"the backup in {folder} holds no collection {collection}")
    for line in files.lines(deep=True):
        document = extjson.from_json_value(line_document(line))
        assert isinstance(document, dict)
        yield document


def restore_collections(store: Store, folder: Path, collections: list[str]) -> dict[str, int]:
    """Put the backed-up collections back exactly as they were (a full backup: every document;
    a merge's: the pre-images put back and the inserts undone); documents per collection."""
    return {collection: restore_collection(store, folder, collection) for collection in collections}


def restore_collection(store: Store, folder: Path, collection: str) -> int:
    """One collection, in one transaction where the store has them."""
    documents = backup_documents(folder, collection)
    files = collection_files(folder)[collection]
    inserted = inserted_file(files.files[0][0])
    if not inserted.is_file():
        return store.replace_collection(collection, documents)
    store.apply_changes(collection, undo_changes(documents, inserted), overwrite)
    return store.count(collection)


def check_inserted_ids(folder: Path, collection: str) -> None:
    """Refuse a merge backup whose list of inserted ids is damaged, before writing anything."""
    files = collection_files(folder).get(collection)
    inserted = inserted_file(files.files[0][0]) if files else None
    if inserted is None or not inserted.is_file():
        return
    with inserted.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                extjson.from_json_value(orjson.loads(line))
            except (orjson.JSONDecodeError, InvalidInput) as error:
                raise InvalidInput(f"{inserted}:{number}: not an _id ({error})") from None


def check_free_space(folder: Path, needed_bytes: int) -> None:
    """Refuse, before the database is written, when the disk cannot hold twice the backup
    (the backup, and the database growing by as much) and a margin."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed_bytes * 2 + 16 * 1024 * 1024:
        raise SafetyRefusal(
            f"not enough free disk space for a backup in {folder}: "
            f"{free // 2**20} MiB free, about {needed_bytes * 2 // 2**20 + 16} MiB needed",
            hint="free some space or run 'dbsync prune --keep N'; nothing was written",
        )


def remove_unfinished(state_dir: Path) -> None:
    """Remove backup folders that never got their ``backup.json`` (a crash while writing)."""
    root = backups_dir(state_dir)
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.is_dir() and not (folder / META).exists():
            shutil.rmtree(folder, ignore_errors=True)


def folder_size(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())
