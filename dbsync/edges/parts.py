"""Collections as files: one file, or — past 50 MB — parts split by key, so git stays happy.

A collection whose snapshot would pass ``MAX_FILE_BYTES`` is written as ``count`` part files
(``pnl.part-03-of-16.jsonl``), ``count`` a power of two chosen so that a part holds about
``TARGET_PART_BYTES``. A record goes to part ``part_of(key) % count`` — a hash of its key, so
a one-record change touches exactly one part, and every asset splits the same records the same
way. Each part is a complete section (header naming its part, records sorted by key,
trailer), so git's merge driver, diff driver and ``verify`` work on each file alone.

The number of parts is taken from the files on disk and only ever grows (when a part would
pass the limit, it doubles): the layout, shared through git, does not flip back and forth
around a threshold. Reading a collection joins its parts back into one key-sorted stream; if
two layouts meet (a pull brought the other one), the same record can appear twice, and the
conflict rule picks one, as it would between two assets.

Writing a layout (``StagedLayout``, ``PartWriters``) is here too: each record goes to the part
of its key, into files staged to be renamed into place together.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import xxhash

from dbsync.core.merge import Decision, fold_equal_keys
from dbsync.core.ordering import SortKey, part_of
from dbsync.core.rules import Rules
from dbsync.core.snapshot import (
    SUFFIX,
    Header,
    SectionSummary,
    SectionWriter,
    Writable,
    header_filename,
    line_sort_key,
)
from dbsync.edges.files import StagedFiles
from dbsync.edges.snapshot_files import (
    read_header,
    read_sections,
    read_trailer_count,
    read_trailer_digest,
)
from dbsync.errors import InvalidInput

MAX_FILE_BYTES = 50 * 1000 * 1000
"""No snapshot file passes this (PRODUCT.md §3): large files make git slow and hosts refuse."""
TARGET_PART_BYTES = 16 * 1000 * 1000
"""What a part aims at: parts vary around it, far enough below the limit."""


def combined_digest(digests: list[str]) -> str:
    """A collection's digest: its file's, or one over its parts' digests in part order."""
    if len(digests) == 1:
        return digests[0]
    return xxhash.xxh3_128_hexdigest("".join(digests).encode())


def part_count(estimated_bytes: int, current: int) -> int:
    """Parts needed for a collection of about ``estimated_bytes``, never fewer than now."""
    count = max(current, 1)
    while estimated_bytes / count > TARGET_PART_BYTES and count < 1 << 20:
        count *= 2
    if count == 1 and estimated_bytes > MAX_FILE_BYTES:
        count = 2
    return count


@dataclass
class CollectionFiles:
    """The files one collection's records are in, with their headers, in part order."""

    collection: str
    files: list[tuple[Path, Header]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """The number of parts of the current layout (1: one file)."""
        return max((header.part[1] for _, header in self.files if header.part), default=1)

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.files]

    @property
    def rules(self) -> Rules:
        return self.files[0][1].rules

    def digest(self) -> str | None:
        """The collection's digest as its trailers state it (None: a file has no trailer)."""
        digests = []
        for path in self.paths:
            digest = read_trailer_digest(path)
            if digest is None:
                return None
            digests.append(digest)
        return combined_digest(digests)

    def records(self) -> int | None:
        counts = [read_trailer_count(path) for path in self.paths]
        return None if any(c is None for c in counts) else sum(c for c in counts if c)

    def size(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    def complete(self) -> list[str]:
        """What is missing or mixed in the layout (empty: every part is there, once)."""
        problems = []
        parts = [header.part for _, header in self.files]
        if len(self.files) > 1 and None in parts:
            problems.append(f"{self.collection} is both one file and parts: merge, then export")
        counts = {part[1] for part in parts if part}
        if len(counts) > 1:
            problems.append(
                f"{self.collection} has parts of {len(counts)} layouts "
                f"({', '.join(f'of {c}' for c in sorted(counts))}): merge, then export"
            )
        elif counts:
            (count,) = counts
            missing = sorted(set(range(count)) - {part[0] for part in parts if part})
            if missing:
                shown = ", ".join(str(i) for i in missing)
                problems.append(f"{self.collection}: part(s) {shown} of {count} are missing")
        return problems

    def lines(
        self,
        rules: Rules | None = None,
        *,
        deep: bool = False,
        verified: bool = False,
        folded: Callable[[Decision], None] | None = None,
    ) -> Iterator[bytes]:
        """Every record line of the collection in key order, each key once; ``verified``:
        each file checked as it is read (``verified_file_lines``). A key found in two files
        (two layouts met) is decided by the conflict rule (``core.merge.fold_equal_keys``),
        and ``folded`` told each decision, to report its losing version."""
        read = verified_file_lines if verified else partial(file_lines, deep=deep)
        if len(self.files) == 1:
            yield from read(self.files[0][0], self.collection)
            return
        rules = rules or self.rules
        streams = [
            ((line_sort_key(line, rules.key), line) for line in read(p, self.collection))
            for p in self.paths
        ]
        yield from fold_equal_keys(heapq.merge(*streams, key=_first), rules, folded)


def _first(pair: tuple[SortKey, bytes]) -> SortKey:
    return pair[0]


def file_lines(path: Path, collection: str, *, deep: bool = False) -> Iterator[bytes]:
    """The record lines of ``collection``'s section(s) in one file."""
    for section in read_sections(path, deep=deep):
        if section.header.collection == collection:
            yield from section.records


def verified_file_lines(path: Path, collection: str) -> Iterator[bytes]:
    """The record lines of a snapshot directory's file, verified deeply as they are read
    (the whole file, to its end), every section in it named as the file is: what ``verify``
    of the file checks, raised at the first problem."""
    for section in read_sections(path, deep=True):
        check_file_name(path, section.header)
        if section.header.collection == collection:
            yield from section.records


def check_file_name(path: Path, header: Header) -> None:
    """In a snapshot directory a file must be named after the collection its header states:
    another collection's snapshot copied or renamed over this one would otherwise be merged
    into the wrong collection, or twice."""
    collection = header.collection
    expected = header_filename(header)
    if path.name != expected:
        raise InvalidInput(
            f"{path}: the file holds collection {collection!r} but is named {path.name} "
            f"(a file of collection {collection!r} is named {expected}): it was renamed or copied",
            hint=f"restore {path.name} from git (git checkout -- {path}) or remove it; "
            "nothing was written",
        )


def collection_files(folder: Path) -> dict[str, CollectionFiles]:
    """The collections of a snapshot folder, by the collection their headers name; files that
    are not snapshots, or named otherwise than their header says, are left to ``verify``."""
    found: dict[str, CollectionFiles] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*" + SUFFIX)):
        header = read_header(path)
        if header is None or path.name != header_filename(header):
            continue
        found.setdefault(header.collection, CollectionFiles(header.collection)).files.append(
            (path, header)
        )
    for files in found.values():
        files.files.sort(key=lambda item: item[1].part or (0, 1))
    return found


def obsolete_files(existing: CollectionFiles | None, written: list[Path]) -> list[Path]:
    """Files of a collection that a new export does not rewrite (another layout): removed."""
    if existing is None:
        return []
    keep = {path.resolve() for path in written}
    return [path for path in existing.paths if path.resolve() not in keep]


# ---------------------------------------------------------------- writing a layout


class PartWriters:
    """The open sections of one layout of a collection, being written: one file, or ``count``
    parts, each record to the part of its key."""

    def __init__(self, headers: list[Header], sinks: Sequence[Writable]) -> None:
        self.count = len(headers)
        self.writers = [SectionWriter(sink, h) for sink, h in zip(sinks, headers, strict=True)]
        self.max_file_bytes = MAX_FILE_BYTES
        """The limit no file may pass, ``MAX_FILE_BYTES`` when the layout opens: the one name
        to lower it (tests do)."""

    def add(self, key: SortKey, line: bytes) -> int:
        """Write a record where its key belongs; returns the size of that file so far."""
        return self.add_to(part_of(key, self.count) if self.count > 1 else 0, line)

    def add_hashed(self, hashed: int, line: bytes) -> int:
        """``add`` for a record whose ``key_hash`` is known."""
        return self.add_to(hashed % self.count, line)

    def add_to(self, index: int, line: bytes) -> int:
        writer = self.writers[index]
        writer.add(line)
        return writer.bytes

    @property
    def bytes(self) -> int:
        return sum(writer.bytes for writer in self.writers)

    def finish(self) -> list[SectionSummary]:
        return [writer.finish() for writer in self.writers]


def part_headers(name: str, rules: Rules, count: int) -> list[Header]:
    return [Header(name, rules, None if count == 1 else (i, count)) for i in range(count)]


class StagedLayout:
    """Opens a layout's files as staged files; a layout can be dropped for a larger one."""

    def __init__(self, staged: StagedFiles, folder: Path, name: str, rules: Rules) -> None:
        self.staged, self.folder, self.name, self.rules = staged, folder, name, rules
        self.stack = contextlib.ExitStack()
        self.paths: list[Path] = []

    def __call__(self, count: int) -> PartWriters:
        if self.paths:
            self.discard()
        headers = part_headers(self.name, self.rules, count)
        self.paths = [self.folder / header_filename(header) for header in headers]
        sinks = [self.stack.enter_context(self.staged.open(path)) for path in self.paths]
        return PartWriters(headers, sinks)

    def discard(self) -> None:
        self.close()
        self.staged.discard(self.paths)

    def close(self) -> None:
        self.stack.close()
        self.stack = contextlib.ExitStack()
