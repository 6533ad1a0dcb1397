"""``dbsync verify``: every problem of a snapshot file or directory, by file and line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dbsync.core.snapshot import Problem, header_filename
from dbsync.edges.parts import collection_files
from dbsync.edges.snapshot_files import read_header, snapshot_files, verify_file


@dataclass
class VerifyReport:
    files: int = 0
    records: int = 0
    sections: list[tuple[str, str, int]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.files > 0


def verify_path(path: Path) -> VerifyReport:
    """Check each snapshot file under ``path``; a directory's files must be named after their
    collection, so a file copied under another collection's name is caught."""
    report = VerifyReport()
    for file in snapshot_files(path):
        result = verify_file(file)
        report.files += 1
        report.problems.extend(result.problems)
        for collection, count in result.sections:
            report.sections.append((str(file), collection, count))
            report.records += count
        header = read_header(file)
        if path.is_dir() and header is not None and file.name != header_filename(header):
            message = f"the file holds collection {header.collection!r} but is named {file.name}"
            report.problems.append(Problem(str(file), 1, message))
    if path.is_dir():
        for files in collection_files(path).values():
            report.problems.extend(Problem(str(path), None, p) for p in files.complete())
    if report.files == 0:
        report.problems.append(Problem(str(path), None, "no snapshot files (*.jsonl) here"))
    return report
