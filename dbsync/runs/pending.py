"""Merges that could not reach the database, kept until they succeed (PRODUCT.md §5).

A pull whose merge fails (MongoDB down, say) still succeeds in git; the merge is queued in the
state store. Every later command that changes the database or the snapshot retries the queue
first, so a pulled snapshot is never overwritten by an export before it was merged. ``status``
only reports the queue.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from dbsync.config import Config
from dbsync.edges import git
from dbsync.edges.driver_decisions import clear_driver_decisions, queued_driver_decisions
from dbsync.edges.state import StateStore, open_state
from dbsync.edges.store import Store
from dbsync.edges.synced import three_way_base
from dbsync.runs.common import open_configured_store
from dbsync.runs.losing import HOOK
from dbsync.runs.merge import MergeOptions, merge_snapshot


def _relative(config: Config, source: Path) -> str:
    return os.path.relpath(source.resolve(), config.root.resolve())


@contextlib.contextmanager
def _state(config: Config) -> Iterator[StateStore]:
    state = open_state(config.state_dir)
    try:
        yield state
    finally:
        state.close()


def queue_pending(
    config: Config, source: Path, commit: str | None, error: str, before: str | None = None
) -> int:
    """Remember a merge to retry; one entry per source (a newer pull replaces the older).

    ``commit`` and ``before`` (HEAD after and before the pull) find the three-way base the
    merge had, for every retry; the hook queues its merge before it starts, so that one killed
    at any point is retried the same way, never two-way."""
    relative = _relative(config, source)
    with _state(config) as state:
        for waiting in state.list_pending():
            if waiting.source == relative:
                state.remove_pending(waiting.id)
        added = state.add_pending(relative, None, commit, before)
        state.mark_pending_attempt(added.id, error, None)
        return added.id


def resolve_pending(config: Config, source: Path) -> None:
    """A merge of ``source`` succeeded: nothing about it is pending any more, nor are the
    merge driver's decisions that this merge reported."""
    relative = _relative(config, source)
    if not config.state_dir.is_dir():
        return
    clear_driver_decisions(config)
    with _state(config) as state:
        for waiting in state.list_pending():
            if waiting.source == relative:
                state.remove_pending(waiting.id)


def base_for(config: Config, commit: str | None, before: str | None = None) -> Path | None:
    """The three-way base for merging the snapshot folder as of ``commit`` (None: two-way)."""
    if commit is None or git.toplevel(config.root) is None:
        return None
    folder = os.path.relpath(config.snapshot_dir, config.root)
    return three_way_base(config.state_dir, config.root, folder, commit, before)


def as_pending_pull(config: Config, source: Path, options: MergeOptions) -> MergeOptions:
    """``options`` for the queued merge of ``source``, if one waits (``dbsync merge
    database_backup`` run by hand after a pull whose merge failed): three-way, as the hook's
    merge would have been, when the synced commit is an ancestor of the pulled one, and naming
    what the merge driver decided in that pull."""
    if not (config.state_dir / "state.sqlite").exists():
        return options
    relative = _relative(config, source)
    with _state(config) as state:
        waiting = [entry for entry in state.list_pending() if entry.source == relative]
    if not waiting:
        return options
    commit = waiting[-1].commit
    base = base_for(config, commit, waiting[-1].before)
    return replace(options, base=base, commit=commit, merge_driver=queued_driver_decisions(config))


def retry_pending(
    config: Config,
    say: Callable[[str], None],
    *,
    skip: Path | None = None,
    only: int | None = None,
) -> int:
    """Retry every queued merge (or the one numbered ``only``), oldest first; the first that
    fails again stops the command (its error propagates, with the queue updated). Returns how
    many succeeded. The store is opened only when there is something to retry."""
    if not (config.state_dir / "state.sqlite").exists():
        return 0
    done = 0
    with _state(config) as state, contextlib.ExitStack() as opened:
        store: Store | None = None
        for waiting in state.list_pending():
            source = config.root / waiting.source
            if only is not None and waiting.id != only:
                continue
            if skip is not None and source.resolve() == skip.resolve():
                continue
            if store is None:
                store = opened.enter_context(open_configured_store(config))
            say(f"retrying the pending merge of {waiting.source} (waiting since {waiting.created})")
            options = MergeOptions(
                base=base_for(config, waiting.commit, waiting.before),
                commit=waiting.commit,
                place=HOOK,
                merge_driver=queued_driver_decisions(config),
            )
            try:
                merge_snapshot(config, store, source, options)
            except Exception as error:
                state.mark_pending_attempt(waiting.id, str(error).splitlines()[0], None)
                raise
            state.remove_pending(waiting.id)
            clear_driver_decisions(config)
            done += 1
    return done
