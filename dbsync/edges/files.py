"""File I/O that must never leave half a file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _file_mode() -> int:
    """What ``open()`` gives a new file (``mkstemp`` gives 0600): snapshots are shared files."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()
STAGED_BUFFER = 1 << 18  # per file: a collection in 64 parts has 64 of them open at once


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file in the same folder, fsync it, then rename.

    A crash at any moment leaves either the old file or the new one, never a mix; on an
    exception inside the block the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, FILE_MODE)
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
