"""The only database access in dbsync: MongoDB through pymongo, and the embedded store.

Everything else talks to a ``Store``. Documents cross this boundary as pymongo decodes them
(``dict`` in field order; Int32 as ``int``, Int64 as ``bson.Int64``, binary subtype 0 as
``bytes``...), never as Extended JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Document = dict[str, Any]


@dataclass(frozen=True)
class WriteCounts:
    """What ``Store.apply`` wrote: documents inserted or replaced, and documents deleted."""

    upserted: int
    deleted: int


class Store(Protocol):
    """A database holding named collections of documents, addressed by ``_id``."""

    def collection_names(self) -> list[str]:
        """Names of the collections that exist, sorted; system collections left out."""
        ...

    def count(self, collection: str) -> int: ...

    def size_bytes(self, collection: str) -> int:
        """Approximate data size of the collection in bytes (BSON sizes)."""
        ...

    def iter_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[Document]:
        """Every document of the collection, streamed in batches (sorted by ``_id`` if cheap)."""
        ...

    def find_by_ids(self, collection: str, ids: Sequence[Any]) -> list[Document]:
        """The documents whose ``_id`` is in ``ids`` (missing ones are left out)."""
        ...

    def apply(
        self, collection: str, upserts: Sequence[Document], delete_ids: Sequence[Any]
    ) -> WriteCounts:
        """Delete ``delete_ids``, then insert or replace each of ``upserts`` by its ``_id``.

        Bulk writes; one transaction where the server supports it. Raises on any failure,
        leaving recovery (restoring the backup) to the caller.
        """
        ...

    def insert_many(self, collection: str, documents: Iterable[Document]) -> int:
        """Insert documents; a duplicate ``_id`` raises ``InvalidInput`` naming it."""
        ...

    def replace_collection(self, collection: str, documents: Iterable[Document]) -> int:
        """Make the collection hold exactly ``documents`` (used to restore backups)."""
        ...

    def ping(self) -> None:
        """Raise ``DatabaseUnreachable`` if the database cannot be reached."""
        ...

    def close(self) -> None: ...
