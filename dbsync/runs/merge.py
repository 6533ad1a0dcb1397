"""``dbsync merge``: a snapshot → the database, with a backup first, a report, and rollback.

The run, per collection: export the database ("ours") into the backup folder, walk base / ours /
theirs with ``merge.decide``, spool the writes that change the database (deletes, then
upserts) to temporary files, check the safety guards, and only then write. Anything failing
while writing puts every touched collection back from the backup.
"""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import orjson

from dbsync.config import Config
from dbsync.core import extjson
from dbsync.core.guards import GUARD_RULE, TooManyDeletes, deletes_too_many
from dbsync.core.merge import (
    Decision,
    MergeCounts,
    conflict_entry,
    decide,
    decide_three_way,
    decide_two_way,
)
from dbsync.core.notes import RecordNotes
from dbsync.core.report import (
    DRY_RUN,
    FAILED,
    SUCCESS,
    DriverDecisions,
    MergeReport,
    tie_break_notes,
)
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, line_body, line_document
from dbsync.edges import backups, journal
from dbsync.edges.change_index import (
    ChangeIndex,
    Changes,
    IndexMismatch,
    Recorded,
    Row3,
    changed_rows,
    holds_exported,
    indexed_changes,
    indexed_collection_lines,
    learn_merged,
)
from dbsync.edges.changes import ChangeWriter, redecider, spooled_changes, spooled_pairs
from dbsync.edges.collection_options import read_options
from dbsync.edges.conflict_spool import SpooledConflicts
from dbsync.edges.files import scratch_folder
from dbsync.edges.parts import CollectionFiles, collection_files, file_lines
from dbsync.edges.pulled import (
    RECORDS,
    CannotVouch,
    Pulled,
    PulledRow,
    VouchedFile,
    pulled_rows,
)
from dbsync.edges.records import KeyClashes, collection_lines, unique_lines
from dbsync.edges.snapshot_files import read_sections
from dbsync.edges.sources import SourceSection, index_sections
from dbsync.edges.store import Change, ChangeCounts, Store, describe_id
from dbsync.edges.synced import is_tracked_snapshot, save_synced, synced_dir
from dbsync.errors import DbsyncError, InvalidInput, UsageError
from dbsync.progress import NoProgress, Progress
from dbsync.runs.losing import MERGE, write_report_files

BATCH = 1000


@dataclass(frozen=True)
class MergeOptions:
    base: Path | None = None
    dry_run: bool = False
    collections: Sequence[str] | None = None
    allow_deletes: bool = False
    commit: str | None = None
    place: str = MERGE
    """Where the conflicts are decided, as the losing versions record it
    (``dbsync.runs.losing``)."""
    merge_driver: DriverDecisions | None = None
    """What the git merge driver decided before this merge (the report says where it is)."""


@dataclass
class CollectionPlan:
    """The writes one collection needs, spooled to a file, and the report figures."""

    name: str
    rules: Rules
    counts: MergeCounts
    spool: Path
    ours_count: int = 0
    theirs: SourceSection | None = None
    touched: bool = False
    notes: RecordNotes | None = None
    moves: IdMoves | None = None
    backup_bytes: int = 0
    applied: ChangeCounts | None = None
    vouched: list[str] | None = None
    """The ``content_check`` of each of the snapshot's files as the plan vouched for them
    (``edges.pulled``): recorded as synced from those very bytes, not read again."""
    indexed: Recorded | None = None
    """The change index's record when the plan took the database's side from the index alone
    (the database held what the index knew): the index can then learn what the merge wrote."""
    makes_snapshot: bool = True
    """Whether every record the plan decided is the snapshot's: applied, the database holds
    the snapshot's records."""


def _rules_for(config: Config, theirs: SourceSection) -> Rules:
    rules = config.rules(theirs.header.collection)
    if rules.key != theirs.header.rules.key:
        raise InvalidInput(
            f"{theirs.path}: collection {theirs.header.collection} is keyed by "
            f"{list(theirs.header.rules.key)} but dbsync.toml says {list(rules.key)}",
            hint="pull the dbsync.toml that goes with this snapshot, or re-export it",
        )
    return rules


class _Counted:
    """Lines passed through, counted (and told to ``progress``): the database's side of the
    merge, read once."""

    def __init__(self, lines: Iterable[bytes], progress: Progress | None = None) -> None:
        self._lines = lines
        self.count = 0
        self._progress = progress or NoProgress()

    def __iter__(self) -> Iterator[bytes]:
        advance = self._progress.advance
        for line in self._lines:
            self.count += 1
            advance()
            yield line


class _Merging:
    """The progress of one collection's merge: the bars its reads and walks start are the
    merge's, named after it (a read the merge makes is not an export)."""

    def __init__(self, progress: Progress, name: str) -> None:
        self._progress, self._name = progress, name

    def start(self, label: str, total: int | None = None) -> None:
        self._progress.start(f"merge {self._name}", total)

    def advance(self, count: int = 1) -> None:
        self._progress.advance(count)

    def finish(self) -> None:
        self._progress.finish()


class _Applied:
    """The changes of a plan as the store takes them, each told to ``progress``."""

    def __init__(self, changes: Iterable[Change], progress: Progress) -> None:
        self._changes, self._progress = changes, progress

    def __iter__(self) -> Iterator[Change]:
        for change in self._changes:
            yield change
            self._progress.advance()


def _ours_lines(path: Path) -> Iterator[bytes]:
    for section in read_sections(path):
        yield from section.records


def _id_bytes(line: bytes) -> bytes:
    document = line_document(line)
    if "_id" not in document:
        raise InvalidInput(f"a record has no _id: {line_body(line)[:200].decode(errors='replace')}")
    # a copy: orjson's result keeps a 4 KiB allocation, and IdMoves keeps these in sets
    return bytes(memoryview(orjson.dumps(document["_id"])))


def _id_clash(identifier: bytes) -> InvalidInput:
    return InvalidInput(
        f"two different records share _id {identifier.decode()}: the database cannot hold both",
        hint="give one of them a new _id on its asset, export, and merge again",
    )


class IdMoves:
    """With a natural key, a record can arrive under an ``_id`` another record of this database
    already has. Only changed records can bring such an ``_id`` (the database's own are unique),
    so only they are remembered: memory grows with the changes, not the collection."""

    def __init__(self) -> None:
        self.arriving: set[bytes] = set()
        self.leaving: set[bytes] = set()

    def see(self, decision: Decision) -> None:
        ours_id = _id_bytes(decision.ours) if decision.ours is not None else None
        result_id = _id_bytes(decision.result) if decision.result is not None else None
        if ours_id == result_id:
            return
        if ours_id is not None:
            self.leaving.add(ours_id)
        if result_id is not None:
            if result_id in self.arriving:
                raise _id_clash(result_id)
            self.arriving.add(result_id)

    def check(self, store: Store, collection: str) -> None:
        """Refuse before writing if an arriving ``_id`` belongs to a record that stays."""
        candidates = sorted(self.arriving - self.leaving)
        for start in range(0, len(candidates), BATCH):
            batch = [
                extjson.from_json_value(orjson.loads(i)) for i in candidates[start : start + BATCH]
            ]
            found = store.find_by_ids(collection, batch)
            if found:
                raise _id_clash(orjson.dumps(extjson.value_to_json(found[0]["_id"])))


def plan_collection(
    name: str,
    rules: Rules,
    base: SourceSection | None,
    ours: Path | Iterable[bytes],
    theirs: SourceSection,
    work: Path,
    backup: Path | None = None,
) -> CollectionPlan:
    """Decide every record, spool the writes and write the backup of what they change (into
    the folder ``backup``, else ``work``); nothing touches the database here. ``ours`` is the
    database's side: its key-sorted lines, or a snapshot file holding them."""
    ours_lines = _ours_lines(ours) if isinstance(ours, Path) else ours
    base_lines = base.lines() if base is not None else None
    folded: list[Decision] = []  # a key in two of the snapshot's part layouts: one version lost
    decisions = decide(base_lines, ours_lines, theirs.lines(folded.append), rules)
    plan = _planned(name, rules, decisions, theirs, work, backup)
    for decision in folded:
        plan.counts.conflicts_resolved += 1
        plan.counts.conflicts.append(conflict_entry(decision, rules.key))
    return plan


def _planned(
    name: str,
    rules: Rules,
    decisions: Iterable[Decision],
    theirs: SourceSection,
    work: Path,
    backup: Path | None,
) -> CollectionPlan:
    """The plan of these decisions (in key order): the writes spooled, their backup written."""
    counts = MergeCounts(conflicts=SpooledConflicts())
    plan = CollectionPlan(name, rules, counts, work / f"{name}.changes")
    plan.theirs = theirs
    plan.notes = RecordNotes(name, rules, "record(s) this merge writes")
    note = plan.notes.see_document if plan.notes.wanted else None
    moves = IdMoves() if rules.key != ("_id",) else None
    preimages = backups.collection_file(backup or work, name)
    writer = ChangeWriter(plan.spool, preimages, Header(name, rules))
    try:
        for decision in decisions:
            plan.counts.add(decision, rules.key)
            plan.makes_snapshot = plan.makes_snapshot and decision.result == decision.theirs
            if decision.changes_ours:
                if moves is not None:
                    moves.see(decision)
                writer.add(decision.ours, decision.result)
                if note is not None and decision.result is not None:
                    note(line_document(decision.result))
    finally:
        writer.close()
    plan.backup_bytes = writer.backup_bytes()
    plan.moves = moves
    return plan


def _same_records(files: CollectionFiles, *others: SourceSection | None) -> bool:
    """Whether each of ``others`` (a snapshot directory's section, verified before anything is
    written) holds the records of ``files`` in the same files, as their trailers state."""
    digest = files.digest()
    layout = [header.part for _, header in files.files]
    for other in others:
        if other is None:
            continue
        theirs = other.files
        if theirs is None or [header.part for _, header in theirs.files] != layout:
            return False
        if theirs.digest() != digest:
            return False
    return digest is not None


def sparse_plan(
    name: str,
    rules: Rules,
    base: SourceSection | None,
    changes: Changes | None,
    pulled: Pulled,
    theirs: SourceSection,
    synced: CollectionFiles,
    work: Path,
    backup: Path,
    progress: Progress | None = None,
) -> CollectionPlan:
    """The plan decided from the changed keys alone. ``synced`` is what this asset last
    synced, the files the database's change index was read against (``changes``: what the
    database changed since, None when it changed nothing) and the base, if any; ``pulled``,
    where the snapshot differs from it (``edges.pulled``). On any other key the three hold the
    same record: it is common, and only counted. The synced copy is walked only to pair the
    database's changes with it. Raises ``IndexMismatch`` as the indexed read does."""
    changed = pulled.rows
    if changes is None:
        database: Iterator[Row3] = iter(())
    else:
        keyed = bool(changed)
        database = changed_rows(synced_parts(synced, name), changes, name, rules.key, keyed)
    rows = _joined(database, changed, name) if changed else ((b, d, b) for _, d, b in database)
    seen = _Seen(rows, progress or NoProgress())
    if base is None:
        decisions: Iterator[Decision] = (decide_two_way(d, s, rules) for _, d, s in seen)
    else:  # the base is the synced copy: its line is the synced copy's on every key
        found = (decide_three_way(b, d, s, rules) for b, d, s in seen)
        decisions = (decision for decision in found if decision is not None)
    plan = _planned(name, rules, decisions, theirs, work, backup)
    plan.vouched = pulled.checks
    records = synced.records()
    if records is None:
        raise IndexMismatch(f"{name}: the synced copy has no trailer")
    kept = records - seen.synced  # the keys no side changed
    plan.counts.common += kept
    plan.counts.total += kept
    plan.ours_count = kept + seen.database
    return plan


def synced_parts(synced: CollectionFiles, name: str) -> list[Iterator[bytes]]:
    """The lines of each file of the synced copy: this asset's own, their hashes checked."""
    return [file_lines(path, name) for path in synced.paths]


def _joined(
    database: Iterable[Row3], pulled: list[PulledRow], name: str
) -> Iterator[tuple[bytes | None, bytes | None, bytes | None]]:
    """``(synced, database, snapshot)`` lines on every key the database or the snapshot
    changed, in key order: the database's rows (``changed_rows``, keyed) and the snapshot's
    (``pulled``) joined by key; a side that did not change a key has the synced line there."""
    rows = iter(pulled)
    following = next(rows, None)
    for key, ours, synced in database:
        while following is not None and following[0] < key:
            yield following[1], following[1], following[2]
            following = next(rows, None)
        if following is not None and following[0] == key:
            if following[1] != synced:
                raise IndexMismatch(f"{name}: the synced copy read twice differs")
            yield synced, ours, following[2]
            following = next(rows, None)
        else:
            yield synced, ours, synced
    while following is not None:
        yield following[1], following[1], following[2]
        following = next(rows, None)


class _Seen:
    """The rows passed through, counted (and told to ``progress``): how many the synced copy
    and the database hold."""

    def __init__(
        self, rows: Iterable[tuple[bytes | None, bytes | None, bytes | None]], progress: Progress
    ) -> None:
        self._rows = rows
        self._progress = progress
        self.synced = self.database = 0

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None, bytes | None]]:
        advance = self._progress.advance
        for row in self._rows:
            self.synced += row[0] is not None
            self.database += row[1] is not None
            advance()
            yield row


def _holds_snapshot(
    index: ChangeIndex, store: Store, name: str, rules: Rules, theirs: SourceSection
) -> bool:
    """Whether the database holds exactly the records of ``theirs`` (a snapshot directory's
    collection), as the change index tells without reading a document."""
    if theirs.files is None:
        return False
    return holds_exported(index, store, name, rules, theirs.files.digest())


def unchanged_plan(
    name: str, rules: Rules, theirs: SourceSection, work: Path, backup: Path
) -> CollectionPlan:
    """The plan of a collection the database already holds record for record: every record
    common, nothing to write (whatever the base: a record the same on both sides stays), and
    the backup of no change. The database is not read, nor the snapshot walked again (it was
    verified deeply)."""
    files = theirs.files
    records = files.records() if files is not None else None
    if records is None:
        raise InvalidInput(f"{theirs.path}: the snapshot of {name} has no trailer")
    counts = MergeCounts(common=records, total=records, conflicts=SpooledConflicts())
    plan = CollectionPlan(name, rules, counts, work / f"{name}.changes", ours_count=records)
    plan.theirs = theirs
    plan.notes = RecordNotes(name, rules, "record(s) this merge writes")
    writer = ChangeWriter(plan.spool, backups.collection_file(backup, name), Header(name, rules))
    writer.close()
    plan.backup_bytes = writer.backup_bytes()
    return plan


def check_delete_guard(plan: CollectionPlan, allow_deletes: bool) -> None:
    deleted = plan.counts.deleted
    if deletes_too_many(deleted, plan.ours_count) and not allow_deletes:
        raise TooManyDeletes(
            plan.name,
            f"{plan.name}: this merge would delete {deleted} of {plan.ours_count} records "
            f"({GUARD_RULE})",
            hint="check that the snapshot and the base are the right ones; "
            "pass --allow-deletes to apply it anyway (a backup is taken first)",
        )


def apply_plan(store: Store, plan: CollectionPlan, progress: Progress | None = None) -> None:
    """Every change by compare-and-set (one transaction on the embedded store); a record the
    application changed since it was read is decided again against its new version. The
    changes are told to ``progress`` as the store takes them."""
    progress = progress if progress is not None and plan.counts.writes else NoProgress()
    plan.touched = not store.atomic_changes  # a failure part-way leaves writes to undo
    progress.start(f"merge {plan.name}: write", plan.counts.writes)
    try:
        changes = _Applied(spooled_changes(plan.spool), progress)
        plan.applied = store.apply_changes(plan.name, changes, redecider(plan.rules))
    finally:
        progress.finish()
    plan.touched = True
    for conflict in plan.applied.conflicts:  # decided again against the application's version
        plan.counts.conflicts_resolved += 1
        plan.counts.conflicts.append(conflict)


def create_if_carried(store: Store, plan: CollectionPlan) -> None:
    """A collection the snapshot carries options for (capped) is created with them before its
    first record is written, where the database lacks it; a store that cannot (embedded) has
    plain collections only."""
    create = getattr(store, "create_collection", None)
    if plan.theirs is None or create is None or not plan.counts.writes:
        return
    options = read_options(plan.theirs.path.parent, plan.name)
    if options:
        create(plan.name, options)


def _redecided_note(plan: CollectionPlan) -> list[str]:
    applied = plan.applied
    if applied is None or not applied.redecided:
        return []
    return [
        f"{plan.name}: {applied.redecided} record(s) changed by the application during the "
        f"merge were decided again against their new version ({applied.left} kept as the "
        f"application wrote them{kept_ids(applied)})"
    ]


def kept_ids(counts: ChangeCounts) -> str:
    """``: _id 1, 2, 3`` for the records an apply left as the application wrote them."""
    if not counts.kept:
        return ""
    shown = ", ".join(describe_id(value) for value in counts.kept)
    more = f" and {counts.left - len(counts.kept)} more" if counts.left > len(counts.kept) else ""
    return f": _id {shown}{more}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _select(
    sections: dict[str, SourceSection], config: Config, wanted: Sequence[str] | None
) -> list[str]:
    if wanted:
        unknown = [name for name in wanted if name not in sections]
        if unknown:
            raise UsageError(
                f"the snapshot holds no collection {', '.join(unknown)}",
                hint=f"it holds: {', '.join(sorted(sections)) or '(nothing)'}",
            )
        return list(dict.fromkeys(wanted))
    return [name for name in sorted(sections) if not config.excluded(name)]


def resolve_resume(
    config: Config, path: Path | None, options: MergeOptions, resume: bool
) -> tuple[Path, MergeOptions]:
    """What ``merge`` merges: PATH, or with ``--resume`` the interrupted merge again.

    Resuming merges the interrupted run's snapshot into the database as it is now. Each
    collection's changes were made whole or not at all (one transaction on the embedded store,
    compare-and-set on MongoDB), and merging again is idempotent, so this finishes the run
    without undoing the application's writes made since; its backup stays for ``restore``.
    """
    if not resume:
        if path is None:
            raise UsageError("give the snapshot to merge", hint="dbsync merge database_backup")
        return path, options
    if path is not None:
        raise UsageError("--resume takes no PATH: it merges the interrupted run's snapshot")
    entry = journal.interrupted_merge(config)
    assert entry.source is not None
    base = Path(entry.base) if entry.base and Path(entry.base).exists() else None
    resumed = replace(options, base=base, collections=entry.collections)
    return Path(entry.source), resumed


def merge_snapshot(
    config: Config,
    store: Store,
    source: Path,
    options: MergeOptions | None = None,
    progress: Progress | None = None,
) -> MergeReport:
    """Merge ``source`` (a snapshot file, bundle or directory) into the database."""
    options = options or MergeOptions()
    progress = progress or NoProgress()
    theirs = index_sections(source, verify_as_read=True)  # verified by the walk: one pass
    bases = _index_base(config, options.base)
    names = _select(theirs, config, options.collections)
    for name in sorted(set(theirs) - set(names)):  # not walked: verified all the same
        theirs[name].verify()
    started = _now()
    report = MergeReport(
        SUCCESS,
        started.isoformat(timespec="seconds"),
        config.asset,
        str(source),
        str(options.base) if options.base else None,
        merge_driver=options.merge_driver,
    )
    rules = {name: _rules_for(config, theirs[name]) for name in names}
    with scratch_folder("merge") as scratch:
        work = Path(scratch)
        folder = work / "backup" if options.dry_run else _start_backup(config, report)
        try:
            plans = _plan_all(
                store,
                names,
                rules,
                bases,
                theirs,
                folder,
                work,
                options,
                progress,
                config.state_dir,
            )
            if not options.dry_run:
                backups.check_free_space(folder.parent, sum(p.backup_bytes for p in plans.values()))
        except BaseException:
            if not options.dry_run:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        for name, plan in plans.items():
            report.collections[name] = plan.counts
            report.notes += plan.notes.messages() if plan.notes else []
            report.notes += tie_break_notes(name, plan.rules, plan.counts)
        if options.dry_run:
            report.status = DRY_RUN
            return report
        info = backups.BackupInfo(
            report.backup or "", report.time, names, f"merge {source}", backups.CHANGES
        )
        backups.write_meta(folder, info)
        _apply_all(store, plans, folder, report, config, (source, options.base), progress)
        for plan in plans.values():
            report.notes += _redecided_note(plan)
        if is_tracked_snapshot(config.snapshot_dir, source):
            _learn_merged(config, plans)
    if is_tracked_snapshot(config.snapshot_dir, source):
        _save_synced(config, plans, options.commit)
    write_report_files(config, report, started, options.place)
    return report


def _index_base(config: Config, base: Path | None) -> dict[str, SourceSection]:
    """The base's sections. The synced copy is this asset's own: verified as it is read, if
    it is read (a merge from the changed keys reads only what it pairs with a change); any
    other base is verified before anything."""
    if base is None:
        return {}
    own = base.resolve() == synced_dir(config.state_dir).resolve()
    return index_sections(base, verify_as_read=own)


def _start_backup(config: Config, report: MergeReport) -> Path:
    """The backup's folder; it counts as a backup once ``backup.json`` is written in it."""
    report.backup = backups.new_backup_id()
    folder = backups.backup_folder(config.state_dir, report.backup)
    folder.mkdir(parents=True)
    return folder


def _plan_all(
    store: Store,
    names: list[str],
    rules: dict[str, Rules],
    bases: dict[str, SourceSection],
    theirs: dict[str, SourceSection],
    folder: Path,
    work: Path,
    options: MergeOptions,
    progress: Progress,
    state_dir: Path | None = None,
) -> dict[str, CollectionPlan]:
    """Every collection's plan; with ``state_dir``, the database's side is read through the
    change index and the synced copy kept there."""
    folder.mkdir(parents=True, exist_ok=True)
    plans = {}
    index = ChangeIndex.open_read_only(state_dir) if state_dir is not None else None
    synced = collection_files(synced_dir(state_dir)) if state_dir and index else {}
    records = state_dir / RECORDS if state_dir is not None else None
    try:
        for name in names:
            plans[name] = _plan_one(
                store,
                name,
                rules[name],
                bases,
                theirs,
                folder,
                work,
                progress,
                (index, synced.get(name), records),
            )
    finally:
        if index is not None:
            index.close()
    for plan in plans.values():  # after every walk: a damaged snapshot is refused first
        check_guards(store, plan, options.allow_deletes)
    return plans


def _plan_one(
    store: Store,
    name: str,
    rules: Rules,
    bases: dict[str, SourceSection],
    theirs: dict[str, SourceSection],
    folder: Path,
    work: Path,
    progress: Progress,
    indexed: tuple[ChangeIndex | None, CollectionFiles | None, Path | None],
) -> CollectionPlan:
    """One collection's plan. The database's side comes through the change index when it
    serves (only changed documents are encoded), else from every document encoded. The
    reads and the walk show their progress as this collection's merge."""
    index, files, records = indexed
    progress = _Merging(progress, name)
    if index is not None and _holds_snapshot(index, store, name, rules, theirs[name]):
        theirs[name].verify()  # not walked: verified before its digest is trusted
        return unchanged_plan(name, rules, theirs[name], work, folder)
    clashes = KeyClashes(rules.key)
    lines = None
    base = bases.get(name)
    if index is not None and files is not None and _same_records(files, base):
        try:
            return _sparse(
                index,
                store,
                name,
                rules,
                base,
                theirs[name],
                files,
                work,
                folder,
                records,
                progress,
            )
        except CannotVouch:
            pass  # the snapshot read in full; the database's side still through the index
        except IndexMismatch:
            index = None  # the database read in full too
    if index is not None:
        lines = indexed_collection_lines(index, store, name, rules, files, progress)
    if lines is not None:
        ours = _Counted(lines, progress)
        progress.start(name, files.records() if files is not None else None)
        try:
            plan = plan_collection(name, rules, base, ours, theirs[name], work, folder)
        except IndexMismatch:
            lines = None
        finally:
            progress.finish()
    if lines is None:
        ours = _Counted(unique_lines(collection_lines(store, name, rules, progress), clashes))
        plan = plan_collection(name, rules, base, ours, theirs[name], work, folder)
    if clashes.groups:  # set aside while streaming; refused before anything is written
        raise InvalidInput(
            clashes.message(name) + "\nthe database already holds these duplicates",
            hint="fix the records or choose another key in dbsync.toml; nothing was written",
        )
    plan.ours_count = ours.count
    return plan


def _sparse(
    index: ChangeIndex,
    store: Store,
    name: str,
    rules: Rules,
    base: SourceSection | None,
    theirs: SourceSection,
    synced: CollectionFiles,
    work: Path,
    folder: Path,
    records: Path | None,
    progress: Progress,
) -> CollectionPlan:
    """``sparse_plan`` of a snapshot folder's collection: where it differs from the synced
    copy (``pulled_rows``), and what the database changed since (nothing, when it holds
    exactly the synced copy). Raises ``CannotVouch`` or ``IndexMismatch`` when it cannot."""
    if theirs.files is None:
        raise CannotVouch("not a snapshot folder")
    pulled = pulled_rows(theirs.files, synced, records)
    changes, indexed = None, None
    if holds_exported(index, store, name, rules, synced.digest()):
        indexed = index.recorded(name)
    else:
        changes = indexed_changes(index, store, name, rules, synced, progress)
        if changes is None:
            raise IndexMismatch(f"{name}: the change index does not serve")
    progress.start(name, len(pulled.rows) if changes is None else None)
    try:
        plan = sparse_plan(
            name, rules, base, changes, pulled, theirs, synced, work, folder, progress
        )
    finally:
        progress.finish()
    plan.indexed = indexed
    return plan


def check_guards(store: Store, plan: CollectionPlan, allow_deletes: bool) -> None:
    """The safety guards of one plan (exit 5), and the ``_id`` clashes it would make."""
    check_delete_guard(plan, allow_deletes)
    if plan.moves is not None:
        plan.moves.check(store, plan.name)


def _apply_all(
    store: Store,
    plans: dict[str, CollectionPlan],
    folder: Path,
    report: MergeReport,
    config: Config,
    paths: tuple[Path, Path | None],
    progress: Progress | None = None,
) -> None:
    """Apply every plan, journaled: a kill leaves an interrupted merge that every later command
    sees; a failure rolls back what was written, and leaves the journal entry only if that
    fails too."""
    names = list(plans)
    source, base = (str(path.resolve()) if path else None for path in paths)
    entry = journal.begin(
        config.state_dir, journal.MERGE, names, backup=report.backup, source=source, base=base
    )
    try:
        for plan in plans.values():
            create_if_carried(store, plan)
            apply_plan(store, plan, progress)
    except BaseException as error:
        touched = [plan.name for plan in plans.values() if plan.touched]
        report.status = FAILED
        undone, outcome = _roll_back(store, folder, touched, report)
        report.error = f"{type(error).__name__}: {error}; {outcome}"
        write_report_files(config, report, _now())
        if undone:
            journal.finish(config.state_dir, entry, [])
        raise
    journal.finish(config.state_dir, entry, names)


def _roll_back(
    store: Store, folder: Path, touched: list[str], report: MergeReport
) -> tuple[bool, str]:
    """Put the touched collections back; whether that worked, and what happened."""
    if not touched:
        return True, "nothing had been written"
    try:
        undone = backups.restore_collections(store, folder, touched)
    except DbsyncError as failure:
        return False, (
            f"restoring {', '.join(touched)} failed too ({failure.message}): "
            f"run 'dbsync restore {report.backup}' when the database is back"
        )
    kept = [
        f"{name}: {counts.left} record(s) the application changed since kept as it wrote "
        f"them{kept_ids(counts)}"
        for name, counts in undone.items()
        if counts.left
    ]
    outcome = f"restored {', '.join(touched)} from backup {report.backup}"
    return True, "; ".join([outcome, *kept])


def _learn_merged(config: Config, plans: dict[str, CollectionPlan]) -> None:
    """The change index learns the records a merge wrote where the database now holds the
    snapshot merged, record for record (``learn_merged``): ``status`` then knows that it
    does, and the next export reads only what the merge wrote."""
    learnt = [(plan, known) for plan in plans.values() if (known := _learnable(plan))]
    if not learnt:
        return
    index = ChangeIndex.open(config.state_dir)
    try:
        for plan, (seen, digest) in learnt:
            written = partial(spooled_pairs, plan.spool)
            learn_merged(index, plan.name, plan.rules, written, seen, digest)
    finally:
        index.close()


def _learnable(plan: CollectionPlan) -> tuple[Recorded, str] | None:
    """The index's record the plan read the database as, and the digest of the snapshot the
    database now holds; None where the index cannot learn the merge: the database was read
    otherwise, keeps records of its own (the snapshot lacks them: ``status`` says to export
    them), or the application wrote during the merge (records decided again)."""
    files = plan.theirs.files if plan.theirs is not None else None
    digest = files.digest() if files is not None else None
    applied = plan.applied
    if plan.indexed is None or digest is None or applied is None or applied.redecided:
        return None
    return (plan.indexed, digest) if plan.makes_snapshot else None


def _save_synced(config: Config, plans: dict[str, CollectionPlan], commit: str | None) -> None:
    """The merged snapshot's collections as last synced; one whose synced copy already holds
    these records (a merge with nothing new) is not copied again."""
    kept = collection_files(synced_dir(config.state_dir))

    def copied_already(theirs: SourceSection) -> bool:
        files, synced = theirs.files, kept.get(theirs.header.collection)
        if files is None or synced is None:
            return False
        digest = files.digest()
        return digest is not None and synced.digest() == digest

    sections = [
        section
        for plan in plans.values()
        if plan.theirs and not copied_already(plan.theirs)
        for section in _parts(plan)
    ]
    save_synced(config.state_dir, sections, commit)


def _parts(plan: CollectionPlan) -> Iterable[tuple[Header, Iterable[bytes]]]:
    """The snapshot's sections of a plan's collection, as the plan checked them."""
    assert plan.theirs is not None
    files = plan.theirs.files
    if plan.vouched is None or files is None:
        return plan.theirs.parts()
    return [
        (header, VouchedFile(path, check))
        for (path, header), check in zip(files.files, plan.vouched, strict=True)
    ]
