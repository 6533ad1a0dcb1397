"""Merges that could not reach the database, kept until they succeed (PRODUCT.md §5).

A pull whose merge fails (MongoDB down, say) still succeeds in git; the merge is queued in the
state store. Every later command that changes the database or the snapshot retries the queue
first (``dbsync.runs.pipeline``, through ``dbsync.runs.pulled``), so a pulled snapshot is never
overwritten by an export before it was merged. ``status`` only reports the queue. This module
is the queue itself: what waits, and how an entry is added, noted and settled.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from dbsync.config import Config
from dbsync.edges.driver_decisions import clear_driver_decisions
from dbsync.edges.state import PendingMerge, StateStore, open_state
from dbsync.edges.synced import is_tracked_snapshot


def relative_source(config: Config, source: Path) -> str:
    """``source`` as the queue names it: relative to the project's root."""
    return os.path.relpath(source.resolve(), config.root.resolve())


@contextlib.contextmanager
def _state(config: Config) -> Iterator[StateStore]:
    state = open_state(config.state_dir)
    try:
        yield state
    finally:
        state.close()


def _has_state(config: Config) -> bool:
    return (config.state_dir / "state.sqlite").exists()


def waiting_merges(config: Config) -> list[PendingMerge]:
    """The queue, oldest first (the order of the retries); empty without a state store."""
    if not _has_state(config):
        return []
    with _state(config) as state:
        return state.list_pending()


def queue_pending(
    config: Config, source: Path, commit: str | None, error: str, before: str | None = None
) -> int:
    """Remember a merge to retry; one entry per source (a newer pull replaces the older).

    ``commit`` and ``before`` (HEAD after and before the pull) find the three-way base the
    merge had, for every retry; a pull's merge is queued before it starts, so that one killed
    at any point is retried the same way, never two-way."""
    relative = relative_source(config, source)
    with _state(config) as state:
        for waiting in state.list_pending():
            if waiting.source == relative:
                state.remove_pending(waiting.id)
        added = state.add_pending(relative, None, commit, before)
        state.mark_pending_attempt(added.id, error, None)
        return added.id


def note_attempt(config: Config, pending_id: int, error: str) -> None:
    """A retry of the queued merge ``pending_id`` failed again, for ``error``."""
    with _state(config) as state:
        state.mark_pending_attempt(pending_id, error, None)


def resolve_pending(config: Config, source: Path) -> None:
    """A merge of ``source`` succeeded: nothing about it is pending any more; when it is the
    snapshot folder, neither are the merge driver's decisions that this merge reported."""
    if not config.state_dir.is_dir():
        return
    if is_tracked_snapshot(config.snapshot_dir, source):
        clear_driver_decisions(config)
    if not _has_state(config):
        return
    relative = relative_source(config, source)
    with _state(config) as state:
        for waiting in state.list_pending():
            if waiting.source == relative:
                state.remove_pending(waiting.id)
