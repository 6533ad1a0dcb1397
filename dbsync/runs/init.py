"""``dbsync init``: the configuration files of a project, shared and local.

When the database already holds data, ``init`` looks at it: a collection whose documents all
carry an obvious timestamp field (``conflict.obvious_timestamp``) gets ``timestamp = "..."``
in the new ``dbsync.toml``, and ``init`` says so; without it, "newest wins" could not apply to
that collection's conflicts.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dbsync.config import (
    CONFIG_FILE,
    DEFAULT_EMBEDDED_URI,
    DEFAULT_SNAPSHOT_DIR,
    LOCAL_CONFIG_FILE,
    STATE_DIR,
    Config,
    default_asset,
    load_config,
    resolve_uri,
)
from dbsync.core import extjson
from dbsync.core.conflict import obvious_timestamp
from dbsync.core.snapshot import SUFFIX
from dbsync.edges.files import write_bytes_atomically
from dbsync.edges.git import toplevel
from dbsync.edges.store import (
    EMBEDDED_SCHEME,
    RetryPolicy,
    embedded_path,
    open_store,
    validate_database_name,
)
from dbsync.edges.synced import load_synced
from dbsync.errors import DbsyncError
from dbsync.integration import installer as hooks

SAMPLED = 1000
"""Documents read per collection when looking for a timestamp field."""
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

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


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def shared_config_text(database: str, timestamps: Mapping[str, str] | None = None) -> str:
    proposed = "".join(
        f"\n[collections.{_toml_key(name)}]\n"
        f"timestamp = {_toml_string(field)}  # proposed by dbsync init: in every document\n"
        for name, field in sorted((timestamps or {}).items())
    )
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
        f"{proposed}"
    )


def propose_timestamps(uri: str, database: str) -> dict[str, str]:
    """Per collection of the database, the obvious timestamp field of its documents (the first
    ``SAMPLED``), if any. Looking is a courtesy: a database that is not there (an embedded
    store not created yet, a server that does not answer) gives no proposal, not an error."""
    if uri.startswith(EMBEDDED_SCHEME) and not embedded_path(uri).is_dir():
        return {}
    try:
        store = open_store(uri, database, retry=RetryPolicy(budget_seconds=0))
    except DbsyncError:
        return {}
    try:
        found = {}
        for name in store.collection_names():
            sample = itertools.islice(store.iter_documents(name), SAMPLED)
            field = obvious_timestamp([extjson.to_json_value(doc) for doc in sample])
            if field is not None:
                found[name] = field
        return found
    except DbsyncError:
        return {}
    finally:
        store.close()


def _proposal_notes(timestamps: Mapping[str, str]) -> list[str]:
    return [
        f"collection {name}: every document read has {field!r}, so dbsync.toml says "
        f'timestamp = "{field}" under [collections.{name}]: in a conflict the newer version '
        "wins (edit or remove the line if that is not what it means)"
        for name, field in sorted(timestamps.items())
    ]


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
    if database is not None:  # refused now, not by the first export
        validate_database_name(database)
    git_root = toplevel(cwd)
    root = git_root or cwd
    result = InitResult(root)
    shared = root / CONFIG_FILE
    chosen = uri or DEFAULT_EMBEDDED_URI
    if shared.exists():
        result.kept.append(CONFIG_FILE)
    else:
        database = database or _default_database(root)
        timestamps = propose_timestamps(resolve_uri(chosen, root), database)
        result.notes += _proposal_notes(timestamps)
        write_bytes_atomically(shared, shared_config_text(database, timestamps).encode())
        result.created.append(CONFIG_FILE)
    local = root / LOCAL_CONFIG_FILE
    if local.exists():
        result.kept.append(LOCAL_CONFIG_FILE)
    else:
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
