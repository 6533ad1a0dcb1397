"""Snapshot files on disk: written atomically, read and verified as streams, sorted externally.

The format itself (``dbsync.core.snapshot``) is pure, over bytes and lines; this module opens
the files, reads their lines with a bounded length and spills sorted chunks to temporary files.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import operator
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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
    read_lines,
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


def sorted_lines(
    keyed_lines: Iterable[tuple[SortKey, bytes]],
    line_key: Callable[[bytes], SortKey],
    *,
    chunk_size: int = 100_000,
) -> Iterator[tuple[SortKey, bytes]]:
    """Sort (key, line) pairs by key, spilling sorted chunks to temporary files past ``chunk_size``.

    Memory stays bounded by one chunk whatever the collection's size; the chunks are merged
    back with ``line_key`` recomputing each key from its line.
    """
    chunk: list[tuple[SortKey, bytes]] = []
    spilled: list[IO[bytes]] = []
    try:
        with _cyclic_gc_paused():  # no yield inside: the pause ends before anything else runs
            for pair in keyed_lines:
                chunk.append(pair)
                if len(chunk) >= chunk_size:
                    spilled.append(_spill(chunk))
                    chunk = []
        chunk.sort(key=_first)
        if not spilled:
            yield from chunk
            return
        spilled.append(_spill(chunk))
        streams = [((line_key(line), line) for line in handle) for handle in spilled]
        yield from heapq.merge(*streams, key=_first)
    finally:
        for handle in spilled:
            handle.close()


_first = operator.itemgetter(0)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a chunk is built.

    A chunk is ~100,000 new (key, line) tuples: the collector would traverse them again and
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
    handle = tempfile.TemporaryFile()
    handle.writelines(line for _, line in chunk)
    handle.seek(0)
    return handle


# ---------------------------------------------------------------- reading and verifying


def scan(path: Path, *, deep: bool, on_problem: Callable[[Problem], None]) -> Iterator[Section]:
    """Stream the sections of a snapshot file, reporting every problem to ``on_problem``.

    Used strictly (``on_problem`` raises) by merge and import, and leniently (it collects) by
    ``verify``, so both read files the same way.
    """
    try:
        handle = path.open("rb", buffering=READ_BUFFER)
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from None
    with handle:
        yield from check_sections(str(path), read_lines(handle), deep=deep, on_problem=on_problem)


def _raise(problem: Problem) -> None:
    raise SnapshotError(problem.path, problem.line, problem.message)


def read_sections(path: Path, *, deep: bool = False) -> Iterator[Section]:
    """Stream the sections of a file, raising ``SnapshotError`` at the first problem."""
    return scan(path, deep=deep, on_problem=_raise)


@dataclass
class VerifyResult:
    problems: list[Problem]
    sections: list[tuple[str, int]]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_file(path: Path, *, limit: int = 1000) -> VerifyResult:
    """Every problem of a file (format, hashes, types, canonical form, order, trailer)."""
    problems: list[Problem] = []

    def collect(problem: Problem) -> None:
        if len(problems) < limit:
            problems.append(problem)

    sections = []
    for section in scan(path, deep=True, on_problem=collect):
        count = sum(1 for _ in section.records)
        sections.append((section.header.collection, count))
    return VerifyResult(problems, sections)


def snapshot_files(path: Path) -> list[Path]:
    """The snapshot files under a path: the file itself, or a directory's ``*.jsonl``, sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == SUFFIX and p.is_file())
    if path.exists():
        return [path]
    raise InvalidInput(f"{path} does not exist", hint="give a snapshot file or directory")
