"""``dbsync init``: the configuration files of a project, shared and local.

Every flag ``init`` is given is kept, or refused with the reason: ``--database`` on a clone whose
tracked ``dbsync.toml`` names another database goes to ``dbsync.local.toml`` (this clone's own,
over the shared one); a flag that contradicts a value ``dbsync.local.toml`` already holds is
refused before anything is written, since ``init`` never changes a value it finds; ``--config``
is refused (``init`` writes ``dbsync.toml`` where the project is). ``--uri`` must be a URI dbsync
takes, and is asked whether it answers: a database that does not is a warning, not a failure
(the server may just be down now).

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
from typing import Any

from dbsync.config import (
    CONFIG_FILE,
    DEFAULT_EMBEDDED_URI,
    DEFAULT_SNAPSHOT_DIR,
    LOCAL_CONFIG_FILE,
    STATE_DIR,
    Config,
    default_asset,
    load_config,
    read_toml,
    resolve_uri,
)
from dbsync.core import extjson
from dbsync.core.conflict import obvious_timestamp
from dbsync.core.snapshot import SUFFIX
from dbsync.edges import installer as hooks
from dbsync.edges.files import write_bytes_atomically
from dbsync.edges.git import toplevel
from dbsync.edges.store import EMBEDDED_SCHEME, RetryPolicy, Store
from dbsync.edges.stores import embedded_path, open_store, validate_database_name
from dbsync.edges.synced import load_synced
from dbsync.errors import DbsyncError, UsageError

SAMPLED = 1000
"""Documents read per collection when looking for a timestamp field."""
PING_SECONDS = 2.0
"""How long ``init --uri`` waits for the database to answer before it warns."""
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

IGNORED = (f"{STATE_DIR}/", LOCAL_CONFIG_FILE)


@dataclass
class InitResult:
    root: Path
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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


def local_config_text(values: Mapping[str, str]) -> str:
    """A new ``dbsync.local.toml`` holding ``values`` (uri, asset, maybe database)."""
    lines = "".join(f"{key} = {_toml_string(value)}\n" for key, value in values.items())
    return (
        "# dbsync: this asset only (not tracked). Flags and DBSYNC_* variables override it.\n"
        + lines
    )


def _with_values(text: str, values: Mapping[str, str]) -> str:
    """``text`` (an existing ``dbsync.local.toml``) with ``values`` added as top-level keys,
    before its first table (where TOML still reads them as top-level)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    tables = (i for i, line in enumerate(lines) if line.lstrip().startswith("["))
    first_table = next(tables, len(lines))
    added = [f"{key} = {_toml_string(value)}\n" for key, value in values.items()]
    return "".join(lines[:first_table] + added + lines[first_table:])


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
    config_file: Path | None = None,
    python: str = sys.executable,
) -> InitResult:
    """Write what is missing; never overwrite a value that exists (idempotent).

    In a git repository it also sets up the git integration; on a clone that already has
    ``dbsync.toml`` that adds only local parts (git config, hooks, ``dbsync.local.toml``), as the
    tracked ones came with the clone. Every flag is kept or refused (see the module docstring),
    and refused before anything is written.
    """
    if database is not None:  # refused now, not by the first export
        validate_database_name(database)
    if config_file is not None:
        raise UsageError(
            "init takes no --config: it writes dbsync.toml at the root of the repository",
            hint="run 'dbsync init' in the project's folder; --config is for the other commands",
        )
    root = toplevel(cwd) or cwd
    result = InitResult(root)
    shared = _read_if_there(root / CONFIG_FILE)
    local = _read_if_there(root / LOCAL_CONFIG_FILE)
    given = {"uri": uri, "asset": asset, "database": database}
    additions = _local_additions(shared, local, given)
    name = database or (shared or {}).get("database") or _default_database(root)
    store = _store_to_ask(uri, name)  # a URI dbsync does not take is refused here
    try:
        _write_shared(root, result, shared, name, uri)
        _write_local(root, result, local, additions, uri, asset)
        _write_the_rest(root, result, python)
        if store is not None:
            _ask(store, result)
    finally:
        if store is not None:
            store.close()
    return result


def _read_if_there(path: Path) -> dict[str, Any] | None:
    return read_toml(path) if path.exists() else None


def _local_additions(
    shared: Mapping[str, Any] | None,
    local: Mapping[str, Any] | None,
    given: Mapping[str, str | None],
) -> dict[str, str]:
    """What ``dbsync.local.toml`` must gain for the flags to hold: each flag given that the
    files do not say yet (``--database`` only when ``dbsync.toml`` exists and says another).
    A flag contradicting what ``dbsync.local.toml`` holds is refused."""
    wanted = {key: value for key, value in given.items() if value is not None}
    if shared is None or wanted.get("database") == shared.get("database"):
        wanted.pop("database", None)  # the new dbsync.toml gets it, or the tracked one has it
    found = dict(local or {})
    clashes = {key: value for key, value in wanted.items() if found.get(key, value) != value}
    if clashes:
        said = ", ".join(f"{key} = {_toml_string(str(found[key]))}" for key in clashes)
        flags = ", ".join(f"--{key} {value}" for key, value in clashes.items())
        raise UsageError(
            f"{LOCAL_CONFIG_FILE} already sets {said}: init never changes a value it finds, "
            f"so {flags} would be ignored; nothing was written",
            hint=f"edit {LOCAL_CONFIG_FILE} (or remove it and run 'dbsync init' again)",
        )
    return {key: value for key, value in wanted.items() if key not in found}


def _store_to_ask(uri: str | None, database: str) -> Store | None:
    """The store ``--uri`` names, not contacted yet (None: no ``--uri``, or an embedded store,
    which is created on first use); a URI dbsync does not take is a usage error."""
    if uri is None or uri.startswith(EMBEDDED_SCHEME):
        return None
    return open_store(uri, database, retry=RetryPolicy(budget_seconds=PING_SECONDS))


def _ask(store: Store, result: InitResult) -> None:
    """Whether the database answers: a warning if not, since it may only be down now."""
    try:
        store.ping()
    except DbsyncError as error:
        result.warnings.append(
            f"the database does not answer ({error.message}); dbsync.local.toml keeps the "
            "URI: check it, then run 'dbsync status'"
        )


def _write_shared(
    root: Path, result: InitResult, shared: Mapping[str, Any] | None, database: str, uri: str | None
) -> None:
    path = root / CONFIG_FILE
    if shared is not None:
        result.kept.append(CONFIG_FILE)
        return
    timestamps = propose_timestamps(resolve_uri(uri or DEFAULT_EMBEDDED_URI, root), database)
    result.notes += _proposal_notes(timestamps)
    write_bytes_atomically(path, shared_config_text(database, timestamps).encode())
    result.created.append(CONFIG_FILE)


def _write_local(
    root: Path,
    result: InitResult,
    local: Mapping[str, Any] | None,
    additions: dict[str, str],
    uri: str | None,
    asset: str | None,
) -> None:
    path = root / LOCAL_CONFIG_FILE
    if "database" in additions:
        result.notes.append(
            f"{LOCAL_CONFIG_FILE} says database = {_toml_string(additions['database'])}: this "
            f"clone's own database, over the one {CONFIG_FILE} names for every asset"
        )
    if local is None:
        values = {"uri": uri or DEFAULT_EMBEDDED_URI, "asset": asset or default_asset(root)}
        write_bytes_atomically(path, local_config_text({**values, **additions}).encode())
        result.created.append(LOCAL_CONFIG_FILE)
        if uri is None:
            result.notes.append(
                f"using the embedded store in {STATE_DIR}/db (no server needed); "
                "pass --uri mongodb://HOST/ to sync a MongoDB instead"
            )
        return
    if not additions:
        result.kept.append(LOCAL_CONFIG_FILE)
        return
    write_bytes_atomically(path, _with_values(path.read_text(), additions).encode())
    result.created.append(
        f"{LOCAL_CONFIG_FILE} entries: "
        + ", ".join(f"{key} = {_toml_string(value)}" for key, value in additions.items())
    )


def _write_the_rest(root: Path, result: InitResult, python: str) -> None:
    """``.gitignore``, the snapshot folder, and in a git repository its integration."""
    added = ensure_gitignore(root)
    if added:
        result.created.append(".gitignore entries: " + ", ".join(added))
    (root / DEFAULT_SNAPSHOT_DIR).mkdir(exist_ok=True)
    if toplevel(root) is None:
        result.notes.append(
            "not a git repository: skipped .gitattributes, the merge and diff drivers and the "
            "hooks; run 'dbsync init' again after 'git init'"
        )
    else:
        set_up_git(load_config(cwd=root), result, python)


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
