"""Snapshot sources: the collections a snapshot file, bundle or directory holds, verified.

What ``merge``, the merge driver and ``diff`` read a snapshot through: ``index_sections``
verifies every file deeply before anything is read from it, checks that a directory's files are
named after their collections and that no part of a split collection is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from dbsync.core.snapshot import Header, SnapshotError, header_filename
from dbsync.edges.parts import CollectionFiles, collection_files, file_lines
from dbsync.edges.snapshot_files import read_sections, snapshot_files, verify_file
from dbsync.errors import InvalidInput


@dataclass(frozen=True)
class SourceSection:
    """Where one collection's section lives in a verified snapshot file."""

    path: Path
    header: Header
    files: CollectionFiles | None = None
    """In a snapshot directory, every file of the collection (its parts, if it is split)."""

    def parts(self) -> Iterator[tuple[Header, Iterator[bytes]]]:
        """The section as its files hold it: one, or each part of a split collection."""
        if self.files is None:
            yield self.header, self.lines()
            return
        for path, header in self.files.files:
            yield header, file_lines(path, header.collection)

    def lines(self) -> Iterator[bytes]:
        if self.files is not None:
            yield from self.files.lines(self.header.rules)
            return
        for section in read_sections(self.path):
            if section.header.collection == self.header.collection:
                yield from section.records
                return


def index_sections(source: Path) -> dict[str, SourceSection]:
    """Verify every file of ``source`` (deeply: hashes, types, order) and index its sections."""
    found: dict[str, SourceSection] = {}
    for path in snapshot_files(source):
        result = verify_file(path, limit=20)
        if result.problems:
            first = result.problems[0]
            more = (
                f" (and {len(result.problems) - 1} more problems)"
                if len(result.problems) > 1
                else ""
            )
            raise SnapshotError(first.path, first.line, first.message + more)
        for header in result.headers:  # verified: the file is not read again for them
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
            found[name] = replace(found[name], header=header, files=files)
    return found


def _check_complete(files: CollectionFiles) -> None:
    """A missing part would look like deleted records: refuse rather than delete them."""
    missing = [problem for problem in files.complete() if "missing" in problem]
    if missing:
        raise InvalidInput(
            f"{files.paths[0].parent}: {missing[0]}: the snapshot is incomplete",
            hint="restore the missing part from git (git checkout -- FOLDER); nothing was written",
        )


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
