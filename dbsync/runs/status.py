"""``dbsync status``: HEALTHY, WARNING or DEGRADED, with reasons that say what to run.

The status is built from independent checks (``CHECKS``): each looks at one thing and returns
its reasons; the status is the worst level among them. A new check (say, hooks not installed)
is one function appended to ``CHECKS``. ``status`` only reads: it takes no lock, creates no
file, retries no pending merge, and gives the database a short budget to answer.

It never reads the whole database either (the agent's ``/status`` polls it): whether the
database moved since its last export is told by the store's cheap fingerprint recorded by that
export in the change index (the embedded store's file figures; on a MongoDB replica set, a
change stream resume token: any event since means it moved). Reading and
encoding every document, as an export would, is ``status --deep``, and what a plain status
falls back to when nothing was recorded (no export yet, or a store without fingerprints).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dbsync.config import Config
from dbsync.core.asset_names import COMMITS_LOOKED_AT, Commit, namesakes
from dbsync.edges import git, journal
from dbsync.edges import installer as hooks
from dbsync.edges.backups import list_backups
from dbsync.edges.change_index import ChangeIndex, moved_since_export
from dbsync.edges.embedded import DamagedStore
from dbsync.edges.parts import collection_files
from dbsync.edges.state import (
    INTERRUPTED,
    NO_SPACE,
    HistoryEntry,
    StateStore,
    open_state_read_only,
)
from dbsync.edges.store import EMBEDDED_SCHEME, RetryPolicy, Store
from dbsync.edges.stores import embedded_path, open_store
from dbsync.edges.sync_log import FAILED, LOSING_FIX, losing_streak, recent_cycles
from dbsync.edges.synced import load_synced
from dbsync.errors import (
    DatabaseUnreachable,
    DbsyncError,
    InvalidInput,
    free_bytes,
    full_disk_error,
)
from dbsync.runs import git_state
from dbsync.runs.export import current_summary, snapshot_collections
from dbsync.runs.recording import MERGE_MARGIN_BYTES, size_text

HEALTHY, WARNING, DEGRADED = "HEALTHY", "WARNING", "DEGRADED"
_SEVERITY = {HEALTHY: 0, WARNING: 1, DEGRADED: 2}
FAILURES_DEGRADED = 3
"""Consecutive failures of one collection's export or merge that make the asset DEGRADED."""
PING_BUDGET_SECONDS = 1.0
"""How long ``status`` retries the database: a health check must answer quickly."""


@dataclass(frozen=True)
class Reason:
    level: str
    check: str
    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {"level": self.level, "check": self.check, "message": self.message, "fix": self.fix}


@dataclass
class StatusContext:
    """What the checks look at, opened once: the config, the state, the database."""

    config: Config
    state: StateStore | None = None
    state_error: DbsyncError | None = None
    database_error: DbsyncError | None = None
    _store: Store | None = field(default=None, repr=False)
    deep: bool = False
    """Compare every record, as an export would (``status --deep``)."""
    index: ChangeIndex | None = None

    @property
    def store(self) -> Store | None:
        """The database, or None when it could not be reached (``database_error`` says why)."""
        return self._store


Check = Callable[[StatusContext], list[Reason]]


def _open_store_read_only(config: Config) -> Store:
    """The store, pinged with a short budget; an embedded store that is gone is not created."""
    uri, database = config.require_database()
    if uri.startswith(EMBEDDED_SCHEME) and not embedded_path(uri).is_dir():
        raise DatabaseUnreachable(
            f"the embedded store {embedded_path(uri)} does not exist",
            hint="check --uri / DBSYNC_URI / dbsync.local.toml; a new store starts empty",
        )
    store = open_store(uri, database, retry=RetryPolicy(budget_seconds=PING_BUDGET_SECONDS))
    try:
        store.ping()
    except BaseException:
        store.close()
        raise
    return store


@contextmanager
def status_context(config: Config, *, deep: bool = False) -> Iterator[StatusContext]:
    context = StatusContext(config, deep=deep)
    context.index = ChangeIndex.open_read_only(config.state_dir)
    try:
        context.state = open_state_read_only(config.state_dir)
    except DbsyncError as error:
        context.state_error = error
    try:
        context._store = _open_store_read_only(config)
    except DbsyncError as error:
        context.database_error = error
    try:
        yield context
    finally:
        if context.state is not None:
            context.state.close()
        if context._store is not None:
            context._store.close()
        if context.index is not None:
            context.index.close()


# ---------------------------------------------------------------- checks


def check_database(context: StatusContext) -> list[Reason]:
    """DEGRADED when the database does not answer: nothing can be merged or exported."""
    error = context.database_error
    if error is None:
        return []
    fix = error.hint or "start the database or fix --uri / DBSYNC_URI, then run 'dbsync status'"
    return [Reason(DEGRADED, "database", f"database unreachable: {error.message}", fix)]


def check_state_store(context: StatusContext) -> list[Reason]:
    """DEGRADED when the state cannot be read: history and pending merges are unknown."""
    error = context.state_error
    if error is None:
        return []
    return [Reason(DEGRADED, "state", error.message, error.hint or "")]


def _rerun(config: Config, operation: str) -> str:
    folder = config.snapshot_dir.name
    commands = {
        "export": "dbsync export",
        "merge": f"dbsync merge {folder}",
        "import": "dbsync import FILE --collection NAME",
        "restore": "dbsync restore ID",
    }
    return commands.get(operation, f"dbsync {operation}")


def check_consecutive_failures(context: StatusContext) -> list[Reason]:
    """DEGRADED when a collection's export or merge failed 3 times or more in a row."""
    if context.state is None:
        return []
    reasons = []
    for row in context.state.collection_states():
        if row.consecutive_failures >= FAILURES_DEGRADED:
            message = (
                f"{row.collection}: the last {row.consecutive_failures} {row.operation} "
                f"attempts failed (last: {row.last_error})"
            )
            fix = (
                f"see 'dbsync history'; fix the cause, then run "
                f"'{_rerun(context.config, row.operation)}'"
            )
            reasons.append(Reason(DEGRADED, "failures", message, fix))
    return reasons


def check_pending_merges(context: StatusContext) -> list[Reason]:
    """WARNING for each merge that could not reach the database and waits to be retried."""
    if context.state is None:
        return []
    reasons = []
    for pending in context.state.list_pending():
        where = f" (commit {pending.commit[:12]})" if pending.commit else ""
        last = f"; last error: {pending.last_error}" if pending.last_error else ""
        message = (
            f"a merge of {pending.source}{where} is pending since {pending.created} "
            f"({pending.attempts} attempts{last})"
        )
        base = f" --base {pending.base}" if pending.base else ""
        fix = f"run 'dbsync merge {pending.source}{base}'"
        if pending.commit:
            fix += " (three-way against the base the pull's merge had, deletions included)"
        reasons.append(Reason(WARNING, "pending", message, fix))
    return reasons


def _backup_after(config: Config, started: str) -> str | None:
    """The oldest complete backup taken after ``started``: the one a killed merge made."""
    moment = datetime.datetime.fromisoformat(started).replace(microsecond=0)
    later = [
        info.id
        for info in list_backups(config.state_dir)
        if datetime.datetime.fromisoformat(info.created) >= moment
    ]
    return later[-1] if later else None


def _interrupted(config: Config, run: HistoryEntry) -> Reason:
    """What a killed run left behind, and what puts it right."""
    operation, started = run.operation, run.time
    if operation == "export":
        message = f"the export started at {started} was interrupted; snapshots are written "
        return Reason(
            WARNING,
            "interrupted",
            message + "atomically, so the old ones are intact",
            "run 'dbsync export' again",
        )
    backup = _backup_after(config, started) if operation in ("merge", "restore") else None
    if operation == "merge" and backup is None:
        message = f"the merge started at {started} was interrupted before it changed the "
        return Reason(
            WARNING,
            "interrupted",
            message + "database (its backup was not complete)",
            f"run '{_rerun(config, operation)}' again",
        )
    message = f"the {operation} started at {started} was interrupted: the database may be partly "
    message += "changed"
    fix = f"run '{_rerun(config, operation)}' again"
    if backup is not None:
        fix = f"run 'dbsync restore {backup}' to put it back exactly as before, or {fix[4:]}"
    return Reason(DEGRADED, "interrupted", message, fix)


def check_interrupted_runs(context: StatusContext) -> list[Reason]:
    """A run killed mid-way (power cut, SIGKILL) that no later run of its kind has replaced.

    A merge or restore that started writing is in the journal until it finishes: those are
    DEGRADED (nothing exports over them); the history tells of the runs killed before that.
    """
    if context.state is None:
        return []
    journaled = context.state.interrupted_runs()
    reasons = [
        Reason(DEGRADED, "interrupted", journal.describe(entry), journal.recovery(entry))
        for entry in journaled
    ]
    for operation, cures in _CURES.items():
        if journaled and operation in (journal.MERGE, journal.RESTORE):
            continue
        run = context.state.last_run(operation)
        if run is None or run.status != INTERRUPTED:
            continue
        if not context.state.succeeded_since(run.time, cures):
            reasons.append(_interrupted(context.config, run))
    return reasons


_CURES = {
    "export": ("export",),
    "merge": ("merge", "restore"),
    "import": ("import", "restore"),
    "restore": ("restore",),
}
"""The runs whose later success makes a killed run harmless (a restore undoes a half merge)."""


def _known_digests(context: StatusContext, name: str) -> set[str]:
    """Digests of snapshots this asset wrote (export) or merged: a file with one of them on
    disk came from here, so a difference with the database is a local change."""
    digests = set()
    synced = load_synced(context.config.state_dir)
    if synced is not None and name in synced.digests:
        digests.add(synced.digests[name])
    if context.state is not None:
        for row in context.state.collection_states():
            if row.collection == name and row.last_digest:
                digests.add(row.last_digest)
    return digests


_MOVED = "moved"


def _recorded_digest(context: StatusContext, store: Store, name: str) -> str | None:
    """The digest the database would export now, from the last export's record: that digest
    if the database's fingerprint has not moved since, ``_MOVED`` if it has; None when this
    cannot be told cheaply (then every record is compared)."""
    if context.deep or context.index is None:
        return None
    found = moved_since_export(context.index, store, name, context.config.rules(name))
    if found is None:
        return None
    moved, digest = found
    return _MOVED if moved else digest


def _merged_since_export(context: StatusContext, name: str) -> bool:
    times: dict[str, str] = {
        row.operation: row.last_success
        for row in (context.state.collection_states() if context.state else [])
        if row.collection == name and row.last_success
    }
    merged, exported = times.get("merge"), times.get("export")
    return merged is not None and (exported is None or merged >= exported)


def _moved(context: StatusContext, name: str, on_disk: str | None) -> Reason:
    """The database changed since its last export, as its fingerprint says."""
    known = _known_digests(context, name)
    if on_disk is not None and known and on_disk not in known:
        message = f"{name}: the snapshot holds changes that are not merged into the database"
        return Reason(
            WARNING, "snapshot", message, f"run 'dbsync merge {context.config.snapshot_dir.name}'"
        )
    if _merged_since_export(context, name):
        message = (
            f"{name}: the database changed since its last export (a merge, maybe local "
            "writes); 'dbsync status --deep' compares every record"
        )
        return Reason(WARNING, "snapshot", message, "run 'dbsync export'")
    message = f"{name}: the database has changes that are not in the snapshot (not exported)"
    return Reason(WARNING, "snapshot", message, "run 'dbsync export'")


def _compare(context: StatusContext, store: Store, name: str) -> Reason | None:
    config = context.config
    if config.excluded(name):
        return None
    files = collection_files(config.snapshot_dir).get(name)
    on_disk = files.digest() if files is not None else None
    if on_disk is None and not context.deep:
        count = store.count(name)
        if count == 0:
            return None
        message = f"{name}: {count} records were never exported"
        return Reason(WARNING, "snapshot", message, "run 'dbsync export'")
    try:
        recorded = _recorded_digest(context, store, name) if on_disk is not None else None
    except DbsyncError as error:  # the store's change log unreadable: status still answers
        return _unreadable(context, name, error)
    if recorded == _MOVED:
        return _moved(context, name, on_disk)
    if recorded is not None:
        return None if recorded == on_disk else _differs(context, name, on_disk)
    try:
        current = current_summary(store, name, config.rules(name), files.count if files else 1)
    except DamagedStore as error:
        return Reason(DEGRADED, "database", error.message, error.hint or "")
    except InvalidInput:
        message = f"{name}: the key {list(config.rules(name).key)} is not unique in the database"
        return Reason(WARNING, "snapshot", message, "run 'dbsync export' to list the clashes")
    except DbsyncError as error:  # the store failing mid-read: status still answers
        return Reason(DEGRADED, "database", f"{name}: {error.message}", error.hint or "")
    if on_disk == current.digest or (on_disk is None and current.count == 0):
        return None
    if on_disk is None:
        message = f"{name}: {current.count} records were never exported"
        return Reason(WARNING, "snapshot", message, "run 'dbsync export'")
    return _differs(context, name, on_disk)


def _unreadable(context: StatusContext, name: str, error: DbsyncError) -> Reason:
    """The database could not be read for ``name``: a full disk (SQLite cannot even open a
    file it only reads when it cannot grow its shared memory) says so, not that the store is
    damaged."""
    root = context.config.root
    if full_disk_error(error, root) is not None:
        message = f"{name}: the database cannot be read while the disk is full ({error.message})"
        return Reason(DEGRADED, "disk", message, f"free space on the disk of {root}")
    return Reason(DEGRADED, "database", f"{name}: {error.message}", error.hint or "")


def _differs(context: StatusContext, name: str, on_disk: str | None) -> Reason:
    """The database holds other records than the snapshot: which side moved."""
    config = context.config
    known = _known_digests(context, name)
    folder = config.snapshot_dir.name
    if on_disk in known:
        message = f"{name}: the database has changes that are not in the snapshot (not exported)"
        return Reason(WARNING, "snapshot", message, "run 'dbsync export'")
    if known:
        message = f"{name}: the snapshot holds changes that are not merged into the database"
        return Reason(WARNING, "snapshot", message, f"run 'dbsync merge {folder}'")
    message = f"{name}: the database and the snapshot differ (this asset has no record of "
    fix = f"run 'dbsync diff {folder} db' to see how; then 'dbsync export' keeps the database's "
    fix += f"records, 'dbsync merge {folder}' takes in the snapshot's"
    return Reason(WARNING, "snapshot", message + "exporting or merging this snapshot)", fix)


def check_snapshot_matches_database(context: StatusContext) -> list[Reason]:
    """WARNING when a snapshot and the database differ: local changes not exported, or pulled
    changes not merged (told apart by the digests this asset exported or merged last)."""
    store = context.store
    if store is None:
        return []
    config = context.config
    names = set(store.collection_names()) | set(snapshot_collections(config.snapshot_dir))
    compared = (_compare(context, store, name) for name in sorted(names))
    return [reason for reason in compared if reason is not None]


def check_git_setup(context: StatusContext) -> list[Reason]:
    """WARNING on a clone where the hooks or the drivers are missing: git does not version its
    config, so a fresh clone has neither until ``dbsync init`` runs there. Without the merge
    driver, concurrent snapshots conflict on their trailers; without hooks, nothing exports
    before a push or merges after a pull."""
    root = git.toplevel(context.config.root)
    if root is None:
        return []
    setup = hooks.git_setup(root, context.config.snapshot_dir)
    reasons = []
    missing = [hook.name for hook in setup.hooks if hook.state != hooks.INSTALLED]
    if missing:
        message = f"git hooks not installed here: {', '.join(missing)}"
        reasons.append(Reason(WARNING, "git", message, "run 'dbsync hooks install'"))
    drivers = [
        name
        for name, present in (
            ("merge driver", setup.merge_driver),
            ("diff driver", setup.diff_driver),
            (".gitattributes lines", setup.attributes),
        )
        if not present
    ]
    if drivers:
        message = f"not configured in this clone: {', '.join(drivers)} (snapshots would conflict)"
        reasons.append(Reason(WARNING, "git", message, "run 'dbsync init' in this clone"))
    return reasons


def check_asset_name(context: StatusContext) -> list[Reason]:
    """WARNING when another clone signs its snapshot commits with this asset's name."""
    root = git.toplevel(context.config.root)
    if root is None:
        return []
    commits = [Commit(*fields) for fields in git.recent_commits(root, COMMITS_LOOKED_AT)]
    found = namesakes(context.config.asset, commits, git.reflog(root))
    if not found:
        return []
    message = (
        f"another asset also calls itself {context.config.asset!r}: {len(found)} snapshot "
        f"commit(s) not made in this clone (newest {found[0].sha[:10]})"
    )
    fix = 'give this asset its own name: asset = "..." in dbsync.local.toml (or DBSYNC_ASSET)'
    return [Reason(WARNING, "asset", message, fix)]


def check_pull_setting(context: StatusContext) -> list[Reason]:
    """WARNING on a clone where a plain ``git pull`` stops on divergent branches, as it does
    once two assets have each committed a snapshot (``dbsync init`` sets ``pull.rebase false``
    where nothing is set; an older clone, or a user's ``pull.ff=only``, may still stop)."""
    root = git.toplevel(context.config.root)
    why = hooks.pull_would_stop(root) if root is not None else None
    if why is None:
        return []
    message = (
        f"a plain 'git pull' here stops on divergent branches ({why}), and two assets' "
        "snapshot commits diverge by design: the pull would not merge the other asset's "
        "snapshot"
    )
    fix = (
        "run 'git config pull.rebase false' (what 'dbsync init' sets where nothing is set), "
        "or pull with 'git pull --no-rebase --no-ff'; 'dbsync sync' pulls either way"
    )
    return [Reason(WARNING, "pull", message, fix)]


DISK_OPERATIONS = ("export", "merge", "import", "restore", "sync")


def check_full_disk_runs(context: StatusContext) -> list[Reason]:
    """DEGRADED while the newest run of an operation is one a full disk stopped and none of
    that operation has succeeded since: its error says what was and was not written."""
    state = context.state
    if state is None:
        return []
    reasons = []
    for operation in DISK_OPERATIONS:
        run = state.last_run(operation)
        if run is None or run.status != NO_SPACE or state.succeeded_since(run.time, [operation]):
            continue
        free = free_bytes(context.config.root)
        now = "" if free is None else f" ({size_text(free)} free now)"
        message = f"the {operation} of {run.time} stopped: {run.error}"
        fix = f"free space on the disk of {context.config.root}{now}, then run "
        reasons.append(
            Reason(DEGRADED, "disk", message, fix + f"'{_rerun(context.config, operation)}'")
        )
    return reasons


def check_free_space(context: StatusContext) -> list[Reason]:
    """WARNING when the project's disk has less room than any merge asks for (its guard keeps
    16 MiB beyond its backup): the next merge would be refused, the next export may fail."""
    free = free_bytes(context.config.root)
    if free is None or free >= MERGE_MARGIN_BYTES:
        return []
    message = (
        f"only {size_text(free)} free on the disk of {context.config.root}: a merge needs "
        f"{size_text(MERGE_MARGIN_BYTES)} beyond its backup, an export room for a new snapshot"
    )
    return [
        Reason(
            WARNING,
            "space",
            message,
            "free space on that disk ('dbsync prune' removes old backups and reports)",
        )
    ]


def check_sync_cycles(context: StatusContext) -> list[Reason]:
    """WARNING when the last sync cycle (``dbsync sync`` or the agent's) failed, DEGRADED when
    the last ``FAILURES_DEGRADED`` did: the asset no longer shares its changes nor receives
    the others', whatever every other check says."""
    cycles = recent_cycles(context.config.state_dir)
    failed = next((n for n, cycle in enumerate(cycles) if cycle.outcome != FAILED), len(cycles))
    if not failed:
        return []
    last = cycles[0]
    level = DEGRADED if failed >= FAILURES_DEGRADED else WARNING
    runs = "the last sync" if failed == 1 else f"the last {failed} syncs"
    message = f"{runs} (dbsync sync, or the agent's cycles) failed; the last at {last.time}: "
    fix = last.fix or "fix what git says (git status, git remote -v)"
    return [Reason(level, "sync", message + str(last.error), f"{fix}; then run 'dbsync sync'")]


def check_own_edits_losing(context: StatusContext) -> list[Reason]:
    """WARNING when this asset's own edits keep losing conflicts (its clock running behind,
    say): each sync decides them by the rules, and nothing else would tell."""
    streak = losing_streak(recent_cycles(context.config.state_dir))
    if streak is None:
        return []
    return [Reason(WARNING, "conflicts", streak.describe(), LOSING_FIX)]


def check_git_left_mid_operation(context: StatusContext) -> list[Reason]:
    """DEGRADED when git is left mid-operation — a merge or rebase under way, a lock file no
    process holds, a conflicted snapshot file — so that pulls, commits and syncs stop."""
    return [
        Reason(leftover.level, "git", leftover.message, leftover.fix)
        for leftover in git_state.leftovers(context.config)
    ]


def check_uncommitted_snapshot(context: StatusContext) -> list[Reason]:
    """WARNING when the snapshot folder has changes that are not committed on a branch that
    pulls from an upstream: a pull that brings snapshot changes stops on them. (Not while git
    is mid-merge: that is ``check_git_left_mid_operation``'s, with its own fix.)"""
    config = context.config
    root = git.toplevel(config.root)
    folder = config.snapshot_dir
    if root is None or not folder.is_dir() or git.rev_parse(root, "@{upstream}") is None:
        return []
    if git.operation_in_progress(root) is not None:
        return []
    relative = str(folder.relative_to(root)) if folder.is_relative_to(root) else None
    changed = git.changed_paths(root, relative) if relative is not None else []
    if not changed:
        return []
    message = f"{relative} has changes that are not committed: a git pull that brings snapshot "
    message += "changes stops on them"
    if git_state.own_uncommitted_snapshot(config, changed):
        fix = "run 'dbsync sync' (it commits this asset's export, pulls and pushes)"
    else:
        fix = f"look at them ('git status {relative}'), then commit them or drop them "
        fix += f"('git checkout -- {relative}'); then run 'dbsync sync'"
    return [Reason(WARNING, "git", message, fix)]


CHECKS: list[Check] = [
    check_database,
    check_state_store,
    check_consecutive_failures,
    check_interrupted_runs,
    check_pending_merges,
    check_snapshot_matches_database,
    check_git_setup,
    check_asset_name,
    check_pull_setting,
    check_full_disk_runs,
    check_free_space,
    check_sync_cycles,
    check_own_edits_losing,
    check_git_left_mid_operation,
    check_uncommitted_snapshot,
]


# ---------------------------------------------------------------- the document


def _last(context: StatusContext, name: str, operation: str) -> dict[str, Any] | None:
    if context.state is None:
        return None
    for row in context.state.collection_states():
        if row.collection == name and row.operation == operation and row.last_success:
            return {
                "time": row.last_success,
                "records": row.last_records,
                "duration_ms": row.last_duration_ms,
                "consecutive_failures": row.consecutive_failures,
            }
    return None


def _collections(context: StatusContext) -> dict[str, Any]:
    """Per collection the state knows: its last successful export and merge."""
    rows = context.state.collection_states() if context.state else []
    return {
        name: {f"last_{op}": _last(context, name, op) for op in ("export", "merge")}
        for name in sorted({row.collection for row in rows})
    }


def health(
    config: Config, checks: list[Check] | None = None, *, deep: bool = False
) -> dict[str, Any]:
    """The ``status --json`` document: status, reasons, and what the state knows; ``deep``
    compares every record of the database with the snapshot (as an export would)."""
    with status_context(config, deep=deep) as context:
        reasons = [reason for check in checks or CHECKS for reason in check(context)]
        pending = context.state.list_pending() if context.state else []
        document = {
            "status": max((r.level for r in reasons), key=_SEVERITY.__getitem__, default=HEALTHY),
            "reasons": [reason.to_json() for reason in reasons],
            "database": config.database,
            "asset": config.asset,
            "collections": _collections(context),
            "pending_merges": [
                {"id": p.id, "source": p.source, "created": p.created, "attempts": p.attempts}
                for p in pending
            ],
        }
    return document
