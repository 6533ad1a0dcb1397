"""Safety guards shared by export and merge: one definition of "too many deletes at once".

A wrong database name, an empty database or a wrong snapshot must not wipe every asset: export
and merge refuse to delete more than ``DELETE_GUARD_RECORDS`` records *and* more than
``DELETE_GUARD_SHARE`` of a collection at once unless ``--allow-deletes`` is given.
"""

from __future__ import annotations

from collections.abc import Iterator

from dbsync.core.ordering import SortKey
from dbsync.errors import SafetyRefusal

DELETE_GUARD_RECORDS = 10
DELETE_GUARD_SHARE = 0.20
GUARD_RULE = f"more than {DELETE_GUARD_RECORDS} and more than {DELETE_GUARD_SHARE:.0%}"


class TooManyDeletes(SafetyRefusal):
    """The delete guard refused; ``collection`` lets the history charge it to that collection."""

    def __init__(self, collection: str, message: str, *, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.collection = collection


def deletes_too_many(deleted: int, total: int) -> bool:
    """Whether deleting ``deleted`` of ``total`` records at once needs ``--allow-deletes``."""
    return deleted > DELETE_GUARD_RECORDS and deleted > DELETE_GUARD_SHARE * total


class RemovedKeys:
    """Counts the keys of an old sorted stream that a new sorted stream lacks, as the new keys
    go by (a streaming merge-join: memory stays constant whatever the collection's size)."""

    def __init__(self, old_keys: Iterator[SortKey]) -> None:
        self._old = old_keys
        self._head = next(old_keys, None)
        self.removed = 0

    def see(self, key: SortKey) -> None:
        """The next key of the new stream (keys come in ascending order; repeats are fine)."""
        while self._head is not None and self._head < key:
            self._skip()
        if self._head is not None and self._head == key:
            self._head = next(self._old, None)

    def finish(self) -> int:
        """Every old key left after the new stream ended is removed too."""
        while self._head is not None:
            self._skip()
        return self.removed

    def _skip(self) -> None:
        self.removed += 1
        self._head = next(self._old, None)
