"""``dbsync dump``: a collection as canonical Extended JSON, one document per line, by key."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import orjson

from dbsync.config import Config
from dbsync.core import extjson
from dbsync.core.ordering import SortKey, sort_key
from dbsync.edges.snapshot_files import sorted_lines
from dbsync.edges.store import Store
from dbsync.errors import UsageError


def _canonical_key(line: bytes, fields: tuple[str, ...]) -> SortKey:
    return sort_key(orjson.loads(line), fields)


def dump_lines(config: Config, store: Store, collection: str) -> Iterator[bytes]:
    """Canonical lines (newline included) sorted by the collection's key."""
    if collection not in store.collection_names():
        raise UsageError(
            f"unknown collection: {collection}",
            hint=f"the database has: {', '.join(store.collection_names()) or '(none)'}",
        )
    fields = config.rules(collection).key

    def keyed() -> Iterator[tuple[SortKey, bytes]]:
        for document in store.iter_documents(collection):
            canonical = extjson.encode_canonical(document)
            yield sort_key(orjson.loads(canonical), fields), canonical + b"\n"

    for _, line in sorted_lines(keyed(), partial(_canonical_key, fields=fields)):
        yield line
