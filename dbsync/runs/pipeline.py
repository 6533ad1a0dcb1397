"""The one pipeline for a run that changes the database or the snapshot.

Such a run starts in one of four places: a command (``dbsync.cli``), a git hook
(``dbsync.integration.hook_runs``), ``dbsync sync`` (``dbsync.runs.sync``) or the agent
(``dbsync.agent.schedule``). All four go through ``changing_run``, so a rule written here holds
for every one of them:

1. the asset's lock (``dbsync.edges.lock``); a run its holder started (a git hook fired by the
   holder's git command) goes on as part of the holder's run instead of waiting for it;
2. a row in the history (``dbsync.runs.recording``), failures included;
3. the pending merges retried first (PRODUCT.md §5): exporting over an unmerged pull would erase
   it;
4. the operation, with the store opened as a context manager when it needs one;
5. after a successful merge (the run's own, or a retried pending one): the merged source is no
   longer pending, and old backups and reports are pruned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dbsync.config import Config
from dbsync.core.report import SUCCESS, MergeReport
from dbsync.edges.lock import run_lock
from dbsync.edges.store import Store
from dbsync.edges.synced import is_tracked_snapshot
from dbsync.progress import NoProgress, Progress
from dbsync.runs import dedupe as dedupe_service
from dbsync.runs import prune as prune_service
from dbsync.runs.common import open_configured_store
from dbsync.runs.merge import MergeOptions, merge_snapshot
from dbsync.runs.pending import resolve_pending, retry_pending
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
        """Merge ``source`` into the database as this run's operation, and record it."""
        report = merge_snapshot(self.config, store, source, options, progress or NoProgress())
        record_report(self.record, report)
        if report.status == SUCCESS:
            if is_tracked_snapshot(self.config.snapshot_dir, source):
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
    retry_only: int | None = None,
) -> Iterator[ChangingRun]:
    """Run the block as one changing run (steps 1-5 of the module docstring).

    ``merging``: the source the block merges; when it is the snapshot folder, its own pending
    entry is not retried first as well (the block's merge settles it).
    ``retry_only``: retry this one pending merge and no other (the agent's API asks for it).
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
        retried = retry_pending(config, say, skip=settled_here, only=retry_only)
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
    names = list(wanted or [n for n in store.collection_names() if not config.excluded(n)])
    return dedupe_service.dedupe(config, store, names)
