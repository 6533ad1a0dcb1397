"""``dbsync merge-driver BASE OURS THEIRS [PATH]``: git's merge driver for snapshot files.

Git gives three temporary files (``%O %A %B``) and the path they stand for (``%P``), and expects
the result in OURS: exit 0 when merged, non-zero to leave a conflict. The merge is record by
record with the engine ``dbsync merge`` uses (``merge.decide``) and the rules each file's header
states, so two assets that committed snapshots concurrently never meet a textual conflict.

An empty or missing BASE (the file was added on both sides) makes the merge two-way. When the
versions cannot be merged safely (they name different collections, keys or rules, or a file
fails verification) OURS is left untouched — still a valid snapshot — and git reports a conflict.
The result is written atomically: a crash never leaves half a file.

The merge costs what changed: the three versions are read once (git's blob ids of them taken
from the same reads), every line's shape and hash checked, the hash of a line the same in all
three once; such a line is passed on as bytes, and only the others are decoded and checked as
``dbsync verify`` checks them (types, canonical form, order next to them).
A lying line among those is refused as before, named with its side and line: on any doubt the
driver verifies the three versions in full first, as it always did, which names the problem. A
line the same in all three is not read: the merge changes nothing about it (OURS, this clone's
own commit, holds it already, and the result holds it as OURS did), refusing would leave git a
conflict over a record no side changed, and every way into a database (the hook's merge that
follows, ``dbsync merge``) and ``dbsync verify`` still check it and name it.

In a dbsync project (git runs the driver at the root of the work tree) a merge is recorded like
``dbsync merge``'s: a report (``.txt`` and ``.json``) with every conflict and its losing
version, the losing versions in the state store, and a history row (operation
``merge-driver``). The report is also named in a small queue (``edges.driver_decisions``) that
the hook merging the snapshot into the database next reads: that merge finds nothing left to
decide, and its report and summary say where the driver's decisions are.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dbsync.config import Config, load_config
from dbsync.core.merge import (
    Decision,
    MergeCounts,
    align_batches,
    decide,
    decide_three_way,
    decide_two_way,
)
from dbsync.core.ordering import key_hash
from dbsync.core.report import SUCCESS, MergeReport, tie_break_notes
from dbsync.core.rules import Rules
from dbsync.core.snapshot import (
    ChangedLineChecks,
    Header,
    SnapshotError,
    hashes_hold,
    line_sort_key,
    write_section,
    write_section_batches,
)
from dbsync.edges import git
from dbsync.edges.conflict_spool import SpooledConflicts
from dbsync.edges.driver_decisions import queue_driver_decisions
from dbsync.edges.files import atomic_writer
from dbsync.edges.log_index import LINES_KEPT, Change, LogIndex
from dbsync.edges.pulled import RECORDS, BlobDigest, DriverRecord, file_digest
from dbsync.edges.snapshot_files import read_sections
from dbsync.edges.sources import SourceSection, index_sections
from dbsync.errors import DbsyncError, InvalidInput
from dbsync.runs.losing import MERGE_DRIVER, write_report_files
from dbsync.runs.recording import record_report, recorded_run

"""Under ``database_sync/``: reports of driver merges the database has not been merged with."""
GIT_BASE = "git merge base"


@dataclass
class DriverResult:
    merged: bool
    message: str
    counts: dict[str, MergeCounts] = field(default_factory=dict)
    mode: str = "three-way"
    rules: dict[str, Rules] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report: Path | None = None
    decided: Decided | None = None
    """What the merge changed in OURS, for the merge into the database that follows."""


@dataclass
class Decided:
    """What a merge changed, told as it decided: the rows it changed in OURS
    (``edges.pulled.DriverRecord``, for the hook's merge into the database), and what changed
    between each pair of versions git's history will hold (``LogPairs``, for the log index);
    git's blob id of each version (base, ours, theirs; merged once written) and the file the
    result is in."""

    record: DriverRecord
    pairs: LogPairs
    blobs: dict[str, str]
    output: Path

    def close(self) -> None:
        self.record.close()


class _Pair:
    """What changed between two versions of the file, as ``log_index`` keeps a pair of blobs:
    a ``Change`` per record whose line differs, or None past ``LINES_KEPT`` bytes (wide)."""

    def __init__(self) -> None:
        self.changes: list[Change] | None = []
        self.size = 0

    def add(self, key: int, old: bytes | None, new: bytes | None) -> None:
        if old == new or self.changes is None:
            return
        self.size += len(old or b"") + len(new or b"")
        if self.size > LINES_KEPT:
            self.changes = None
        else:
            self.changes.append(Change(key, old, new))


class LogPairs:
    """The pairs a pull's history holds of the file the driver merges: base → theirs (their
    commit), ours → merged and theirs → merged (the merge commit), filled as the driver walks:
    ``dbsync log`` and the hooks then find them in the log index without reading the blobs
    again (``runs.log.index_new_commits``: 4 blob reads and line sets of 3 pairs)."""

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = tuple(fields)
        self.base_theirs, self.ours_merged, self.theirs_merged = _Pair(), _Pair(), _Pair()

    def see(self, row: tuple[bytes | None, ...], result: bytes | None) -> None:
        """A row that is not the same on every side, and what the merge made of it."""
        line = next(line for line in (*row, result) if line is not None)
        key = key_hash(line_sort_key(line, self.fields))
        base, ours, theirs = row if len(row) == 3 else (None, *row)
        if len(row) == 3:
            self.base_theirs.add(key, base, theirs)
        self.ours_merged.add(key, ours, result)
        self.theirs_merged.add(key, theirs, result)

    def index(self, config: Config, blobs: dict[str, str]) -> None:
        """Into this asset's log index, each pair of distinct blobs; nothing unless the
        repository names objects by SHA-1 (the ids ``file_digest`` computes)."""
        pairs = [
            ("base", "theirs", self.base_theirs),
            ("ours", "merged", self.ours_merged),
            ("theirs", "merged", self.theirs_merged),
        ]
        found = git.run_git(["rev-parse", "--show-object-format"], config.root, check=False)
        if found.returncode != 0 or found.stdout.strip() != "sha1":
            return
        index = LogIndex.open(config.state_dir)
        try:
            for old, new, pair in pairs:
                if old in blobs and new in blobs and blobs[old] != blobs[new]:
                    index.add(blobs[old], blobs[new], self.fields, pair.changes)
        finally:
            index.close()


def driver_call(
    files: tuple[Path, Path, Path], path: str | None, *, quiet: bool, write: Callable[[str], None]
) -> int:
    """``dbsync merge-driver BASE OURS THEIRS [PATH]`` as git calls it: what it says written,
    0 merged or 1 a conflict left for the user returned (what git reads from a driver)."""
    base, ours, theirs = files
    result = merge_files(base, ours, theirs, path or str(ours))
    record_driver_merge(result, path or str(ours), Path.cwd())
    if not quiet or not result.merged:
        write(result.message)
    for note in result.notes:
        write(f"warning: {note}")
    return 0 if result.merged else 1


def merge_files(base: Path, ours: Path, theirs: Path, label: str) -> DriverResult:
    """Merge THEIRS into OURS in place; on any doubt leave OURS as it was and say why."""
    told = Told()
    try:
        digests = {"ours": BlobDigest(ours), "theirs": BlobDigest(theirs)}
        if base.is_file() and base.stat().st_size:
            digests["base"] = BlobDigest(base)
        counts, mode, rules = _merge(base, ours, theirs, told, digests)
        blobs = {side: digest.finish() for side, digest in digests.items()}
    except (DbsyncError, OSError) as error:
        told.record.close()
        said = error.message if isinstance(error, DbsyncError) else str(error)
        return DriverResult(
            False,
            f"dbsync: cannot merge {label} record by record: {said}; it is left as "
            "this side's version and marked as a conflict",
        )
    notes = [note for name, c in counts.items() for note in tie_break_notes(name, rules[name], c)]
    result = DriverResult(True, _summary(label, mode, counts), counts, mode, rules, notes)
    pairs = told.pairs or LogPairs(())
    result.decided = Decided(told.record, pairs, blobs, ours)
    return result


class Told:
    """What ``_walk`` tells of each decision: the rows that change OURS to ``record``, every
    row to ``pairs`` (set for the one collection a file holds; None when the file holds
    several, or the walk gave up: nothing is then recorded)."""

    def __init__(self) -> None:
        self.record = DriverRecord()
        self.pairs: LogPairs | None = None

    def discard(self) -> None:
        self.record.discard()
        self.pairs = None


def record_driver_merge(result: DriverResult, label: str, cwd: Path) -> None:
    """Report and record a driver merge like ``dbsync merge`` (see the module docstring).
    Outside a dbsync project there is nowhere to keep them; a problem becomes a note."""
    try:
        config = load_config(cwd=cwd)
        if config.config_file is None or not result.merged:
            return
        decided = result.decided
        if decided is not None:  # first: the hook's merge that follows reads it
            decided.blobs["merged"] = file_digest(decided.output)
            decided.record.save(config.state_dir / RECORDS, decided.blobs)
            _index_pairs(config, decided, list(result.counts))
        names = list(result.counts)
        with recorded_run(config, "merge-driver", collections=names, warn=_warn) as run:
            report = _report(config, result, label)
            result.report = write_report_files(config, report, _now(), MERGE_DRIVER)
            record_report(run, report)
        if any(c.conflicts for c in report.collections.values()):
            shown = f"{os.path.relpath(result.report, config.root)}.txt"
            queue_driver_decisions(config, result.counts, shown)
            result.message += f"; every losing version is in {shown}"
    except (DbsyncError, OSError) as error:
        result.notes.append(f"this merge was not reported nor recorded: {error}")
    finally:
        if result.decided is not None:
            result.decided.close()


def _index_pairs(config: Config, decided: Decided, names: list[str]) -> None:
    """The log index learns the pairs the driver saw (best effort: a cache), when dbsync.toml
    keys the file's one collection as the file does."""
    pairs = decided.pairs
    if len(names) != 1 or not pairs.fields or config.rules(names[0]).key != pairs.fields:
        return
    try:
        pairs.index(config, decided.blobs)
    except (DbsyncError, OSError, sqlite3.Error):
        pass


def _report(config: Config, result: DriverResult, label: str) -> MergeReport:
    now = _now()
    base = GIT_BASE if result.mode == "three-way" else None
    report = MergeReport(SUCCESS, now.isoformat(timespec="seconds"), config.asset, label, base)
    report.collections = dict(result.counts)
    report.notes = list(result.notes)
    return report


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _warn(message: str) -> None:
    print(f"dbsync: warning: {message}", file=sys.stderr)


def _index(side: str, path: Path) -> dict[str, SourceSection]:
    """The verified sections of one version; a problem names the side, not git's temp file."""
    try:
        return index_sections(path)
    except SnapshotError as error:
        where = f", line {error.line}" if error.line else ""
        raise InvalidInput(f"{side}{where}: {error.problem}") from None


Merged = tuple[dict[str, MergeCounts], str, dict[str, Rules]]


def _merge(
    base: Path, ours: Path, theirs: Path, told: Told, digests: dict[str, BlobDigest]
) -> Merged:
    """The merge at the cost of the change (``_merge_changes``), each decision told to
    ``told``. Should it meet anything amiss, the merge as it was before: every line of the
    three versions verified first, the first problem named (side, line, what), or a merge of
    what the quick walk does not take on (a base that lacks a collection, say); nothing of it
    is told (``told.discard``). ``digests`` take the blob ids of the versions as they are
    read, each finished before OURS is replaced."""
    two_way = not base.is_file() or base.stat().st_size == 0
    ancestor = None if two_way else base
    try:
        counts, rules = _merge_changes(ancestor, ours, theirs, told, digests)
    except Exception:  # whatever the walk could not read: the full verification names it
        told.discard()
        for digest in digests.values():
            digest.finish()
        counts, rules = _merge_verified(ancestor, ours, theirs)
    return counts, "two-way" if two_way else "three-way", rules


Counted = tuple[dict[str, MergeCounts], dict[str, Rules]]


class _NotTakenOn(Exception):
    """What the quick walk leaves to the full verification."""


def _merge_changes(
    base: Path | None, ours: Path, theirs: Path, told: Told, digests: dict[str, BlobDigest]
) -> Counted:
    """One walk of the three versions, each line's shape checked as it is read, its hash as it
    is walked (once for a line the same on every side); only the lines that differ between
    them are decoded and checked deeply (``ChangedLineChecks``).
    Each version holds the same collections in the same order (one, in a git repository).
    The reads feed ``digests``."""
    sides = [("ours", ours), ("theirs", theirs), *([("base", base)] if base else [])]
    mine, *others = (  # each line's hash is tested by ``_walk``, once for all sides
        read_sections(path, seen=digests[side].update if side in digests else None, hashes=False)
        for side, path in sides
    )
    counts: dict[str, MergeCounts] = {}
    rules: dict[str, Rules] = {}
    with atomic_writer(ours) as handle:
        for section in mine:
            theirs_section, *bases = (next(reader, None) for reader in others)
            header = section.header
            if theirs_section is None or theirs_section.header.collection != header.collection:
                raise _NotTakenOn("the two versions hold other collections")
            if theirs_section.header.rules != header.rules:
                raise _NotTakenOn("the two versions disagree on the rules")
            streams = [section.batches, theirs_section.batches]
            if bases:
                if bases[0] is None or bases[0].header.collection != header.collection:
                    raise _NotTakenOn("the ancestor holds other collections")
                if bases[0].header.rules.key != header.rules.key:
                    raise _NotTakenOn("the ancestor is keyed otherwise")
                streams.insert(0, bases[0].batches)
            name = header.collection
            counts[name], rules[name] = MergeCounts(conflicts=SpooledConflicts()), header.rules
            if counts.keys() == {name}:
                told.pairs = LogPairs(header.rules.key)
            else:
                told.discard()  # a file of several collections: not one a pull brings
            write_section_batches(handle, header, _walk(streams, header, counts[name], told))
        if any(next(reader, None) is not None for reader in others):
            raise _NotTakenOn("the versions hold other collections")
        for digest in digests.values():  # OURS still holds what was read
            digest.finish()
    return counts, rules


def _walk(
    streams: list[Iterator[list[bytes]]], header: Header, counts: MergeCounts, told: Told
) -> Iterator[list[bytes]]:
    """The merged lines of one collection, in lists: ``decide``'s, a run of lines the same on
    every side passed on as it is (``align_batches``: compared in C, not read), every other line
    checked deeply before it is decided on; each decision told to ``told``."""
    rules, width = header.rules, len(streams)
    checks = ChangedLineChecks(header, width)
    same = 0
    for row in align_batches(streams, rules.key):
        if isinstance(row, list):  # lines the same on every side
            if not hashes_hold(row):
                raise _NotTakenOn("a line's hash is not its content's")
            if checks.pending:
                _refuse(checks.same_after_changes(row[0]))
            checks.last_same = row[-1]
            same += len(row)
            yield row
            continue
        for side, line in enumerate(row):
            if line is not None:
                if not hashes_hold([line]):
                    raise _NotTakenOn("a line's hash is not its content's")
                _refuse(checks.changed(side, line))
        if width == 3:
            decision = decide_three_way(row[0], row[1], row[2], rules)
        else:
            decision = decide_two_way(row[0], row[1], rules)
        result = decision.result if decision is not None else None
        if told.pairs is not None:
            told.pairs.see(row, result)
        if decision is not None:
            counts.add(decision, rules.key)
            if decision.changes_ours:
                told.record.add(decision.ours, decision.result)
            if decision.result is not None:
                yield [decision.result]
    counts.common += same
    counts.total += same


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise _NotTakenOn(problem)


def _merge_verified(base: Path | None, ours: Path, theirs: Path) -> Counted:
    """Every line of the three versions verified before the merge reads them (the way before
    ``_merge_changes``): a problem is named with its side and line."""
    bases = {} if base is None else _index("the common ancestor", base)
    our_sections, their_sections = _index("our version", ours), _index("their version", theirs)
    _check_same_collections(our_sections, their_sections)
    _check_bases(our_sections, bases)
    counts = {name: MergeCounts(conflicts=SpooledConflicts()) for name in our_sections}
    with atomic_writer(ours) as handle:
        for name, section in our_sections.items():
            base_lines = bases[name].lines() if name in bases else None
            decisions = decide(
                base_lines, section.lines(), their_sections[name].lines(), section.header.rules
            )
            write_section(handle, section.header, _results(decisions, counts[name], section))
    return counts, {name: section.header.rules for name, section in our_sections.items()}


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
