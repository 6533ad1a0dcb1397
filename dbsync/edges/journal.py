"""Interrupted merges and restores: told apart from finished ones, and never exported.

A merge or restore records itself in the state store's ``journal`` before its first write and
finishes the entry after its last (``StateStore.begin_writing``). An entry left unfinished by a
process that is gone is an interrupted run: every later command sees it, ``export`` (and so the
pre-push hook and ``sync``) refuses to write the snapshot over it, and ``status`` names the
command that recovers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dbsync.config import Config
from dbsync.edges.state import JournalEntry, StateStore, open_state, reading_state
from dbsync.errors import SafetyRefusal, UsageError

MERGE, RESTORE, IMPORT = "merge", "restore", "import"


def interrupted_runs(state_dir: Path) -> list[JournalEntry]:
    with reading_state(state_dir) as state:
        return [] if state is None else state.interrupted_runs()


def describe(entry: JournalEntry) -> str:
    names = ", ".join(entry.collections) or "no collection"
    return (
        f"the {entry.operation} of {names} started at {entry.started} did not finish "
        "(the process was killed or crashed)"
    )


def recovery(entry: JournalEntry) -> str:
    """The commands that put an interrupted run right, the first one preferred."""
    if entry.operation == MERGE:
        undo = f", or 'dbsync restore {entry.backup}' to undo it" if entry.backup else ""
        return f"run 'dbsync merge --resume' to finish it{undo}"
    if entry.operation == IMPORT:
        return f"run 'dbsync restore {entry.backup}' to undo it, then import the file again"
    return f"run 'dbsync restore {entry.backup}' again to finish it"


def refuse_over_interrupted(state_dir: Path) -> None:
    """Refuse to export while a merge or restore is unfinished: the database may hold part of
    it (on MongoDB without transactions), and every asset would receive that."""
    runs = interrupted_runs(state_dir)
    if runs:
        raise SafetyRefusal(
            describe(runs[-1]) + ": exporting now could send a partly written database to every "
            "asset; nothing was written",
            hint=recovery(runs[-1]) + ", then export",
        )


def interrupted_merge(config: Config) -> JournalEntry:
    """The interrupted merge ``merge --resume`` finishes: the newest one."""
    merges = [entry for entry in interrupted_runs(config.state_dir) if entry.operation == MERGE]
    if not merges or merges[-1].source is None:
        raise UsageError(
            "there is no interrupted merge to resume",
            hint="'dbsync status' shows what needs doing; 'dbsync merge PATH' merges a snapshot",
        )
    return merges[-1]


def begin(
    state_dir: Path,
    operation: str,
    collections: Sequence[str],
    *,
    backup: str | None = None,
    source: str | None = None,
    base: str | None = None,
) -> int:
    """Journal a run that is about to write the database; returns the entry to ``finish``."""
    with _state(state_dir) as state:
        return state.begin_writing(operation, collections, backup=backup, source=source, base=base)


def finish(state_dir: Path, entry: int, collections: Sequence[str]) -> None:
    """The run is over (done, or undone): it, and older interrupted runs on no other
    collections, no longer need recovering."""
    with _state(state_dir) as state:
        state.finish_writing(entry, collections)


@contextmanager
def _state(state_dir: Path) -> Iterator[StateStore]:
    state = open_state(state_dir)
    try:
        yield state
    finally:
        state.close()
