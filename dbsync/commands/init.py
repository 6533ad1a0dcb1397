"""``dbsync init``: the configuration files of a project, shared and local."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dbsync import hooks
from dbsync.config import (
    CONFIG_FILE,
    DEFAULT_EMBEDDED_URI,
    DEFAULT_SNAPSHOT_DIR,
    LOCAL_CONFIG_FILE,
    STATE_DIR,
    Config,
    default_asset,
    load_config,
)
from dbsync.files import write_bytes_atomically
from dbsync.git import toplevel
from dbsync.snapshot import SUFFIX
from dbsync.synced import load_synced

IGNORED = (f"{STATE_DIR}/", LOCAL_CONFIG_FILE)


@dataclass
class InitResult:
    root: Path
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _default_database(root: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", root.name)[:63] or "dbsync"


def shared_config_text(database: str) -> str:
    return (
        "# dbsync: shared by every asset (tracked in git). See README.md for every key.\n"
        f"database = {_toml_string(database)}\n"
        f'snapshot_dir = "{DEFAULT_SNAPSHOT_DIR}"\n'
        "\n"
        "# [collections.NAME]\n"
        '# key = ["_id"]            # fields that identify a record across assets\n'
        '# timestamp = "updated_at" # the field that says which version is newer\n'
        "# preserve = []            # fields a newer version must not lose\n"
        "# exclude = false          # true: never exported nor merged\n"
    )


def local_config_text(uri: str, asset: str) -> str:
    return (
        "# dbsync: this asset only (not tracked). Flags and DBSYNC_* variables override it.\n"
        f"uri = {_toml_string(uri)}\n"
        f"asset = {_toml_string(asset)}\n"
    )


def ensure_gitignore(root: Path) -> list[str]:
    """Add the state folder and the local config to ``.gitignore``; returns what was added."""
    path = root / ".gitignore"
    text = path.read_text() if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [entry for entry in IGNORED if entry not in present]
    if missing:
        prefix = "" if not text or text.endswith("\n") else "\n"
        write_bytes_atomically(path, (text + prefix + "\n".join(missing) + "\n").encode())
    return missing


def init_project(
    cwd: Path,
    *,
    uri: str | None,
    database: str | None,
    asset: str | None,
    python: str = sys.executable,
) -> InitResult:
    """Write what is missing; never overwrite a file that exists (idempotent).

    In a git repository it also sets up the git integration; on a clone that already has
    ``dbsync.toml`` that adds only local parts (git config, hooks, ``dbsync.local.toml``), as the
    tracked ones came with the clone.
    """
    git_root = toplevel(cwd)
    root = git_root or cwd
    result = InitResult(root)
    shared = root / CONFIG_FILE
    if shared.exists():
        result.kept.append(CONFIG_FILE)
    else:
        database = database or _default_database(root)
        write_bytes_atomically(shared, shared_config_text(database).encode())
        result.created.append(CONFIG_FILE)
    local = root / LOCAL_CONFIG_FILE
    if local.exists():
        result.kept.append(LOCAL_CONFIG_FILE)
    else:
        chosen = uri or DEFAULT_EMBEDDED_URI
        write_bytes_atomically(
            local, local_config_text(chosen, asset or default_asset(root)).encode()
        )
        result.created.append(LOCAL_CONFIG_FILE)
        if uri is None:
            result.notes.append(
                f"using the embedded store in {STATE_DIR}/db (no server needed); "
                "pass --uri mongodb://HOST/ to sync a MongoDB instead"
            )
    added = ensure_gitignore(root)
    if added:
        result.created.append(".gitignore entries: " + ", ".join(added))
    (root / DEFAULT_SNAPSHOT_DIR).mkdir(exist_ok=True)
    if git_root is None:
        result.notes.append(
            "not a git repository: skipped .gitattributes, the merge and diff drivers and the "
            "hooks; run 'dbsync init' again after 'git init'"
        )
    else:
        set_up_git(load_config(cwd=root), result, python)
    return result


def set_up_git(config: Config, result: InitResult, python: str) -> None:
    """``.gitattributes`` for the snapshot files, then the drivers' git config and the hooks."""
    root = config.root
    if not config.snapshot_dir.is_relative_to(root):
        result.notes.append(
            f"the snapshot folder {config.snapshot_dir} is outside the repository: "
            "no .gitattributes entry for it"
        )
    else:
        snapshot_dir = config.snapshot_dir.relative_to(root).as_posix()
        if hooks.ensure_gitattributes(root, snapshot_dir):
            result.created.append(f".gitattributes entry: {hooks.attributes_line(snapshot_dir)}")
    result.notes.extend(hooks.describe(hooks.install(root, python)))
    snapshots = config.snapshot_dir.glob(f"*{SUFFIX}") if config.snapshot_dir.is_dir() else ()
    if load_synced(config.state_dir) is None and any(snapshots):
        result.notes.append(
            f"{config.snapshot_dir.name}/ already holds snapshots: if this database has not got "
            f"them yet, run 'dbsync merge {config.snapshot_dir.name}'"
        )
