"""``dbsync merge-driver BASE OURS THEIRS [PATH]``: git's merge driver for snapshot files.

Git gives three temporary files (``%O %A %B``) and the path they stand for (``%P``), and expects
the result in OURS: exit 0 when merged, non-zero to leave a conflict. The merge is record by
record with the engine ``dbsync merge`` uses (``merge.decide``) and the rules each file's header
states, so two assets that committed snapshots concurrently never meet a textual conflict.

An empty or missing BASE (the file was added on both sides) makes the merge two-way. When the
versions cannot be merged safely (they name different collections, keys or rules, or a file
fails verification) OURS is left untouched — still a valid snapshot — and git reports a conflict.
The result is written atomically: a crash never leaves half a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dbsync.commands.merge import SourceSection, index_sections
from dbsync.errors import DbsyncError, InvalidInput
from dbsync.files import atomic_writer
from dbsync.merge import Decision, MergeCounts, decide
from dbsync.snapshot import SnapshotError, write_section


@dataclass
class DriverResult:
    merged: bool
    message: str
    counts: dict[str, MergeCounts] = field(default_factory=dict)


def merge_files(base: Path, ours: Path, theirs: Path, label: str) -> DriverResult:
    """Merge THEIRS into OURS in place; on any doubt leave OURS as it was and say why."""
    try:
        counts, mode = _merge(base, ours, theirs)
    except DbsyncError as error:
        return DriverResult(
            False,
            f"dbsync: cannot merge {label} record by record: {error.message}; it is left as "
            "this side's version and marked as a conflict",
        )
    return DriverResult(True, _summary(label, mode, counts), counts)


def _index(side: str, path: Path) -> dict[str, SourceSection]:
    """The verified sections of one version; a problem names the side, not git's temp file."""
    try:
        return index_sections(path)
    except SnapshotError as error:
        where = f", line {error.line}" if error.line else ""
        raise InvalidInput(f"{side}{where}: {error.problem}") from None


def _merge(base: Path, ours: Path, theirs: Path) -> tuple[dict[str, MergeCounts], str]:
    two_way = not base.is_file() or base.stat().st_size == 0
    bases = {} if two_way else _index("the common ancestor", base)
    our_sections, their_sections = _index("our version", ours), _index("their version", theirs)
    _check_same_collections(our_sections, their_sections)
    _check_bases(our_sections, bases)
    counts = {name: MergeCounts() for name in our_sections}
    with atomic_writer(ours) as handle:
        for name, section in our_sections.items():
            base_lines = bases[name].lines() if name in bases else None
            decisions = decide(
                base_lines, section.lines(), their_sections[name].lines(), section.header.rules
            )
            write_section(handle, section.header, _results(decisions, counts[name], section))
    return counts, "two-way" if two_way else "three-way"


def _results(
    decisions: Iterable[Decision], counts: MergeCounts, section: SourceSection
) -> Iterator[bytes]:
    for decision in decisions:
        counts.add(decision, section.header.rules.key)
        if decision.result is not None:
            yield decision.result


def _check_same_collections(
    ours: dict[str, SourceSection], theirs: dict[str, SourceSection]
) -> None:
    """Both versions must hold the same collections under the same rules, or no rule applies."""
    if list(ours) != list(theirs):
        raise InvalidInput(
            f"the two versions hold different collections ({', '.join(ours) or 'none'} here, "
            f"{', '.join(theirs) or 'none'} there)"
        )
    for name, section in ours.items():
        mine, other = section.header.rules, theirs[name].header.rules
        if mine != other:
            raise InvalidInput(
                f"the two versions of {name} disagree on its rules (key {list(mine.key)}, "
                f"timestamp {mine.timestamp!r}, preserve {list(mine.preserve)} here; key "
                f"{list(other.key)}, timestamp {other.timestamp!r}, preserve "
                f"{list(other.preserve)} there): export again on both assets with one dbsync.toml"
            )


def _check_bases(ours: dict[str, SourceSection], bases: dict[str, SourceSection]) -> None:
    """A base keyed differently cannot be walked alongside the others."""
    for name, base in bases.items():
        if name in ours and base.header.rules.key != ours[name].header.rules.key:
            raise InvalidInput(
                f"the common ancestor keys {name} by {list(base.header.rules.key)}, "
                f"the versions by {list(ours[name].header.rules.key)}"
            )


def _summary(label: str, mode: str, counts: dict[str, MergeCounts]) -> str:
    taken = sum(c.remote_only + c.updated + c.deleted for c in counts.values())
    kept = sum(c.local_only + c.kept_local + c.deleted_locally for c in counts.values())
    conflicts = sum(c.conflicts_resolved for c in counts.values())
    return (
        f"dbsync: merged {label} record by record ({mode}): {taken} change(s) from theirs, "
        f"{kept} from ours, {conflicts} conflict(s) decided by the rules"
    )
