"""``dbsync demo``: two assets, one bare git remote, real hooks, converging — in a temporary folder.

Everything runs as a user would run it: ``git`` and the ``dbsync`` command in subprocesses, so
the hooks and the merge driver that git calls are the real ones. Each step is printed; at the end
both databases and both snapshots are compared and the demo fails (exit 1) if they differ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbsync.edges.git import run_git
from dbsync.errors import DbsyncError

DATA = Path(__file__).resolve().parent.parent / "data" / "telegrampnl-pnls.json"
GITCONFIG = """\
[user]
    name = dbsync demo
    email = demo@dbsync.invalid
[init]
    defaultBranch = main
[advice]
    detachedHead = false
"""
COLLECTIONS = """
[collections.pnls]
timestamp = "timestamp"

[collections.trades]
key = ["user", "ticker", "opened"]
timestamp = "updated_at"
"""


@dataclass
class Asset:
    """One machine of the demo: a clone with its own embedded database."""

    name: str
    root: Path
    env: dict[str, str]

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_git(list(args), self.root, check=check, env=self.env)

    def dbsync(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "dbsync", *args]
        done = subprocess.run(
            command, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise DbsyncError(f"{self.name}: dbsync {' '.join(args)} failed:\n{done.stderr}")
        return done

    def push(self) -> str:
        """``git push``; when pre-push committed a new snapshot, push again, as it asks."""
        first = self.git("push", check=False)
        if first.returncode == 0:
            return "pushed"
        if "push again" not in first.stderr:
            raise DbsyncError(f"{self.name}: git push failed:\n{first.stderr}")
        self.git("push")
        return "pre-push hook committed the snapshot; pushed again"

    def load(self, collection: str, documents: list[dict[str, Any]]) -> None:
        source = self.root.parent / f"{self.name}-{collection}.json"
        source.write_text("\n".join(json.dumps(doc) for doc in documents) + "\n")
        self.dbsync("import", str(source), "--collection", collection, "--mode", "upsert")

    def count(self, collection: str) -> int:
        stats = json.loads(self.dbsync("stats", "--json").stdout)
        return int(stats["collections"].get(collection, {}).get("count", 0))

    def dump(self, collection: str) -> str:
        return self.dbsync("dump", collection).stdout


def _environment(home: Path) -> dict[str, str]:
    home.mkdir(parents=True)
    (home / ".gitconfig").write_text(GITCONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DBSYNC_"))}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", PYTHONSAFEPATH="1")
    return env


def _pnl(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "_id": {"$oid": f"{number:024x}"},
        "user_id": f"demo_{number}",
        "username": f"@demo{number}",
        "ticker": "DEMO",
        "profit_usd": float(number),
        "timestamp": "2025-07-01T00:00:00",
        **fields,
    }


def _trade(object_id: str, updated: str) -> dict[str, Any]:
    return {
        "_id": {"$oid": object_id},
        "user": "@alice",
        "ticker": "SOL",
        "opened": {"$date": "2025-07-01T08:00:00Z"},
        "size": 12.5,
        "updated_at": {"$date": updated},
    }


class Demo:
    def __init__(self, root: Path, emit: Callable[[str], None]) -> None:
        self.root, self.emit, self.step = root, emit, 0
        self.env = _environment(root / "home")

    def say(self, text: str) -> None:
        self.step += 1
        self.emit(f"{self.step:2}. {text}")

    def setup(self) -> tuple[Asset, Asset]:
        remote = self.root / "remote.git"
        run_git(["init", "--bare", "--quiet", str(remote)], self.root, env=self.env)
        laptop, server = (Asset(n, self.root / n, self.env) for n in ("laptop", "server"))
        run_git(["clone", "--quiet", str(remote), str(laptop.root)], self.root, env=self.env)
        laptop.dbsync("init", "--database", "demo", "--asset", "laptop")
        with (laptop.root / "dbsync.toml").open("a") as handle:
            handle.write(COLLECTIONS)
        laptop.git("add", "-A")
        laptop.git("commit", "--quiet", "-m", "Set up dbsync")
        laptop.git("push", "--quiet", "-u", "origin", "main")
        run_git(["clone", "--quiet", str(remote), str(server.root)], self.root, env=self.env)
        server.dbsync("init", "--asset", "server")
        self.say(
            "a bare remote and two clones, 'laptop' and 'server', each with its own embedded "
            "database; 'dbsync init' installed the hooks and the merge driver"
        )
        return laptop, server

    def first_sync(self, laptop: Asset, server: Asset) -> None:
        records = json.loads(DATA.read_text())
        laptop.load("pnls", records)
        self.say(f"laptop: imported {len(records)} real PNL records (11 of them duplicate pairs)")
        self.say(f"laptop: git push — {laptop.push()}")
        server.git("pull", "--quiet")
        self.say(f"server: git pull — the post-merge hook merged: {server.count('pnls')} records")

    def concurrent_work(self, laptop: Asset, server: Asset) -> None:
        laptop.load("pnls", [_pnl(n) for n in (1, 2, 3)])
        server.load("pnls", [_pnl(n) for n in (4, 5)])
        self.say("laptop adds 3 records, server adds 2")
        laptop.load("trades", [_trade("a" * 24, "2025-07-01T08:00:00Z")])
        server.load("trades", [_trade("b" * 24, "2025-07-01T08:00:00Z")])
        self.say("both record the same trade, under different _ids (one record by its key)")
        edited = json.loads(DATA.read_text())[0]
        laptop.load("pnls", [{**edited, "profit_usd": 999.0, "timestamp": "2025-07-02T12:00:00"}])
        server.load("pnls", [{**edited, "profit_usd": 111.0, "timestamp": "2025-07-02T09:00:00"}])
        self.say("both edit the same record: laptop at 12:00 (999.0), server at 09:00 (111.0)")

    def exchange(self, laptop: Asset, server: Asset) -> None:
        self.say(f"laptop: git push — {laptop.push()}")
        first = server.git("push", check=False)
        if "push again" in first.stderr:
            first = server.git("push", check=False)
        if first.returncode == 0:
            raise DbsyncError("server: git push should have been rejected (non-fast-forward)")
        self.say(
            "server: git push — the hook committed server's snapshot, but the push is "
            "rejected: the remote has laptop's"
        )
        server.git("pull", "--quiet", "--no-edit")
        self.say(
            "server: git pull — the merge driver merged both snapshots record by record (no "
            f"conflict); the hook merged them into the database: {server.count('pnls')} records"
        )
        self.say(f"server: git push — {server.push()}")
        laptop.git("pull", "--quiet")
        self.say(f"laptop: git pull — merged: {laptop.count('pnls')} records")

    def check(self, laptop: Asset, server: Asset) -> bool:
        same_data = all(laptop.dump(c) == server.dump(c) for c in ("pnls", "trades"))
        files = sorted(p.name for p in (laptop.root / "database_backup").glob("*.jsonl"))
        same_files = all(
            (laptop.root / "database_backup" / n).read_bytes()
            == (server.root / "database_backup" / n).read_bytes()
            for n in files
        )
        winner = [
            json.loads(line)
            for line in laptop.dump("pnls").splitlines()
            if '"6865e26e00db2977eb40450c"' in line
        ]
        newest = bool(winner) and winner[0]["profit_usd"] == {"$numberDouble": "999.0"}
        counts = (laptop.count("pnls"), laptop.count("trades"))
        self.emit("")
        self.emit(f"databases identical: {'yes' if same_data else 'NO'}")
        self.emit(f"snapshots identical: {'yes' if same_files else 'NO'} ({', '.join(files)})")
        self.emit(f"records: pnls {counts[0]} (190 + 3 + 2), trades {counts[1]} (one trade)")
        self.emit(f"the newer edit won on both: {'yes' if newest else 'NO'}")
        return same_data and same_files and newest and counts == (195, 1)


def run_demo(emit: Callable[[str], None], *, keep: Path | None = None) -> bool:
    """Run the whole cycle; True when both assets converged. ``keep`` keeps the folder."""
    root = keep or Path(tempfile.mkdtemp(prefix="dbsync-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    emit(f"dbsync demo in {root}")
    try:
        demo = Demo(root, emit)
        laptop, server = demo.setup()
        demo.first_sync(laptop, server)
        demo.concurrent_work(laptop, server)
        demo.exchange(laptop, server)
        return demo.check(laptop, server)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
