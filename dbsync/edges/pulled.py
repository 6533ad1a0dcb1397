"""What a snapshot brought beside the synced copy, at the cost of what it changed.

The merge of the snapshot folder after a pull (``runs.merge``) decides only the keys where the
pulled snapshot differs from what this asset last synced (its three-way base) and the keys the
database changed since (``change_index.changed_rows``). This module finds the first ones, file
by file (one, or each part of a split collection), as ``PulledRow``s:

* a file byte-identical to the synced copy's brought nothing;
* a file that is exactly what git's merge driver wrote in this clone, from an "ours" exactly
  the synced copy's file, brought the rows the driver recorded (``DriverRecord``): the driver
  checked deeply every line it did not take unchanged from ours, so the file is not read;
* any other file is walked once beside the synced copy's: every line's shape and hash and the
  trailer checked, and a line not byte-identical to the synced copy's on its key checked as
  ``verify`` checks it (types, canonical form, part, its order next to the lines around it:
  ``ChangedLineChecks``). The synced copy is this asset's own (written from what it exported,
  or from a snapshot a merge checked): a line equal to it is not read again.

Anything this cannot vouch for (another layout, a second section, a problem in a line, more
rows than ``ROWS_HELD``) raises ``CannotVouch``: the merge then reads the snapshot in full,
which names a problem as it always did. Files are told identical by git's blob id (the SHA-1
git names their contents by, which its collision detection guards; the line hashes of the
format are not meant to resist a forged file). Before a file vouched for is kept as the synced
copy, a quicker digest of its bytes (``content_check``) tells whether it changed while the
merge ran: the file was already vouched for, so that test is for an accident, not a forgery.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import itertools
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
import xxhash

from dbsync.core.merge import align
from dbsync.core.ordering import SortKey
from dbsync.core.snapshot import ChangedLineChecks, Header, line_sort_key
from dbsync.edges.files import atomic_writer
from dbsync.edges.parts import CollectionFiles, check_file_name
from dbsync.edges.snapshot_files import read_line_batches, read_sections
from dbsync.errors import InvalidInput

PulledRow = tuple[SortKey, bytes | None, bytes | None]
"""A key where the pulled snapshot differs from the synced copy: (key, the synced copy's line,
the pulled line); None where a side has no record on the key."""

ROWS_HELD = 100_000
"""Rows held in memory at most: past it, the merge reads the snapshot in full (streamed)."""

RECORDS = "driver-merges"
"""Under ``database_sync/``: what the merge driver wrote, kept until the database is merged."""
RECORDS_KEPT = 32
FORMAT = "dbsync-driver-merge"
_NONE = b"-\n"
_CHUNK = 1 << 20


class CannotVouch(Exception):
    """The pulled snapshot cannot be compared with the synced copy at the cost of the change."""


def file_digest(path: Path) -> str:
    """git's blob id of a file's bytes: the SHA-1 of ``blob <size>\0`` and the bytes (hex)."""
    return _hashed(path, _blob_hasher(path.stat().st_size))[0]


def _blob_hasher(size: int) -> Any:
    return hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)


class BlobDigest:
    """git's blob id of a file taken from the chunks a reader reads of it (``update``, as
    ``read_line_batches``' ``seen``), so that a file read anyway is not read twice: ``finish``
    reads the file again only if the reader did not read all of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._size = path.stat().st_size
        self._hasher = _blob_hasher(self._size)
        self._read = 0
        self.hexdigest: str | None = None

    def update(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        self._read += len(chunk)

    def finish(self) -> str:
        """The blob id: call it while the file still holds what was read."""
        if self.hexdigest is None:
            whole = self._read == self._size == self.path.stat().st_size
            self.hexdigest = str(self._hasher.hexdigest()) if whole else file_digest(self.path)
        return self.hexdigest


def content_check(data: bytes) -> str:
    """A quick digest of bytes (xxh3-128) that tells whether a file vouched for changed since:
    a tenth of the SHA-1 of its blob id, and as sure a test for bytes that changed by
    accident."""
    hasher = _check_hasher()
    hasher.update(data)
    return str(hasher.hexdigest())


def _check_hasher() -> Any:
    """What ``content_check`` takes, to be fed a file's chunks as they are read."""
    return xxhash.xxh3_128()


def _hashed(path: Path, *hashers: Any) -> list[str]:
    """The hex digests of the file's bytes by each hasher, read in chunks, once."""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            for hasher in hashers:
                hasher.update(view[:read])
    return [str(hasher.hexdigest()) for hasher in hashers]


def same_files(first: Sequence[Path], second: Sequence[Path]) -> bool:
    """Whether the two lists of files hold the same bytes, file by file (read in chunks, up to
    the first difference)."""
    if len(first) != len(second):
        return False
    for one, other in zip(first, second, strict=True):
        try:
            if one.stat().st_size != other.stat().st_size:
                return False
            with one.open("rb", buffering=0) as left, other.open("rb", buffering=0) as right:
                while chunk := left.read(_CHUNK):
                    if chunk != right.read(_CHUNK):
                        return False
        except OSError:
            return False
    return True


# ---------------------------------------------------------------- the merge driver's record


class DriverRecord:
    """The rows a merge driver run changed in OURS (ours' line, the result's line), spooled as
    it decides them, saved under the digest of the file it wrote (``save``)."""

    def __init__(self) -> None:
        self._rows: IO[bytes] = tempfile.TemporaryFile()
        self.count = 0
        self.usable = True
        """False once the run could not tell every row (``discard``): nothing is saved."""

    def discard(self) -> None:
        self.usable = False

    def add(self, ours: bytes | None, result: bytes | None) -> None:
        self._rows.write(ours or _NONE)
        self._rows.write(result or _NONE)
        self.count += 1

    def save(self, folder: Path, blobs: dict[str, str]) -> None:
        """Saved as ``<blob id of the output>.rows`` (``blobs``: of ``ours`` and ``merged``),
        atomically, if ``usable``; the oldest records beyond ``RECORDS_KEPT`` go (a clone
        whose hooks never merge keeps only those)."""
        if not self.usable:
            return
        meta = {"format": FORMAT, "version": 1, "ours": blobs["ours"], "rows": self.count}
        self._rows.seek(0)
        with atomic_writer(folder / f"{blobs['merged']}.rows") as handle:
            handle.write(orjson.dumps(meta) + b"\n")
            while chunk := self._rows.read(_CHUNK):
                handle.write(chunk)
        _prune(folder)

    def close(self) -> None:
        self._rows.close()


def _prune(folder: Path) -> None:
    records = sorted(folder.glob("*.rows"), key=lambda path: path.stat().st_mtime_ns)
    for old in records[:-RECORDS_KEPT]:
        old.unlink(missing_ok=True)


def recorded_rows(
    folder: Path, pulled_digest: str, synced_digest: str, fields: Sequence[str]
) -> list[PulledRow] | None:
    """The rows of the driver run that wrote a file of ``pulled_digest`` from an ours of
    ``synced_digest``; None when there is no such record, or it cannot be read whole and in
    key order (a record is a shortcut: anything amiss, and the file is walked instead)."""
    path = folder / f"{pulled_digest}.rows"
    try:
        with path.open("rb", buffering=_CHUNK) as handle:
            meta = orjson.loads(handle.readline())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                return None
            if meta.get("version") != 1 or meta.get("ours") != synced_digest:
                return None
            if not isinstance(meta.get("rows"), int) or meta["rows"] > ROWS_HELD:
                return None
            lines = itertools.chain.from_iterable(read_line_batches(handle))
            rows = [_keyed(ours, result, fields) for ours, result in zip(lines, lines, strict=True)]
    except Exception:  # missing, damaged, cut short: not a record to go by
        return None
    in_order = all(a[0] < b[0] for a, b in zip(rows, rows[1:], strict=False))
    return rows if in_order and len(rows) == meta["rows"] else None


def _keyed(ours: bytes, result: bytes, fields: Sequence[str]) -> PulledRow:
    synced = None if ours == _NONE else ours
    pulled = None if result == _NONE else result
    line = pulled if pulled is not None else synced
    if line is None:
        raise CannotVouch("a recorded row has no line")
    return line_sort_key(line, fields), synced, pulled


# ---------------------------------------------------------------- walking a file beside its copy


def walked_rows(pulled: Path, synced: Path, header: Header) -> list[PulledRow]:
    """The rows where ``pulled`` differs from ``synced`` (both files of ``header``'s part),
    every line of ``pulled`` checked as the module docstring says."""
    try:
        check_file_name(pulled, header)
        pulled_sections, synced_sections = read_sections(pulled), read_sections(synced)
        theirs, ours = next(pulled_sections), next(synced_sections)
        if theirs.header != header or ours.header != header:
            raise CannotVouch("the two files hold other sections")
        rows = list(_rows(ours.records, theirs.records, header))
        if next(pulled_sections, None) is not None or next(synced_sections, None) is not None:
            raise CannotVouch("a file holds a second section")
    except CannotVouch:
        raise
    except Exception as error:  # whatever the walk could not read: the full read names it
        raise CannotVouch(str(error)) from None
    return rows


def _rows(synced: Iterable[bytes], pulled: Iterable[bytes], header: Header) -> Iterator[PulledRow]:
    fields = header.rules.key
    checks = ChangedLineChecks(header, 1)
    held = 0
    for ours, theirs in align([synced, pulled], fields):
        if ours == theirs:
            assert ours is not None
            if checks.pending:
                _refuse(checks.same_after_changes(ours))
            else:
                checks.last_same = ours
            continue
        if theirs is not None:
            _refuse(checks.changed(0, theirs))
        line = theirs if theirs is not None else ours
        assert line is not None
        held += 1
        if held > ROWS_HELD:
            raise CannotVouch("too many changed records to hold")
        yield line_sort_key(line, fields), ours, theirs


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise CannotVouch(problem)


# ---------------------------------------------------------------- a collection


class Pulled:
    """Where a collection's pulled files differ from its synced copy (``rows``, in key order),
    and the ``content_check`` of each pulled file as it was vouched for (``checks``)."""

    def __init__(self, rows: list[PulledRow], checks: list[str]) -> None:
        self.rows, self.checks = rows, checks


def pulled_rows(pulled: CollectionFiles, synced: CollectionFiles, records: Path | None) -> Pulled:
    """Every row where the collection's pulled files differ from its synced copy, file by file
    as the module docstring says (``records``: the driver's records)."""
    if [h for _, h in pulled.files] != [h for _, h in synced.files]:
        raise CannotVouch("the snapshot and the synced copy are laid out otherwise")
    fields = pulled.rules.key
    found: list[list[PulledRow]] = []
    checks = []
    for (path, header), (copy, _) in zip(pulled.files, synced.files, strict=True):
        digest, check = _hashed(path, _blob_hasher(path.stat().st_size), _check_hasher())
        copy_digest = file_digest(copy)
        checks.append(check)
        if digest == copy_digest:
            continue
        rows = None if records is None else recorded_rows(records, digest, copy_digest, fields)
        found.append(rows if rows is not None else walked_rows(path, copy, header))
    if sum(len(rows) for rows in found) > ROWS_HELD:
        raise CannotVouch("too many changed records to hold")
    if len(found) == 1:
        return Pulled(found[0], checks)
    return Pulled(list(heapq.merge(*found, key=_key)), checks)


class VouchedFile:
    """A one-section file vouched for as it was when its ``content_check`` was ``check``,
    read whole when asked for (``read``), the check made again first: what was checked is what
    is kept, not read line by line again. ``InvalidInput`` if the file changed since."""

    def __init__(self, path: Path, check: str) -> None:
        self.path, self.check = path, check

    def read(self) -> bytes:
        data = self.path.read_bytes()
        if content_check(data) != self.check:
            raise InvalidInput(
                f"{self.path} changed while it was being merged; nothing was recorded"
            )
        return data

    def __iter__(self) -> Iterator[bytes]:
        return self.records(self.read())

    @staticmethod
    def records(data: bytes) -> Iterator[bytes]:
        """The record lines of a one-section file's bytes (its header and trailer left out:
        a writer writes its own)."""
        lines = io.BytesIO(data)
        next(lines)
        previous = next(lines)
        for line in lines:
            yield previous
            previous = line  # the last one is the trailer


def _key(row: PulledRow) -> SortKey:
    return row[0]
