"""What shell completion offers: collection names and backup ids.

Read from files only (the snapshot folder's headers, the configuration, the backups' folders):
completion runs on every Tab, so it must never wait for a database.
"""

from __future__ import annotations

from dbsync.config import Config
from dbsync.edges.backups import list_backups
from dbsync.edges.parts import collection_files


def collection_names(config: Config, incomplete: str = "") -> list[str]:
    """The collections the snapshot folder holds and the ones dbsync.toml names."""
    names = set(collection_files(config.snapshot_dir)) | set(config.collections)
    return sorted(name for name in names if name.startswith(incomplete))


def backup_ids(config: Config, incomplete: str = "") -> list[str]:
    """Backup ids, newest first."""
    return [b.id for b in list_backups(config.state_dir) if b.id.startswith(incomplete)]
