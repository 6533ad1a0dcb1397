"""``dbsync prune``: keep what dbsync accumulates under ``database_sync/`` from growing forever.

Kept: the newest ``keep`` backups (never fewer than one: the newest backup is what undoes the
last merge), the newest ``keep`` merge reports (a ``.txt`` and its ``.json`` twin count as
one), the newest ``HISTORY_KEPT`` history rows, and anything a pending merge still needs.
Removed besides: backup folders that were never completed and temporary files left by an
atomic write that was killed — only when this run holds the lock itself, since a parent
dbsync run (a git hook's caller) may be writing them right now; a temporary file whose name
says which process wrote it (``dbsync.edges.files``) goes as soon as that process is gone,
whoever holds the lock. So do the scratch folders of killed runs (``$TMPDIR/dbsync-merge-*``).

Runs quietly after every successful merge.

Losing versions (``dbsync conflicts``) are never removed with the reports that listed them:
they have their own retention, off by default (``--conflicts-older-than DAYS``).
"""

from __future__ import annotations

import contextlib
import datetime
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dbsync.config import Config
from dbsync.edges.backups import META, backups_dir, list_backups
from dbsync.edges.files import remove_stale_scratch_folders, writer_pid
from dbsync.edges.state import open_state, process_alive

DEFAULT_KEEP = 10
_REPORT = re.compile(r"merge_report_(?P<stamp>[0-9T]+)\.(txt|json)")
_TEMPORARY = re.compile(r"\..+\.tmp")
_MONTYDB_FOLDER = "db"


@dataclass
class PruneResult:
    backups: list[str] = field(default_factory=list)
    unfinished_backups: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    temporary_files: list[str] = field(default_factory=list)
    scratch_folders: list[str] = field(default_factory=list)
    history_rows: int = 0
    losing_versions: int = 0
    kept_backups: int = 0
    kept_reports: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "removed": {
                "backups": self.backups,
                "unfinished_backups": self.unfinished_backups,
                "reports": self.reports,
                "temporary_files": self.temporary_files,
                "scratch_folders": self.scratch_folders,
                "history_rows": self.history_rows,
                "losing_versions": self.losing_versions,
            },
            "kept": {"backups": self.kept_backups, "reports": self.kept_reports},
        }


def _remove(path: Path, protected: set[Path]) -> bool:
    """Remove a file or folder unless a pending merge needs it; False if it stays."""
    resolved = path.resolve()
    if any(resolved == p or resolved in p.parents for p in protected):
        return False
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return not path.exists()


def _protected_paths(config: Config) -> set[Path]:
    """The files pending merges point at, and the backups of interrupted merges and restores:
    they must survive until the merge is retried or the run recovered."""
    state = open_state(config.state_dir)
    try:
        pending = state.list_pending()
        interrupted = state.interrupted_runs()
    finally:
        state.close()
    paths = {p.source for p in pending} | {p.base for p in pending if p.base}
    found = {(config.root / path).resolve() for path in paths}
    backups = {backups_dir(config.state_dir) / e.backup for e in interrupted if e.backup}
    return found | {path.resolve() for path in backups}


def _prune_backups(config: Config, keep: int, protected: set[Path], result: PruneResult) -> None:
    complete = list_backups(config.state_dir)  # newest first
    kept = complete[: max(keep, 1)]
    for info in complete[len(kept) :]:
        if _remove(backups_dir(config.state_dir) / info.id, protected):
            result.backups.append(info.id)
    result.kept_backups = len(complete) - len(result.backups)


def _prune_unfinished(config: Config, protected: set[Path], result: PruneResult) -> None:
    root = backups_dir(config.state_dir)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.is_dir() and not (folder / META).exists() and _remove(folder, protected):
            result.unfinished_backups.append(folder.name)


def _prune_reports(config: Config, keep: int, protected: set[Path], result: PruneResult) -> None:
    folder = config.state_dir / "reports"
    stamps: dict[str, list[Path]] = {}
    for path in folder.iterdir() if folder.is_dir() else []:
        match = _REPORT.fullmatch(path.name)
        if match:
            stamps.setdefault(match["stamp"], []).append(path)
    newest_first = sorted(stamps, reverse=True)
    for stamp in newest_first[keep:]:
        for path in sorted(stamps[stamp]):
            if _remove(path, protected):
                result.reports.append(path.name)
    result.kept_reports = min(len(newest_first), keep)


def _temporary_files(config: Config, leftovers: bool) -> Iterator[Path]:
    """Leftovers of atomic writes killed before their rename (``.NAME.PID.XXXX.tmp``, or
    ``.NAME.XXXX.tmp`` from an older dbsync: those only with ``leftovers``)."""
    store = config.state_dir / _MONTYDB_FOLDER
    for top in (config.snapshot_dir, config.state_dir):
        for path in sorted(top.rglob(".*.tmp")) if top.is_dir() else []:
            if path.is_file() and _TEMPORARY.fullmatch(path.name) and store not in path.parents:
                if _abandoned(path.name, leftovers):
                    yield path


def _abandoned(name: str, leftovers: bool) -> bool:
    """Whether nobody can be writing this temporary file any more: its writer is gone, or, for
    a name without a writer, no other dbsync run is under way (``leftovers``)."""
    pid = writer_pid(name)
    return leftovers if pid is None else not process_alive(pid)


def _prune_temporary(
    config: Config, protected: set[Path], result: PruneResult, leftovers: bool
) -> None:
    for path in _temporary_files(config, leftovers):
        if _remove(path, protected):
            result.temporary_files.append(str(path.relative_to(config.root)))
    result.scratch_folders = [str(folder) for folder in remove_stale_scratch_folders()]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def conflicts_cutoff(days: float, now: datetime.datetime) -> str:
    """The time before which losing versions go, as the state store writes times."""
    return (now - datetime.timedelta(days=days)).isoformat(timespec="milliseconds")


def prune(
    config: Config,
    keep: int = DEFAULT_KEEP,
    *,
    leftovers: bool = True,
    conflicts_older_than: float | None = None,
    now: datetime.datetime | None = None,
) -> PruneResult:
    """Remove what is beyond the newest ``keep``; ``leftovers`` also removes unfinished backups
    and temporary files that do not name their writer (only safe when no parent dbsync run is
    writing them); those that do, and scratch folders, go once their writer is gone;
    ``conflicts_older_than`` (days) removes the losing versions recorded before then."""
    result = PruneResult()
    protected = _protected_paths(config)
    _prune_backups(config, keep, protected, result)
    _prune_reports(config, keep, protected, result)
    if leftovers:
        _prune_unfinished(config, protected, result)
    _prune_temporary(config, protected, result, leftovers)
    state = open_state(config.state_dir)
    try:
        result.history_rows = state.trim_history()
        if conflicts_older_than is not None:
            cutoff = conflicts_cutoff(conflicts_older_than, now or _now())
            result.losing_versions = state.prune_losing_versions(cutoff)
    finally:
        state.close()
    return result
