"""``dbsync stats``: per collection, documents, size and how the snapshot compares."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dbsync.commands.export import current_summary
from dbsync.config import Config
from dbsync.errors import InvalidInput
from dbsync.snapshot import read_trailer_count, read_trailer_digest, snapshot_filename
from dbsync.store import Store

IN_SYNC = "in sync"
DIFFERS = "differs"
NO_SNAPSHOT = "no snapshot"
DUPLICATE_KEYS = "duplicate keys"


@dataclass(frozen=True)
class CollectionStats:
    count: int
    size_bytes: int
    snapshot_records: int | None
    snapshot: str


def collection_stats(config: Config, store: Store) -> dict[str, Any]:
    """The ``stats --json`` document."""
    collections = {}
    names = sorted(set(store.collection_names()) | set(_snapshot_collections(config)))
    for name in names:
        if config.excluded(name):
            continue
        collections[name] = asdict(_one(config, store, name))
    return {"database": config.database, "collections": collections}


def _snapshot_collections(config: Config) -> list[str]:
    if not config.snapshot_dir.is_dir():
        return []
    return [path.stem for path in config.snapshot_dir.glob("*.jsonl")]


def _one(config: Config, store: Store, name: str) -> CollectionStats:
    path = config.snapshot_dir / snapshot_filename(name)
    on_disk = read_trailer_digest(path)
    count = store.count(name)
    if on_disk is None:
        state = NO_SNAPSHOT
    else:
        try:
            state = (
                IN_SYNC
                if current_summary(store, name, config.rules(name)).digest == on_disk
                else DIFFERS
            )
        except InvalidInput:
            state = DUPLICATE_KEYS
    return CollectionStats(count, store.size_bytes(name), read_trailer_count(path), state)
