"""``dbsync.toml``, ``dbsync.local.toml``, ``DBSYNC_*`` variables and flags → one frozen Config.

Precedence: flag > environment > ``dbsync.local.toml`` (untracked, per asset) > ``dbsync.toml``
(tracked, shared). Unknown keys and wrong types are refused naming the file and the key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbsync.core.rules import Rules
from dbsync.errors import InvalidInput, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "dbsync.toml"
LOCAL_CONFIG_FILE = "dbsync.local.toml"
STATE_DIR = "database_sync"
DEFAULT_SNAPSHOT_DIR = "database_backup"
DEFAULT_EMBEDDED_URI = f"embedded://{STATE_DIR}/db"

_TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "uri": str,
    "database": str,
    "asset": str,
    "snapshot_dir": str,
    "retry_seconds": (int, float),
    "lock_timeout": (int, float),
    "alert_command": str,
    "collections": dict,
}
_COLLECTION: dict[str, type | tuple[type, ...]] = {
    "key": list,
    "timestamp": str,
    "preserve": list,
    "exclude": bool,
}
_ENVIRONMENT = {"uri": "DBSYNC_URI", "database": "DBSYNC_DATABASE", "asset": "DBSYNC_ASSET"}
LOCK_TIMEOUT_VARIABLE = "DBSYNC_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 10.0  # seconds to wait for another run's lock (edges.lock)


@dataclass(frozen=True)
class CollectionConfig:
    rules: Rules = Rules()
    exclude: bool = False


@dataclass(frozen=True)
class Config:
    """Everything a command needs to know about this asset; built once per run."""

    root: Path
    uri: str | None
    database: str | None
    asset: str
    snapshot_dir: Path
    retry_seconds: float = 30.0
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    alert_command: str | None = None
    collections: Mapping[str, CollectionConfig] = field(default_factory=dict)
    config_file: Path | None = None
    not_set_up: tuple[str, str] | None = None
    """Why no command may touch a store here, and the fix (``set_up_problem``); None when one
    may."""

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def rules(self, collection: str) -> Rules:
        return self.collections.get(collection, CollectionConfig()).rules

    def excluded(self, collection: str) -> bool:
        return self.collections.get(collection, CollectionConfig()).exclude

    def require_set_up(self) -> None:
        """Refuse, before anything is opened or written, a folder that is not a dbsync project
        or a clone that was never set up (``set_up_problem``)."""
        if self.not_set_up is not None:
            message, hint = self.not_set_up
            raise UsageError(message, hint=hint)

    def require_database(self) -> tuple[str, str]:
        """The URI and database name, or a usage error saying how to set them."""
        self.require_set_up()
        if not self.database:
            raise UsageError(
                "no database configured",
                hint="run 'dbsync init --database NAME', or pass --database / set DBSYNC_DATABASE",
            )
        return resolve_uri(self.uri or DEFAULT_EMBEDDED_URI, self.root), self.database


def default_asset(root: Path) -> str:
    """The hostname and the project folder's name: two clones on one machine (a bot and its
    staging copy, say) must not sign their commits and reports with one name."""
    import socket  # here: every hook reads the configuration, few need the hostname

    return f"{socket.gethostname()}-{root.name}"


def resolve_uri(uri: str, root: Path) -> str:
    """Make an ``embedded://`` path absolute, relative to the project root."""
    prefix = "embedded://"
    if not uri.startswith(prefix):
        return uri
    path = Path(uri[len(prefix) :]).expanduser()
    return prefix + str(path if path.is_absolute() else (root / path).resolve())


def find_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding ``dbsync.toml``."""
    for directory in (start, *start.parents):
        if (directory / CONFIG_FILE).is_file():
            return directory
    return None


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file checked against the keys and types dbsync knows."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{path}: not valid TOML: {error}") from None
    _check_table(path, data, _TOP_LEVEL, "")
    for name, table in data.get("collections", {}).items():
        if not isinstance(table, dict):
            raise InvalidInput(f"{path}: collections.{name} must be a table")
        _check_table(path, table, _COLLECTION, f"collections.{name}.")
        for list_key in ("key", "preserve"):
            if not all(isinstance(item, str) for item in table.get(list_key, [])):
                raise InvalidInput(f"{path}: collections.{name}.{list_key} must list field names")
        if "key" in table and not table["key"]:
            raise InvalidInput(f"{path}: collections.{name}.key must name at least one field")
    return dict(data)


def _check_table(path: Path, table: dict[str, Any], known: dict[str, Any], prefix: str) -> None:
    for key, value in table.items():
        if key not in known:
            raise InvalidInput(
                f"{path}: unknown key '{prefix}{key}'",
                hint=f"known keys here: {', '.join(sorted(known))}",
            )
        expected = known[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            names = expected.__name__ if isinstance(expected, type) else "number"
            raise InvalidInput(f"{path}: '{prefix}{key}' must be a {names}, got {value!r}")


def _collections(table: Mapping[str, Any]) -> dict[str, CollectionConfig]:
    collections = {}
    for name, spec in table.items():
        rules = Rules(
            key=tuple(spec.get("key", ["_id"])),
            timestamp=spec.get("timestamp"),
            preserve=tuple(spec.get("preserve", [])),
        )
        collections[name] = CollectionConfig(rules=rules, exclude=spec.get("exclude", False))
    return collections


def _lock_timeout(merged: Mapping[str, Any], environ: Mapping[str, str]) -> float:
    """Seconds a run waits for another run's lock: DBSYNC_LOCK_TIMEOUT, else ``lock_timeout``."""
    text = environ.get(LOCK_TIMEOUT_VARIABLE)
    if not text:
        return float(merged.get("lock_timeout", DEFAULT_LOCK_TIMEOUT))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise UsageError(
            f"{LOCK_TIMEOUT_VARIABLE}={text!r} is not a number of seconds",
            hint=f"set it to a number, e.g. {LOCK_TIMEOUT_VARIABLE}=30, or unset it",
        )
    return seconds


def set_up_problem(
    cwd: Path, root: Path, config_file: Path | None, merged: Mapping[str, Any]
) -> tuple[str, str] | None:
    """Why a command that touches a store must not run here, and the fix; None when it may.

    No ``dbsync.toml`` (and no database given): not a project. A git clone whose
    ``dbsync.toml`` came with it but whose ``dbsync.local.toml`` did not, and no URI anywhere
    (flag, ``DBSYNC_URI``, either file): ``dbsync init`` never ran in it, and going on would
    put the records in a new, empty embedded store while the machine's MongoDB stays as it was.
    """
    if config_file is None and not merged.get("database"):
        return (
            f"not a dbsync project: no {CONFIG_FILE} in {cwd} or above",
            "run 'dbsync init' to set one up here, or run dbsync inside the project",
        )
    local = root / LOCAL_CONFIG_FILE
    clone = config_file is not None and (root / ".git").exists()
    if clone and not local.is_file() and not merged.get("uri"):
        return (
            f"this clone is not set up: {CONFIG_FILE} came with it, but {LOCAL_CONFIG_FILE} "
            "(this machine's database URI and name) did not, so its records would go to a new, "
            "empty embedded store",
            "run 'dbsync init --uri mongodb://HOST/' here (or 'dbsync init' for the embedded "
            "store); --uri or DBSYNC_URI also do for one command",
        )
    return None


def load_config(
    *,
    cwd: Path | None = None,
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge the four sources into one Config."""
    cwd = (cwd or Path.cwd()).resolve()
    environ = os.environ if environ is None else environ
    if config_file is not None:
        if not config_file.is_file():
            raise UsageError(f"config file {config_file} does not exist")
        config_file = config_file.resolve()
        root = config_file.parent
    else:
        found = find_root(cwd)
        root = found or cwd
        config_file = root / CONFIG_FILE if found else None
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(read_toml(config_file))
    local = root / LOCAL_CONFIG_FILE
    if local.is_file():
        local_data = read_toml(local)
        merged.update({k: v for k, v in local_data.items() if k != "collections"})
        merged["collections"] = {
            **merged.get("collections", {}),
            **local_data.get("collections", {}),
        }
    for key, variable in _ENVIRONMENT.items():
        if environ.get(variable):
            merged[key] = environ[variable]
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    return Config(
        root=root,
        uri=merged.get("uri"),
        database=merged.get("database"),
        asset=merged.get("asset") or default_asset(root),
        snapshot_dir=root / merged.get("snapshot_dir", DEFAULT_SNAPSHOT_DIR),
        retry_seconds=float(merged.get("retry_seconds", 30.0)),
        lock_timeout=_lock_timeout(merged, environ),
        alert_command=merged.get("alert_command"),
        collections=_collections(merged.get("collections", {})),
        config_file=config_file,
        not_set_up=set_up_problem(cwd, root, config_file, merged),
    )
