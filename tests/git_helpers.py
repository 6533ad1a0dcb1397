"""Real git repositories and the real ``dbsync`` console script, isolated from the user's setup.

Every subprocess gets a temporary ``HOME`` (so the user's git config never leaks in), no system
git config, a pinned identity, and the test virtualenv's ``bin`` first on PATH. Nothing about
pulls is configured: the tests meet git's defaults, as a new user does (``dbsync init`` sets
``pull.rebase false`` in each repository it sets up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbsync.config import load_config
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, encode_record
from dbsync.edges.snapshot_files import write_snapshot as write_snapshot_file
from dbsync.edges.stores import open_store
from tests.cli_helpers import DATA
from tests.cli_helpers import Result as Run
from tests.mongo_servers import MongoServer

BIN = str(Path(sys.executable).parent)
DBSYNC = str(Path(BIN) / "dbsync")
GITCONFIG = """\
[init]
    defaultBranch = main
[advice]
    detachedHead = false
    skippedCherryPicks = false
"""
PNL_RULES = '\n[collections.pnls]\ntimestamp = "timestamp"\n'
PNL_SNAPSHOT_RULES = Rules(("_id",), "timestamp", ())  # what a snapshot header states for them


def make_home(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".gitconfig").write_text(GITCONFIG)
    return folder


def environment(home: Path, path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DBSYNC_"))}
    identity = {"NAME": "dbsync-test", "EMAIL": "test@dbsync.invalid"}
    for role in ("AUTHOR", "COMMITTER"):
        env.update({f"GIT_{role}_{key}": value for key, value in identity.items()})
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", COLUMNS="200")
    env["PATH"] = path if path is not None else BIN + os.pathsep + os.environ.get("PATH", "")
    return env


@dataclass
class Repo:
    """A git work tree where dbsync runs, as a user would run it."""

    root: Path
    env: dict[str, str]

    def run(self, args: list[str], *, ok: bool = True, stdin: str | None = None, **env: str) -> Run:
        done = subprocess.run(
            args,
            cwd=self.root,
            env={**self.env, **env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        result = Run(done.returncode, done.stdout, done.stderr)
        if ok:
            assert result.code == 0, f"{args} exited {result.code}:\n{result.output}"
        return result

    def git(self, *args: str, ok: bool = True, **env: str) -> Run:
        return self.run(["git", *args], ok=ok, **env)

    def dbsync(self, *args: str, ok: bool = True) -> Run:
        return self.run([DBSYNC, *args], ok=ok)

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").out.strip()

    def import_records(self, records: list[dict[str, Any]], mode: str = "insert") -> None:
        source = self.root.parent / f"{self.root.name}-import.json"
        source.write_text(json.dumps(records))
        self.dbsync("import", str(source), "--collection", "pnls", "--mode", mode, "-q")

    def dump(self) -> list[str]:
        return self.dbsync("dump", "pnls").out.splitlines()

    def snapshot(self) -> bytes:
        return (self.root / "database_backup" / "pnls.jsonl").read_bytes()

    def delete_records(self, ids: list[str], collection: str = "pnls") -> None:
        """Delete in the asset's database directly, as its application would: dbsync has no
        delete command."""
        uri, database = load_config(cwd=self.root, environ={}).require_database()
        store = open_store(uri, database)
        try:
            store.apply(collection, [], ids)
        finally:
            store.close()

    def push_snapshot(self) -> Run:
        """``git push`` as a user does it: the hook commits the snapshot, then push again."""
        first = self.git("push", ok=False)
        assert first.code in (0, 1), first.output
        return self.git("push") if first.code == 1 else first


def real_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(DATA.read_text())
    return records


def init_pair(
    folder: Path,
    env: dict[str, str],
    server: MongoServer | None = None,
    *,
    set_up_clone: bool = True,
) -> tuple[Repo, Repo]:
    """A bare remote, asset ``a`` (dbsync init, committed, pushed) and its clone ``b`` (where
    ``dbsync init`` runs unless ``set_up_clone`` is False).

    Each asset has its own embedded store; with ``server``, each has a database of its own on
    that MongoDB server instead (``b``'s ``init --database`` keeps its own in its untracked
    ``dbsync.local.toml``).
    """
    subprocess.run(["git", "init", "-q", "--bare", str(folder / "remote.git")], env=env, check=True)
    a, b = Repo(folder / "a", env), Repo(folder / "b", env)
    Repo(folder, env).git("clone", "-q", "remote.git", "a")
    uri = ["--uri", server.uri] if server else []
    a.dbsync(
        "init", *uri, "--database", server.new_database() if server else "shop", "--asset", "a"
    )
    with (a.root / "dbsync.toml").open("a") as handle:
        handle.write(PNL_RULES)
    a.git("add", "-A")
    a.git("commit", "-q", "-m", "dbsync init")
    a.git("push", "-q", "origin", "main")
    Repo(folder, env).git("clone", "-q", "remote.git", "b")
    if set_up_clone:
        own = ["--database", server.new_database()] if server else []
        b.dbsync("init", *uri, *own, "--asset", "b")
    return a, b


def copy_pair(template: Path, folder: Path, env: dict[str, str]) -> tuple[Repo, Repo]:
    """A fresh copy of an initialised pair (init costs seconds; a copy, milliseconds)."""
    shutil.copytree(template, folder, symlinks=True)
    pair = Repo(folder / "a", env), Repo(folder / "b", env)
    for repo in pair:
        repo.git("remote", "set-url", "origin", str(folder / "remote.git"))
    return pair


def write_snapshot(
    path: Path,
    docs: list[dict[str, Any]],
    rules: Rules = PNL_SNAPSHOT_RULES,
    collection: str = "pnls",
) -> Path:
    """A snapshot file exactly as ``dbsync export`` writes one (on another asset, say)."""
    lines = sorted(encode_record(doc, rules.key) for doc in docs)
    write_snapshot_file(path, Header(collection, rules), [line for _, line in lines])
    return path
