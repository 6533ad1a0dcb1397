"""Snapshot sources: the collections a snapshot file, bundle or directory holds, verified.

What ``merge``, the merge driver and ``diff`` read a snapshot through: ``index_sections``
verifies every file deeply before anything is read from it (or, for ``merge``, as it is read:
``verify_as_read``), checks that a directory's files are named after their collections and that
no part of a split collection is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from dbsync.core.merge import Decision
from dbsync.core.snapshot import SUFFIX, Header, SnapshotError
from dbsync.edges.parts import (
    CollectionFiles,
    check_file_name,
    collection_files,
    file_lines,
    verified_file_lines,
)
from dbsync.edges.snapshot_files import read_sections, snapshot_files, verify_file
from dbsync.errors import InvalidInput, UsageError


@dataclass(frozen=True)
class SourceSection:
    """Where one collection's section lives in a verified snapshot file."""

    path: Path
    header: Header
    files: CollectionFiles | None = None
    """In a snapshot directory, every file of the collection (its parts, if it is split)."""
    verified_as_read: bool = False
    """Its files are verified as ``lines`` reads them, not before (``index_sections``)."""

    def parts(self) -> Iterator[tuple[Header, Iterator[bytes]]]:
        """The section as its files hold it: one, or each part of a split collection."""
        if self.files is None:
            yield self.header, self.lines()
            return
        for path, header in self.files.files:
            yield header, file_lines(path, header.collection)

    def lines(self, folded: Callable[[Decision], None] | None = None) -> Iterator[bytes]:
        """The section's lines, each key once (``folded``: see ``CollectionFiles.lines``)."""
        if self.files is not None:
            yield from self.files.lines(
                self.header.rules, verified=self.verified_as_read, folded=folded
            )
            return
        for section in read_sections(self.path):
            if section.header.collection == self.header.collection:
                yield from section.records
                return

    def file_lines(self) -> list[Iterator[bytes]]:
        """The lines of each of a snapshot directory's files of the collection (one, or each
        part), verified as read where ``lines`` would verify them."""
        assert self.files is not None
        read = verified_file_lines if self.verified_as_read else file_lines
        return [read(path, self.header.collection) for path in self.files.paths]

    def verify(self) -> None:
        """Verify now what ``lines`` would verify as it reads (nothing if it was before)."""
        if self.verified_as_read and self.files is not None:
            for path in self.files.paths:
                verify_or_raise(path)


def verify_or_raise(path: Path) -> list[Header]:
    """Verify a file deeply; its headers, or ``SnapshotError`` naming its first problem."""
    result = verify_file(path, limit=20)
    if result.problems:
        first = result.problems[0]
        more = (
            f" (and {len(result.problems) - 1} more problems)" if len(result.problems) > 1 else ""
        )
        raise SnapshotError(first.path, first.line, first.message + more)
    return result.headers


def index_sections(source: Path, *, verify_as_read: bool = False) -> dict[str, SourceSection]:
    """Verify every file of ``source`` (deeply: hashes, types, order) and index its sections.

    With ``verify_as_read``, a snapshot directory's collection files are verified as their lines
    are read instead (one pass, not two): only their headers are read here (a file that is not
    one of them is still verified here). Whoever reads such a section must read all its lines
    before writing anything, or call its ``verify``.
    """
    found: dict[str, SourceSection] = {}
    deferred = _deferred_files(source) if verify_as_read else {}
    for path in snapshot_files(source):
        headers = [deferred[path]] if path in deferred else verify_or_raise(path)
        for header in headers:  # verified: the file is not read again for them
            name = header.collection
            if source.is_dir():
                check_file_name(path, header)
            elif name in found:
                raise InvalidInput(
                    f"collection {name} appears in both {found[name].path} and {path}"
                )
            found.setdefault(name, SourceSection(path, header))
    if source.is_dir():
        for name, files in collection_files(source).items():
            _check_complete(files)
            header = replace(found[name].header, part=None)  # the collection, not one part
            deferring = any(path in deferred for path in files.paths)
            found[name] = replace(
                found[name], header=header, files=files, verified_as_read=deferring
            )
    return found


def _deferred_files(source: Path) -> dict[Path, Header]:
    """The collection files of a directory, with their first header (a quick look)."""
    if not source.is_dir():
        return {}
    return {
        path: header for files in collection_files(source).values() for path, header in files.files
    }


def _check_complete(files: CollectionFiles) -> None:
    """A missing part would look like deleted records: refuse rather than delete them."""
    missing = [problem for problem in files.complete() if "missing" in problem]
    if missing:
        raise InvalidInput(
            f"{files.paths[0].parent}: {missing[0]}: the snapshot is incomplete",
            hint="restore the missing part from git (git checkout -- FOLDER); nothing was written",
        )


# ---------------------------------------------------------------- a source with no snapshot

FIRST_LINE_LOOKED_AT = 1 << 16


def require_snapshot(source: Path) -> None:
    """Refuse at once, before any lock, backup or history row, a source given to ``merge``
    that holds no snapshot at all: a path that does not exist (a typo: a usage error), a folder
    without snapshot files, or a file of Extended JSON documents (mongoexport output, which
    ``dbsync import`` loads). Any other file is verified by whoever reads it, naming its line.
    (``index_sections`` takes an empty folder as no collection: ``diff`` compares with one.)"""
    if not source.exists():
        raise UsageError(
            f"{source} does not exist",
            hint="give a snapshot file or folder, e.g. 'dbsync merge database_backup'",
        )
    if source.is_dir() and not snapshot_files(source):  # would merge nothing, and say merged
        raise InvalidInput(
            f"{source} holds no dbsync snapshot (no *{SUFFIX} file); nothing was written",
            hint="give the snapshot folder (database_backup by default) or a snapshot file",
        )
    if source.is_file() and _looks_like_documents(_first_line(source)):
        raise InvalidInput(
            f"{source} is not a dbsync snapshot: it holds Extended JSON documents "
            "(mongoexport output, say), which merge does not take; nothing was written",
            hint=f"load it with 'dbsync import {source} --collection NAME'",
        )


def _first_line(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.readline(FIRST_LINE_LOOKED_AT).strip()
    except OSError:
        return b""  # unreadable: the verification that follows says why


def _looks_like_documents(line: bytes) -> bool:
    """A JSON array, or a JSON object that is not a snapshot header."""
    if line.startswith(b"["):
        return True
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and "format" not in value
