"""The one pipeline for a run that changes the database or the snapshot.

Such a run starts in one of four places: a command (``dbsync.cli``), a git hook
(``dbsync.integration.hook_runs``), ``dbsync sync`` (``dbsync.runs.sync``) or the agent
(``dbsync.agent.schedule``). All four go through ``changing_run``, so a rule written here holds
for every one of them:

1. the asset's lock (``dbsync.edges.lock``); a run its holder started (a git hook fired by the
   holder's git command) goes on as part of the holder's run instead of waiting for it;
2. a row in the history (``dbsync.runs.recording``), failures included;
3. the pending merges retried first (PRODUCT.md §5): exporting over an unmerged pull would erase
   it; each is a pull's merge (``dbsync.runs.pulled``), recorded as a merge run of its own;
4. the operation, with the store opened as a context manager when it needs one;
5. after a successful merge (the run's own, or a retried pending one): the merged source is no
   longer pending, and old backups and reports are pruned.

The runs that are more than one call are here too: ``pulled_run`` (the merge after a pull),
``merge_run`` (``dbsync merge``), ``retry_run`` (the agent's retry of one pending merge) and
``prune_run``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dbsync.config import Config
from dbsync.core.report import SUCCESS, MergeReport
from dbsync.edges.lock import run_lock
from dbsync.edges.sources import require_snapshot
from dbsync.edges.store import Store
from dbsync.edges.synced import is_tracked_snapshot
from dbsync.progress import NoProgress, Progress
from dbsync.runs import prune as prune_service
from dbsync.runs import pulled
from dbsync.runs.common import open_configured_store
from dbsync.runs.merge import MergeOptions, merge_snapshot, resolve_resume
from dbsync.runs.pending import resolve_pending, waiting_merges
from dbsync.runs.recording import RunRecord, record_report, recorded_run

Say = Callable[[str], None]


@dataclass
class ChangingRun:
    """One changing run under way: its history record, and whether anything merged yet."""

    config: Config
    record: RunRecord
    merged: bool = False

    def done(self, collection: str, records: int | None, digest: str | None = None) -> None:
        """How one collection fared, for the history."""
        self.record.done(collection, records, digest)

    @property
    def nested(self) -> bool:
        """True when the run goes on under a parent dbsync run's lock."""
        return self.record.nested

    def merge(
        self,
        store: Store,
        source: Path,
        options: MergeOptions,
        progress: Progress | None = None,
    ) -> MergeReport:
        """Merge ``source`` into the database as this run's operation, and record it; once it
        succeeded, nothing about ``source`` is pending any more (the one success clean-up)."""
        report = merge_snapshot(self.config, store, source, options, progress or NoProgress())
        record_report(self.record, report)
        if report.status == SUCCESS:
            resolve_pending(self.config, source)
            self.merged = True
        return report


@contextlib.contextmanager
def changing_run(
    config: Config,
    operation: str,
    *,
    say: Say,
    warn: Say,
    collections: Sequence[str] = (),
    merging: Path | None = None,
) -> Iterator[ChangingRun]:
    """Run the block as one changing run (steps 1-5 of the module docstring).

    ``merging``: the source the block merges; when it is the snapshot folder, its own pending
    entry is not retried first as well (the block's merge settles it).
    Nothing after the block runs when it raises: a failed merge prunes nothing.
    """
    with (
        run_lock(config.state_dir, operation, timeout=config.lock_timeout) as holder,
        recorded_run(config, operation, collections=collections, warn=warn) as record,
    ):
        record.nested = holder is None
        run = ChangingRun(config, record)
        settled_here = (
            merging if merging and is_tracked_snapshot(config.snapshot_dir, merging) else None
        )
        retried = retry_pending(config, say, warn, nested=run.nested, skip=settled_here)
        run.merged = retried > 0
        yield run
        if run.merged:
            prune_service.prune(config, leftovers=not run.nested)


@contextlib.contextmanager
def changing_store_run(
    config: Config,
    operation: str,
    *,
    say: Say,
    warn: Say,
    collections: Sequence[str] = (),
    merging: Path | None = None,
) -> Iterator[tuple[ChangingRun, Store]]:
    """``changing_run`` with the configured store open for the whole block."""
    with (
        changing_run(
            config, operation, say=say, warn=warn, collections=collections, merging=merging
        ) as run,
        open_configured_store(config) as store,
    ):
        yield run, store


def retry_pending(
    config: Config,
    say: Say,
    warn: Say,
    *,
    nested: bool,
    skip: Path | None = None,
    only: int | None = None,
) -> int:
    """Retry every queued merge (or the one numbered ``only``), oldest first, each as a pull's
    merge recorded as a merge run; the first that fails again stops the command (its error
    propagates, with the queue updated). Returns how many succeeded. The store is opened only
    when there is something to retry."""
    done = 0
    with contextlib.ExitStack() as opened:
        store: Store | None = None
        for entry in waiting_merges(config):
            pull = pulled.waiting_pull(entry, config)
            if (only is not None and entry.id != only) or (
                skip is not None and pull.source.resolve() == skip.resolve()
            ):
                continue
            if store is None:
                store = opened.enter_context(open_configured_store(config))
            say(f"retrying the pending merge of {entry.source} (waiting since {entry.created})")
            with (
                pulled.merging_pull(config, pull) as merging,
                recorded_run(config, "merge", warn=warn) as record,
            ):
                record.nested = nested
                ChangingRun(config, record).merge(store, pull.source, merging.options)
            done += 1
    return done


def retry_run(config: Config, pending_id: int, *, say: Say, warn: Say) -> int:
    """Retry the one queued merge ``pending_id`` now, under the lock (the agent's API asks for
    it); pruned after it, as every merge. Returns 1 when it merged, 0 when no such merge waits."""
    with run_lock(config.state_dir, "merge", timeout=config.lock_timeout) as holder:
        done = retry_pending(config, say, warn, nested=holder is None, only=pending_id)
        if done:
            prune_service.prune(config, leftovers=holder is not None)
        return done


def pulled_run(
    config: Config,
    pull: pulled.Pull,
    *,
    say: Say,
    warn: Say,
    given: MergeOptions = pulled.AFTER_A_PULL,
    progress: Progress | None = None,
) -> MergeReport:
    """Merge what a pull brought (``dbsync.runs.pulled``) as one changing run; when it fails,
    the error propagates, the merge queued as pending."""
    with pulled.merging_pull(config, pull, given) as merging:
        return _merge_pull(config, pull, merging, say=say, warn=warn, progress=progress)


def merge_after_pull(
    config: Config,
    commit: str | None,
    before: str | None = None,
    *,
    warn: Say = pulled.warn_on_stderr,
) -> list[str]:
    """``pulled_run`` of the snapshot folder as of ``commit`` for git's hooks and ``sync``: git
    has moved on, so whatever fails becomes the pending merge it is, and the lines that say
    so; never an error. Returns the lines (``pulled.merged_lines``, ``pulled.pending_lines``)."""
    pull = pulled.Pull(config.snapshot_dir, commit, before)
    say = warn
    merging = None
    try:
        with pulled.merging_pull(config, pull) as merging:
            report = _merge_pull(config, pull, merging, say=say, warn=warn)
    except Exception as error:  # whatever failed, the user must learn it
        return pulled.pending_lines(config, error, merging.not_queued if merging else None)
    return pulled.merged_lines(config, report)


def _merge_pull(
    config: Config,
    pull: pulled.Pull,
    merging: pulled.PullMerge,
    *,
    say: Say,
    warn: Say,
    progress: Progress | None = None,
) -> MergeReport:
    collections = merging.options.collections or ()
    with changing_store_run(
        config, "merge", say=say, warn=warn, collections=collections, merging=pull.source
    ) as (run, store):
        return run.merge(store, pull.source, merging.options, progress)


def merge_run(
    config: Config,
    path: Path | None,
    options: MergeOptions,
    *,
    say: Say,
    warn: Say,
    resume: bool = False,
    dedupe: bool = False,
    progress: Progress | None = None,
) -> tuple[MergeReport, MergeReport | None]:
    """``dbsync merge``: PATH, or with ``resume`` the interrupted merge; a pull's merge that
    waits as pending stays what it was (``pulled``: three-way, the driver's decisions named);
    ``dedupe`` folds the duplicates first. Returns the report and the fold's (None: none)."""
    named = options.collections or ()
    path, options = resolve_resume(config, path, options, resume)
    for source in (path, options.base):  # a typo or a folder with no snapshot: refused first
        if source is not None:
            require_snapshot(source)
    waiting = None if options.base or resume else pulled.pending_pull(config, path)
    with contextlib.ExitStack() as stack:
        if waiting is not None:
            options = stack.enter_context(pulled.merging_pull(config, waiting, options)).options
        run, store = stack.enter_context(
            changing_store_run(config, "merge", say=say, warn=warn, collections=named, merging=path)
        )
        fold = dedupe and not options.dry_run
        folded = fold_duplicates(config, store, options.collections) if fold else None
        return run.merge(store, path, options, progress), folded


def prune_run(
    config: Config, keep: int, conflicts_older_than: float | None = None
) -> prune_service.PruneResult:
    """``dbsync prune``: under the lock, not recorded; leftovers only when the lock is its own
    (a parent dbsync run may be writing them); losing versions only when asked (``DAYS``)."""
    with run_lock(config.state_dir, "prune", timeout=config.lock_timeout) as holder:
        return prune_service.prune(
            config, keep, leftovers=holder is not None, conflicts_older_than=conflicts_older_than
        )


def fold_duplicates(
    config: Config, store: Store, wanted: Sequence[str] | None
) -> MergeReport | None:
    """``--dedupe``: fold the named collections' duplicates (every collection not excluded
    when none is named); None when no records share a key."""
    from dbsync.runs import dedupe as dedupe_service  # only here: the hooks never fold

    names = list(wanted or [n for n in store.collection_names() if not config.excluded(n)])
    return dedupe_service.dedupe(config, store, names)
