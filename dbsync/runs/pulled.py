"""Merging what a pull brought into the database, assembled once.

A pull's merge starts in five places: the post-merge, post-rewrite and post-commit hooks
(``dbsync.integration.hook_runs``), ``dbsync sync`` when no hook of ours merges
(``dbsync.runs.sync``) and its repair of a killed pull (``dbsync.runs.git_state``), the retry of
a queued merge that every changing run makes first (``dbsync.runs.pipeline``, which the agent's
``POST /pending/ID/retry`` calls too), and ``dbsync merge database_backup`` run by hand while
that merge waits. Each goes through ``merging_pull`` and ``ChangingRun.merge``:

1. the options, built from the commits only (``pull_options``): three-way against the synced
   commit when HEAD after the pull descends from it (``before``: HEAD before it), naming what
   git's merge driver decided meanwhile;
2. queued as pending before it starts (``UNFINISHED``, with ``before``), so that a merge killed
   at any point is retried the same way, never two-way; a retried one is queued already;
3. on failure, queued with the reason (a retry: the attempt noted on its entry);
4. on success, settled once (``ChangingRun.merge``: ``pending.resolve_pending``), and recorded
   in the history as a merge, whichever of them started it.

The run around it (lock, history, store) is ``pipeline.pulled_run``'s; what the hooks and
``sync`` print of it is ``merged_line`` and ``pending_lines``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from dbsync.config import Config
from dbsync.core.report import MergeReport
from dbsync.edges import git
from dbsync.edges.driver_decisions import queued_driver_decisions
from dbsync.edges.state import PendingMerge
from dbsync.edges.synced import three_way_base
from dbsync.runs.losing import HOOK
from dbsync.runs.merge import MergeOptions
from dbsync.runs.pending import note_attempt, queue_pending, relative_source, waiting_merges

UNFINISHED = "the merge after the pull did not finish (the process was killed or crashed)"
"""What a merge queued as it starts says, if nothing replaces it: a hook killed mid-merge."""

AFTER_A_PULL = MergeOptions(place=HOOK)
"""A pull's merge decides its conflicts in a hook (the losing versions say so)."""


@dataclass(frozen=True)
class Pull:
    """What a pull brought: ``source`` as of ``commit`` (HEAD after the pull; None for a squash
    merge or a folder from outside git), which was at ``before`` until then. ``queued``: its
    entry in the pending queue, when it waits there already."""

    source: Path
    commit: str | None
    before: str | None = None
    queued: int | None = None


def waiting_pull(entry: PendingMerge, config: Config) -> Pull:
    """The queued merge ``entry`` as the pull it is."""
    return Pull(config.root / entry.source, entry.commit, entry.before, entry.id)


def pending_pull(config: Config, source: Path) -> Pull | None:
    """The queued merge of ``source``, if one waits (the newest)."""
    relative = relative_source(config, source)
    waiting = [entry for entry in waiting_merges(config) if entry.source == relative]
    return waiting_pull(waiting[-1], config) if waiting else None


def base_for(config: Config, commit: str | None, before: str | None = None) -> Path | None:
    """The three-way base for merging the snapshot folder as of ``commit`` (None: two-way)."""
    if commit is None or git.toplevel(config.root) is None:
        return None
    folder = os.path.relpath(config.snapshot_dir, config.root)
    return three_way_base(config.state_dir, config.root, folder, commit, before)


def pull_options(config: Config, pull: Pull, given: MergeOptions = AFTER_A_PULL) -> MergeOptions:
    """``given`` for the merge of ``pull``: its base, its commit, the driver's decisions."""
    return replace(
        given,
        base=base_for(config, pull.commit, pull.before),
        commit=pull.commit,
        merge_driver=queued_driver_decisions(config),
    )


@dataclass
class PullMerge:
    """A pull's merge under way: its options; and, once it failed, why it could not be queued
    (the state store itself unusable), if it could not."""

    options: MergeOptions
    not_queued: str | None = None


@contextlib.contextmanager
def merging_pull(
    config: Config, pull: Pull, given: MergeOptions = AFTER_A_PULL
) -> Iterator[PullMerge]:
    """Steps 1-3 of the module docstring around the block, which merges ``pull`` with the
    options it is given. The error propagates, once queued."""
    if pull.queued is None:
        with contextlib.suppress(Exception):  # the state store unusable: said on failure
            queue_pending(config, pull.source, pull.commit, UNFINISHED, pull.before)
    merging = PullMerge(given)
    try:
        merging.options = pull_options(config, pull, given)
        yield merging
    except Exception as error:
        try:
            if pull.queued is None:
                queue_pending(config, pull.source, pull.commit, reason(error), pull.before)
            else:
                note_attempt(config, pull.queued, reason(error).splitlines()[0])
        except Exception as failure:  # still never fail git for it: the caller says so
            merging.not_queued = str(failure)
        raise


def reason(error: Exception) -> str:
    """Why a merge failed, as the queue keeps it."""
    return getattr(error, "message", None) or f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------- what the hooks say


def warn_on_stderr(message: str) -> None:
    """What a merge git started says while it runs: on stderr, which git shows."""
    print(f"dbsync: warning: {message}", file=sys.stderr)


def snapshot_folder(config: Config) -> str:
    return os.path.relpath(config.snapshot_dir, config.root)


def pending_lines(config: Config, error: Exception, not_queued: str | None = None) -> list[str]:
    """What a failed merge after a pull says: it is pending, why, and how to retry it."""
    why = reason(error) + (f"; and it could not be queued ({not_queued})" if not_queued else "")
    folder = snapshot_folder(config)
    lines = [
        f"dbsync: warning: the merge of {folder} into the database is pending ({why}); "
        f"'dbsync merge {folder}' retries it"
    ]
    hint = getattr(error, "hint", None)
    if hint:
        lines.append(f"hint: {hint}")
    return lines


def merged_lines(config: Config, report: MergeReport) -> list[str]:
    """What a merge after a pull says: its summary, its warnings, where the driver's
    decisions are."""
    driven = report.merge_driver
    counts = report.collections.values()
    changed = sum(c.remote_only + c.updated + c.deleted for c in counts)
    conflicts = sum(c.conflicts_resolved for c in counts)
    total = sum(c.total for c in counts)
    by_driver = driven.total if driven else 0
    driver = f" (and {by_driver} by the git merge driver, see below)" if by_driver else ""
    summary = (
        f"dbsync: merged {snapshot_folder(config)} into the database ({report.mode}): "
        f"{changed} record(s) from other assets, {conflicts} conflict(s) decided by the rules"
        f"{driver}, {total} records now; 'dbsync restore {report.backup}' undoes it"
    )
    lines = [summary, *(f"dbsync: warning: {note}" for note in report.notes)]
    return lines + ([f"dbsync: note: {driven.note()}"] if driven else [])
