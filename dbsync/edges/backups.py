"""Backups of collections before a merge changes them, and restoring them.

A backup is a folder ``database_sync/backups/<id>/`` holding one snapshot file per collection
(the same verified format as ``database_backup/``) and ``backup.json`` describing it. The id
sorts by creation time. A ``full`` backup holds whole collections; a merge's backup is
``changes``: the pre-images of the records the merge changed or deleted, the post-images of the
records it wrote (``<collection>.jsonl.written``) and the ``_id`` of each record it inserted
(``<collection>.jsonl.inserted``), which is what undoing it needs, at the cost of the change.

Restoring a ``changes`` backup writes into a live database as a merge does: a record goes back
only if it still holds what the run wrote (compare-and-set); one the application changed since
keeps the application's version, and the restore names it. The restore's own backup is the
same backup the other way round, so a restore is undone the same way.
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
from dbsync.edges.changes import (
    inserted_file,
    keep_current,
    overwrite,
    undo_changes,
    undo_without_postimages,
    written_file,
)
from dbsync.edges.files import write_bytes_atomically
from dbsync.edges.parts import collection_files, file_lines
from dbsync.edges.store import ChangeCounts, Document, Store
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


def restore_collections(
    store: Store, folder: Path, collections: list[str]
) -> dict[str, ChangeCounts]:
    """Put the backed-up collections back (a full backup: every document; a merge's: each
    record the merge changed back to its pre-image, unless the application changed it since);
    what was done, per collection."""
    return {collection: restore_collection(store, folder, collection) for collection in collections}


def restore_collection(store: Store, folder: Path, collection: str) -> ChangeCounts:
    """One collection, in one transaction where the store has them (per batch on MongoDB)."""
    files = collection_files(folder)[collection]
    preimages = files.files[0][0]
    written = written_file(preimages)
    if written.is_file():
        changes = undo_changes(
            lambda: files.lines(deep=True),
            lambda: file_lines(written, collection, deep=True),
            files.rules.key,
        )
        return store.apply_changes(collection, changes, keep_current)
    documents = backup_documents(folder, collection)
    inserted = inserted_file(preimages)
    if not inserted.is_file():
        return ChangeCounts(written=store.replace_collection(collection, documents))
    return store.apply_changes(collection, undo_without_postimages(documents, inserted), overwrite)


def reversible_by_comparison(folder: Path, collections: list[str]) -> bool:
    """Whether every collection of a backup kept its post-images (made by this dbsync)."""
    found = collection_files(folder)
    return all(
        name in found and written_file(found[name].files[0][0]).is_file() for name in collections
    )


def write_reversed(source: Path, target: Path, collections: list[str]) -> None:
    """A ``changes`` backup the other way round (pre-images and post-images swapped): the
    backup of restoring ``source``, which undoes the restore as ``source`` undoes its run."""
    target.mkdir(parents=True, exist_ok=True)
    found = collection_files(source)
    for name in collections:
        preimages = found[name].files[0][0]
        reversed_pre = collection_file(target, name)
        shutil.copyfile(written_file(preimages), reversed_pre)
        shutil.copyfile(preimages, written_file(reversed_pre))


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
