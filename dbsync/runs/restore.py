"""``dbsync backups`` and ``dbsync restore ID``: list backups, put one back (itself reversible)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dbsync.config import Config
from dbsync.core.snapshot import Header
from dbsync.edges import backups, journal
from dbsync.edges.snapshot_files import write_snapshot
from dbsync.edges.store import ChangeCounts, Store
from dbsync.errors import UsageError
from dbsync.runs.export import export


@dataclass(frozen=True)
class RestoreResult:
    restored: list[str]
    backup: str
    safety_backup: str
    records: dict[str, int]
    kept: dict[str, ChangeCounts] = field(default_factory=dict)
    """Per collection, what the restore did: records put back, and the ones it left because
    the application changed them after the backed-up run wrote them."""


def restore_backup(
    config: Config, store: Store, backup_id: str, collections: Sequence[str] | None = None
) -> RestoreResult:
    """Back up what the restore changes, then put the chosen backup's collections back.

    A merge's backup is put back record by record, by compare-and-set (its own backup is the
    same one reversed); a full backup replaces the collections, after a full backup of them.
    """
    info = backups.find_backup(config.state_dir, backup_id)
    chosen = list(collections or info.collections)
    missing = [name for name in chosen if name not in info.collections]
    if missing:
        raise UsageError(
            f"backup {backup_id} holds no collection {', '.join(missing)}",
            hint=f"it holds: {', '.join(info.collections)}",
        )
    folder = backups.backup_folder(config.state_dir, info.id)
    for name in chosen:  # read every file once before writing anything
        for _ in backups.backup_documents(folder, name):
            pass
        backups.check_inserted_ids(folder, name)
    if info.kind == backups.CHANGES and backups.reversible_by_comparison(folder, chosen):
        safety = reversed_backup(config, folder, chosen, f"before restoring {info.id}")
    else:
        safety = take_backup(config, store, chosen, f"before restoring {info.id}")
    entry = journal.begin(config.state_dir, journal.RESTORE, chosen, backup=info.id)
    done = backups.restore_collections(store, folder, chosen)
    journal.finish(config.state_dir, entry, chosen)
    records = {name: store.count(name) for name in chosen}
    return RestoreResult(chosen, info.id, safety, records, done)


def reversed_backup(config: Config, source: Path, collections: Sequence[str], reason: str) -> str:
    """The backup of restoring a merge's backup: that backup reversed; returns its id."""
    backup_id = backups.new_backup_id()
    folder = backups.backup_folder(config.state_dir, backup_id)
    backups.write_reversed(source, folder, list(collections))
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info = backups.BackupInfo(backup_id, created, list(collections), reason, backups.CHANGES)
    backups.write_meta(folder, info)
    return backup_id


def take_backup(config: Config, store: Store, collections: Sequence[str], reason: str) -> str:
    """A backup of the named collections as they are now; returns its id."""
    backup_id = backups.new_backup_id()
    folder = backups.backup_folder(config.state_dir, backup_id)
    existing = set(store.collection_names())
    present = [name for name in collections if name in existing]
    backups.check_free_space(folder.parent, sum(store.size_bytes(name) for name in present))
    export(config, store, collections=present, target_dir=folder, key_by_id=True)
    for name in collections:
        if name not in existing:  # an absent collection is backed up as an empty one
            header = Header(name, config.rules(name))
            write_snapshot(backups.collection_file(folder, name), header, [])
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info = backups.BackupInfo(backup_id, created, list(collections), reason)
    backups.write_meta(folder, info)
    return backup_id
