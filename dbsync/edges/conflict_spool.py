"""A merge's conflicts spooled to a temporary file, so that memory does not grow with them.

A conflict entry holds the winning and the losing version whole (``core.merge.conflict_entry``):
kept in a list, a merge where every record conflicts would hold the collection twice over as
parsed JSON. ``SpooledConflicts`` is the ``core.merge.Conflicts`` a merge of the database uses:
each entry is one JSON line of an unnamed temporary file (nothing is left behind, even by a
kill), read back one at a time by whoever streams them: the report files, the losing versions,
``--json``. The file lives as long as the container (the report outlives the merge's work
folder, which is why it is not there).
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

_CHUNK = 1 << 20


class SpooledConflicts:
    """Conflict entries appended to a temporary file, iterated from it as many times as needed."""

    def __init__(self, folder: Path | None = None) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="dbsync-conflicts-", dir=folder)
        self._count = 0
        self._size = 0
        self._closing = weakref.finalize(self, self._file.close)  # closed with its container

    def append(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry) + b"\n"
        self._file.write(line)
        self._count += 1
        self._size += len(line)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The entries appended so far, in order; appending while iterating is allowed (the
        new entries are not part of this iteration): reads never move the write position."""
        self._file.flush()
        for line in _lines(self._file.fileno(), self._size):
            entry: dict[str, Any] = orjson.loads(line)
            yield entry

    def fileno(self) -> int:
        """The spool's file descriptor (its entries, one JSON line each, once flushed)."""
        self._file.flush()
        return self._file.fileno()

    def close(self) -> None:
        self._closing()


def _lines(descriptor: int, size: int) -> Iterator[bytes]:
    """The lines of the first ``size`` bytes of a file, by positioned reads."""
    offset, rest = 0, b""
    while offset < size:
        chunk = os.pread(descriptor, min(_CHUNK, size - offset), offset)
        if not chunk:
            raise OSError(f"the conflicts spool ended at byte {offset} of {size}")
        offset += len(chunk)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest
