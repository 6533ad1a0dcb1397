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
from pathlib import Path

from dbsync import git
from dbsync.commands.common import open_configured_store
from dbsync.commands.merge import MergeOptions, merge_snapshot
from dbsync.config import Config
from dbsync.state import PendingMerge, StateStore, open_state
from dbsync.store import Store
from dbsync.synced import three_way_base


def _relative(config: Config, source: Path) -> str:
    return os.path.relpath(source.resolve(), config.root.resolve())


@contextlib.contextmanager
def _state(config: Config) -> Iterator[StateStore]:
    state = open_state(config.state_dir)
    try:
        yield state
    finally:
        state.close()


def queue_pending(config: Config, source: Path, commit: str | None, error: str) -> int:
    """Remember a merge to retry; one entry per source (a newer pull replaces the older)."""
    relative = _relative(config, source)
    with _state(config) as state:
        for waiting in state.list_pending():
            if waiting.source == relative:
                state.remove_pending(waiting.id)
        added = state.add_pending(relative, None, commit)
        state.mark_pending_attempt(added.id, error, None)
        return added.id


def resolve_pending(config: Config, source: Path) -> None:
    """A merge of ``source`` succeeded: nothing about it is pending any more."""
    relative = _relative(config, source)
    if not config.state_dir.is_dir():
        return
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


def retry_pending(
    config: Config,
    say: Callable[[str], None],
    *,
    skip: Path | None = None,
    only: int | None = None,
) -> int:
    """Retry every queued merge (or the one numbered ``only``), oldest first, opening the store
    only when there is one; the first that fails again stops the run (its error propagates,
    with the queue updated). Returns how many succeeded."""
    if not (config.state_dir / "state.sqlite").exists():
        return 0
    with _state(config) as state:
        waiting = [p for p in state.list_pending() if _wanted(config, p, skip, only)]
        if not waiting:
            return 0
        with open_configured_store(config) as store:
            for entry in waiting:
                _retry(config, state, store, entry, say)
    return len(waiting)


def _wanted(config: Config, entry: PendingMerge, skip: Path | None, only: int | None) -> bool:
    if only is not None and entry.id != only:
        return False
    return skip is None or (config.root / entry.source).resolve() != skip.resolve()


def _retry(
    config: Config,
    state: StateStore,
    store: Store,
    entry: PendingMerge,
    say: Callable[[str], None],
) -> None:
    say(f"retrying the pending merge of {entry.source} (waiting since {entry.created})")
    options = MergeOptions(base=base_for(config, entry.commit), commit=entry.commit)
    try:
        merge_snapshot(config, store, config.root / entry.source, options)
    except Exception as error:
        state.mark_pending_attempt(entry.id, str(error).splitlines()[0], None)
        raise
    state.remove_pending(entry.id)
