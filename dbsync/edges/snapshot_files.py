"""Snapshot files on disk: written atomically, read and verified as streams, sorted externally.

The format itself (``dbsync.core.snapshot``) is pure, over bytes and lines; this module opens
the files, reads their lines with a bounded length and spills sorted chunks to temporary files.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import io
import operator
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from dbsync.core import snapshot as snapshot_format
from dbsync.core.ordering import SortKey
from dbsync.core.snapshot import (
    SUFFIX,
    Header,
    Problem,
    Section,
    SectionSummary,
    SnapshotError,
    check_sections,
    last_trailer,
    parse_header,
    write_section,
)
from dbsync.edges.files import atomic_writer
from dbsync.errors import InvalidInput

READ_BUFFER = 1 << 20  # readline from an 8 KiB buffer took twice as long for 560-byte lines


# ---------------------------------------------------------------- writing and quick looks


def write_snapshot(path: Path, header: Header, lines: Iterable[bytes]) -> SectionSummary:
    """Write a one-collection snapshot file atomically."""
    with atomic_writer(path) as handle:
        return write_section(handle, header, lines)


def _read_trailer(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - 4096))
            tail = handle.read()
    except OSError:
        return None
    return last_trailer(tail)


def read_trailer_digest(path: Path) -> str | None:
    """The digest a snapshot file's last trailer states, or None (no file, no trailer).

    A quick look, not a check: ``verify`` is what proves the file matches its trailer.
    """
    trailer = _read_trailer(path)
    return str(trailer["digest"]) if trailer else None


def read_header(path: Path) -> Header | None:
    """The header on a file's first line, or None (no file, not a snapshot). A quick look."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(64 * 1024)
    except OSError:
        return None
    header = parse_header(first)
    return header if isinstance(header, Header) else None


def read_trailer_count(path: Path) -> int | None:
    trailer = _read_trailer(path)
    return int(trailer["count"]) if trailer else None


# ---------------------------------------------------------------- sorting with bounded memory


SORT_CHUNK_BYTES = 8 << 20
"""The memory a sort holds before it spills a sorted chunk to disk: its lines plus an estimate
of their keys (``_pair_bytes``): ~8,000 PNL records, whatever the collection's size."""
SORT_FAN_IN = 64
"""Spilled chunks merged at once: past it, the oldest are merged into one spill first."""
_PAIR_BYTES = 120  # the pair's tuple and the line's bytes object
_KEY_FIELD_BYTES = 160  # one key field's sort value: a small tuple, its number or string
_SPILL_BUFFER = 64 * 1024


def sorted_lines(
    keyed_lines: Iterable[tuple[SortKey, bytes]],
    line_key: Callable[[bytes], SortKey],
    *,
    chunk_size: int = 100_000,
) -> Iterator[tuple[SortKey, bytes]]:
    """Sort (key, line) pairs by key, spilling sorted chunks to temporary files past
    ``SORT_CHUNK_BYTES`` (or ``chunk_size`` records).

    Memory stays bounded by one chunk whatever the collection's size; the chunks are merged
    back (``SORT_FAN_IN`` at a time) with ``line_key`` recomputing each key from its line. The
    order is the in-memory sort's: stable, equal keys in the order they came.
    """
    limit = SORT_CHUNK_BYTES
    chunk: list[tuple[SortKey, bytes]] = []
    spilled: list[IO[bytes]] = []
    held = 0
    try:
        with _cyclic_gc_paused():  # no yield inside: the pause ends before anything else runs
            for pair in keyed_lines:
                chunk.append(pair)
                held += _pair_bytes(pair)
                if held >= limit or len(chunk) >= chunk_size:
                    spilled.append(_spill(chunk))
                    chunk, held = [], 0
                    if len(spilled) >= SORT_FAN_IN:
                        spilled[:] = [_spill_merged(spilled, line_key)]
        chunk.sort(key=_first)
        if not spilled:
            yield from chunk
            return
        spilled.append(_spill(chunk))
        chunk = []
        yield from heapq.merge(*_spill_streams(spilled, line_key), key=_first)
    finally:
        for handle in spilled:
            handle.close()


_first = operator.itemgetter(0)


def _pair_bytes(pair: tuple[SortKey, bytes]) -> int:
    """About the memory a (key, line) pair holds."""
    return _PAIR_BYTES + len(pair[1]) + _KEY_FIELD_BYTES * len(pair[0])


def _spill_streams(
    spilled: Sequence[IO[bytes]], line_key: Callable[[bytes], SortKey]
) -> list[Iterator[tuple[SortKey, bytes]]]:
    return [((line_key(line), line) for line in handle) for handle in spilled]


def _spill_merged(spilled: list[IO[bytes]], line_key: Callable[[bytes], SortKey]) -> IO[bytes]:
    """The spilled chunks merged into one (in their order, so the merge stays stable)."""
    handle = tempfile.TemporaryFile(buffering=_SPILL_BUFFER)
    try:
        merged = heapq.merge(*_spill_streams(spilled, line_key), key=_first)
        handle.writelines(line for _, line in merged)
    except BaseException:
        handle.close()
        raise
    for old in spilled:
        old.close()
    handle.seek(0)
    return handle


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a chunk is built.

    A chunk is thousands of new (key, line) tuples: the collector would traverse them again and
    again and find nothing (they hold no cycles). Measured on 100k PNL records: export 1.77 s
    with it, 1.19 s without.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _spill(chunk: list[tuple[SortKey, bytes]]) -> IO[bytes]:
    chunk.sort(key=_first)
    handle = tempfile.TemporaryFile(buffering=_SPILL_BUFFER)
    handle.writelines(line for _, line in chunk)
    handle.seek(0)
    return handle


# ---------------------------------------------------------------- reading and verifying


READ_BATCH_BYTES = 1 << 20


def read_line_batches(
    handle: BinaryIO, size: int | None = None, seen: Callable[[bytes], object] | None = None
) -> Iterator[list[bytes]]:
    """The lines of an open file from where it stands, in lists of about ``size`` bytes
    (``READ_BATCH_BYTES``), split in C: a reader that checks many lines at once
    (``snapshot.check_sections``) pays no Python step per line. A line longer than
    ``MAX_LINE_BYTES`` comes cut to ``MAX_LINE_BYTES + 1`` bytes (without its newline: the
    checks report it as too long) and the rest of it is skipped, unread into memory.
    ``seen``, if given, is called with every chunk read (a digest of the file, say; the rest
    of a line too long is not given to it)."""
    size = size or READ_BATCH_BYTES
    limit = snapshot_format.MAX_LINE_BYTES
    pending: list[bytes] = []  # the start of a line longer than what was read so far
    held = 0
    while chunk := handle.read(size):
        if seen is not None:
            seen(chunk)
        end = chunk.rfind(b"\n") + 1
        if end == 0:
            pending.append(chunk)
            held += len(chunk)
            if held > limit:  # reported as too long by the caller
                yield [b"".join(pending)[: limit + 1]]
                pending, held = [], 0
                while (rest := handle.readline(limit)) and not rest.endswith(b"\n"):
                    pass
            continue
        batch = _split_lines(chunk[:end])
        if end > limit + 1:  # a line in it may be too long (never at the usual sizes)
            batch = [line[: limit + 1] for line in batch]
        if pending:
            batch[0] = b"".join([*pending, batch[0]])[: limit + 1]
            pending, held = [], 0
        yield batch
        if end < len(chunk):
            pending, held = [chunk[end:]], len(chunk) - end
    if pending:
        yield [b"".join(pending)[: limit + 1]]


def _split_lines(data: bytes) -> list[bytes]:
    """The lines, each keeping its newline (``bytes.splitlines`` would also cut at a CR)."""
    return io.BytesIO(data).readlines()


def scan(
    path: Path,
    *,
    deep: bool,
    on_problem: Callable[[Problem], None],
    seen: Callable[[bytes], object] | None = None,
    hashes: bool = True,
) -> Iterator[Section]:
    """Stream the sections of a snapshot file, reporting every problem to ``on_problem``
    (``seen``: as ``read_line_batches``; ``hashes``: as ``check_sections``).

    Used strictly (``on_problem`` raises) by merge and import, and leniently (it collects) by
    ``verify``, so both read files the same way.
    """
    try:
        handle = path.open("rb", buffering=READ_BUFFER)
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from None
    with handle:
        batches = read_line_batches(handle, seen=seen)
        yield from check_sections(
            str(path), batches, deep=deep, on_problem=on_problem, hashes=hashes
        )


def _raise(problem: Problem) -> None:
    raise SnapshotError(problem.path, problem.line, problem.message)


def read_sections(
    path: Path,
    *,
    deep: bool = False,
    seen: Callable[[bytes], object] | None = None,
    hashes: bool = True,
) -> Iterator[Section]:
    """Stream the sections of a file, raising ``SnapshotError`` at the first problem
    (``seen``: as ``read_line_batches``; ``hashes``: as ``check_sections``)."""
    return scan(path, deep=deep, on_problem=_raise, seen=seen, hashes=hashes)


@dataclass
class VerifyResult:
    problems: list[Problem]
    sections: list[tuple[str, int]]
    headers: list[Header] = field(default_factory=list)
    """The header of each section, in file order (read once, with the records)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_file(path: Path, *, limit: int = 1000) -> VerifyResult:
    """Every problem of a file (format, hashes, types, canonical form, order, trailer)."""
    problems: list[Problem] = []

    def collect(problem: Problem) -> None:
        if len(problems) < limit:
            problems.append(problem)

    sections, headers = [], []
    for section in scan(path, deep=True, on_problem=collect):
        count = sum(1 for _ in section.records)
        sections.append((section.header.collection, count))
        headers.append(section.header)
    return VerifyResult(problems, sections, headers)


def snapshot_files(path: Path) -> list[Path]:
    """The snapshot files under a path: the file itself, or a directory's ``*.jsonl``, sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == SUFFIX and p.is_file())
    if path.exists():
        return [path]
    raise InvalidInput(f"{path} does not exist", hint="give a snapshot file or directory")
