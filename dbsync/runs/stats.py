"""``dbsync stats``: per collection, documents, size, how the snapshot compares, last runs.

The snapshot state compares three digests: the database's (as an export would write it), the
snapshot file's, and the one this asset last synced (exported or merged):

* ``in sync``: the database and the snapshot hold the same records;
* ``local changes``: the snapshot is what this asset last synced, the database has moved on
  (``dbsync export`` or a push sends them);
* ``unmerged remote changes``: the snapshot changed since this asset last synced it (a pull
  whose merge has not run: ``dbsync merge`` takes them in);
* ``no snapshot`` and ``duplicate keys`` (the database cannot be exported as it is).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dbsync.config import Config
from dbsync.edges.parts import CollectionFiles, collection_files
from dbsync.edges.state import CollectionState, reading_state
from dbsync.edges.store import Store
from dbsync.edges.synced import load_synced
from dbsync.errors import InvalidInput
from dbsync.runs.export import current_summary

IN_SYNC = "in sync"
LOCAL_CHANGES = "local changes"
UNMERGED = "unmerged remote changes"
NO_SNAPSHOT = "no snapshot"
DUPLICATE_KEYS = "duplicate keys"


@dataclass(frozen=True)
class CollectionStats:
    count: int
    size_bytes: int
    snapshot_records: int | None
    snapshot: str
    last_export: dict[str, Any] | None
    last_merge: dict[str, Any] | None


def snapshot_state(
    config: Config, store: Store, files: CollectionFiles | None, name: str, synced: str | None
) -> str:
    on_disk = files.digest() if files is not None else None
    if files is None or on_disk is None:
        return NO_SNAPSHOT
    try:
        current = current_summary(store, name, config.rules(name), files.count).digest
    except InvalidInput:
        return DUPLICATE_KEYS
    if current == on_disk:
        return IN_SYNC
    return LOCAL_CHANGES if on_disk == synced else UNMERGED


def _last(rows: list[CollectionState], name: str, operation: str) -> dict[str, Any] | None:
    for row in rows:
        if row.collection == name and row.operation == operation and row.last_success:
            return {
                "time": row.last_success,
                "records": row.last_records,
                "duration_ms": row.last_duration_ms,
            }
    return None


def collection_stats(config: Config, store: Store) -> dict[str, Any]:
    """The ``stats --json`` document."""
    synced = load_synced(config.state_dir)
    digests = synced.digests if synced else {}
    with reading_state(config.state_dir) as state:
        rows = state.collection_states() if state is not None else []
    on_disk = collection_files(config.snapshot_dir)
    names = set(store.collection_names()) | set(on_disk)
    collections = {}
    for name in sorted(names):
        if config.excluded(name):
            continue
        files = on_disk.get(name)
        stats = CollectionStats(
            store.count(name),
            store.size_bytes(name),
            files.records() if files is not None else None,
            snapshot_state(config, store, files, name, digests.get(name)),
            _last(rows, name, "export"),
            _last(rows, name, "merge"),
        )
        collections[name] = asdict(stats)
    return {"database": config.database, "collections": collections}
