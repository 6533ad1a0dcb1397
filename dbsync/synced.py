"""What this asset last synced: the snapshot it last merged or exported, and the git commit.

Kept under ``database_sync/synced/`` and replaced only after a merge or export succeeded. It is
the three-way base for the next merge of a snapshot that descends from that commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dbsync.files import StagedFiles, write_bytes_atomically
from dbsync.snapshot import Header, snapshot_filename, write_section

META = "synced.json"


@dataclass(frozen=True)
class Synced:
    commit: str | None
    digests: dict[str, str] = field(default_factory=dict)


def synced_dir(state_dir: Path) -> Path:
    return state_dir / "synced"


def synced_file(state_dir: Path, collection: str) -> Path | None:
    path = synced_dir(state_dir) / snapshot_filename(collection)
    return path if path.is_file() else None


def load_synced(state_dir: Path) -> Synced | None:
    meta = synced_dir(state_dir) / META
    if not meta.is_file():
        return None
    data = json.loads(meta.read_text())
    return Synced(data.get("commit"), dict(data.get("digests", {})))


def save_synced(
    state_dir: Path,
    sections: Iterable[tuple[Header, Iterable[bytes]]],
    commit: str | None,
) -> Synced:
    """Record the given sections as last synced (other collections keep their record)."""
    folder = synced_dir(state_dir)
    previous = load_synced(state_dir)
    digests = dict(previous.digests) if previous else {}
    with StagedFiles() as staged:
        for header, lines in sections:
            with staged.open(folder / snapshot_filename(header.collection)) as handle:
                digests[header.collection] = write_section(handle, header, lines).digest
    synced = Synced(commit, digests)
    meta = {"commit": commit, "digests": digests}
    write_bytes_atomically(folder / META, json.dumps(meta, indent=2, sort_keys=True).encode())
    return synced
