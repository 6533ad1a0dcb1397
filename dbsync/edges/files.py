"""File I/O that must never leave half a file behind, nor a temporary file where git looks.

A file is written through a temporary file, fsynced, then renamed over its name. Inside a
dbsync project the temporary file lives in ``database_sync/tmp/`` (``.gitignore``d by ``dbsync
init``, and never under the snapshot folder that dbsync commits), so a killed run cannot leave
half a snapshot where ``git add`` would pick it up. Its name carries the writer's process id:
``prune`` removes it once that process is gone, and never while it may still be writing.

Scratch folders (a merge's work files, a diff's export) go to the system's temporary folder,
named ``dbsync-<kind>-<pid>-...`` for the same reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dbsync.config import CONFIG_FILE, STATE_DIR
from dbsync.edges.state import process_alive


def _file_mode() -> int:
    """What ``open()`` gives a new file (``mkstemp`` gives 0600): snapshots are shared files."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()
STAGED_BUFFER = 1 << 18  # per file: a collection in 64 parts has 64 of them open at once
TEMPORARY_FOLDER = "tmp"
"""Under the project's ``database_sync/``: where atomic writes stage their files."""
TEMPORARY_SUFFIX = ".tmp"
_OWNED_TEMPORARY = re.compile(r"\..+\.(?P<pid>\d+)\.[^.]+\.tmp")
_SCRATCH_PREFIX = "dbsync-"
_OWNED_SCRATCH = re.compile(r"dbsync-[a-z-]+?-(?P<pid>\d+)-[^-]+")


def temporary_folder(path: Path) -> Path:
    """Where the temporary file for ``path`` is written: the project's ``database_sync/tmp``
    when ``path`` is inside a dbsync project and on the same file system (a rename cannot
    cross file systems); otherwise ``path``'s own folder."""
    for folder in (path.parent, *path.parent.parents):
        if (folder / CONFIG_FILE).is_file():
            staging = folder / STATE_DIR / TEMPORARY_FOLDER
            staging.mkdir(parents=True, exist_ok=True)
            return staging if _device(staging) == _device(path.parent) else path.parent
    return path.parent


def _device(path: Path) -> int:
    """The file system ``path`` is (or would be) on: that of its nearest existing folder."""
    for folder in (path, *path.parents):
        if folder.exists():
            return folder.stat().st_dev
    return -1


def _temporary_file(path: Path) -> tuple[int, str]:
    """A new temporary file for ``path``, named after it and after this process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=TEMPORARY_SUFFIX, dir=temporary_folder(path)
    )
    os.fchmod(fd, FILE_MODE)
    return fd, temporary


def writer_pid(name: str) -> int | None:
    """The process that writes (or wrote) the temporary file ``name``; None for a name
    without one (written by an older dbsync)."""
    match = _OWNED_TEMPORARY.fullmatch(name)
    return int(match["pid"]) if match else None


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file (``temporary_folder``), fsync it, then rename.

    A crash at any moment leaves either the old file or the new one, never a mix; on an
    exception inside the block the temporary file is removed and ``path`` is untouched.
    """
    fd, temporary = _temporary_file(path)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


class StagedFiles:
    """Several files written through temporary files and renamed into place together.

    Nothing is renamed until every file is complete, so a refusal or a failure while writing the
    third file leaves the first two untouched as well.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, str]] = []
        self._removed: list[Path] = []

    @contextlib.contextmanager
    def open(self, path: Path) -> Iterator[BinaryIO]:
        fd, temporary = _temporary_file(path)
        self._staged.append((path, temporary))
        with os.fdopen(fd, "wb", buffering=STAGED_BUFFER) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self, path: Path) -> None:
        """Delete ``path`` when the others are renamed into place (not before)."""
        self._removed.append(path)

    def discard(self, paths: list[Path]) -> None:
        """Forget what was staged for ``paths`` (to stage them again differently)."""
        wanted = {path.resolve() for path in paths}
        for path, temporary in [item for item in self._staged if item[0].resolve() in wanted]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            self._staged.remove((path, temporary))

    def commit(self) -> None:
        record_renames([(Path(temporary), path) for path, temporary in self._staged])
        for path, temporary in self._staged:
            os.replace(temporary, path)
        written = {path.resolve() for path, _ in self._staged}
        for path in self._removed:
            if path.resolve() not in written:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        for directory in {path.parent for path, _ in self._staged} | {
            p.parent for p in self._removed
        }:
            fsync_directory(directory)
        self._staged, self._removed = [], []

    def abort(self) -> None:
        for _, temporary in self._staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        self._staged, self._removed = [], []

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


# ---------------------------------------------------------------- renames, remembered

RENAMES = "renamed.json"
"""In a project's ``database_sync/tmp``: the files the last ``StagedFiles.commit`` renamed."""


def _identity(stat: os.stat_result) -> list[int]:
    """What a rename keeps of a file and an edit changes: its size, time and inode."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def record_renames(renames: list[tuple[Path, Path]]) -> None:
    """Before renaming staged files into place: which files they are (``_identity``), so
    that a writer killed after the renames but before its own bookkeeping (an export before
    it records what it exported) leaves files that can be told to be dbsync's. Only inside a
    project (where ``temporary_folder`` is ``database_sync/tmp``)."""
    if not renames:
        return
    folder = temporary_folder(renames[0][1])
    if folder.name != TEMPORARY_FOLDER:
        return
    files = {str(target): _identity(os.stat(staged)) for staged, target in renames}
    document = {"pid": os.getpid(), "files": files}
    (folder / RENAMES).write_text(json.dumps(document))  # a hint: torn, it proves nothing


def renamed_by_a_dead_writer(paths: list[Path]) -> bool:
    """Whether every one of ``paths`` is, untouched since, a file the last ``StagedFiles``
    commit renamed into place, and the process that did it is gone."""
    if not paths:
        return False
    try:
        document = json.loads((temporary_folder(paths[0]) / RENAMES).read_text())
        files, pid = document["files"], int(document["pid"])
        same = all(files.get(str(path)) == _identity(os.stat(path)) for path in paths)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return same and pid != os.getpid() and not process_alive(pid)


# ---------------------------------------------------------------- scratch folders


@contextlib.contextmanager
def scratch_folder(kind: str) -> Iterator[Path]:
    """A folder of the system's temporary folder for one run's work files, removed after the
    block; named ``dbsync-<kind>-<pid>-...`` so that once this process is gone (killed, where
    nothing could remove it) ``stale_scratch_folders`` finds it."""
    with tempfile.TemporaryDirectory(prefix=f"{_SCRATCH_PREFIX}{kind}-{os.getpid()}-") as folder:
        yield Path(folder)


def stale_scratch_folders(parent: Path | None = None) -> list[Path]:
    """Scratch folders whose process is gone (``scratch_folder``); others' runs are left."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    stale = []
    for name in names:
        match = _OWNED_SCRATCH.fullmatch(name)
        if match and int(match["pid"]) != os.getpid() and not process_alive(int(match["pid"])):
            stale.append(parent / name)
    return stale


def remove_stale_scratch_folders(parent: Path | None = None) -> list[Path]:
    """Remove the scratch folders killed runs left; returns those that went."""
    removed = []
    for folder in stale_scratch_folders(parent):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    return removed
