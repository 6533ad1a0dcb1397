"""Running the real ``dbsync`` console script in a subprocess, in a project folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DBSYNC = str(Path(sys.executable).with_name("dbsync"))
DATA = Path(__file__).resolve().parents[1] / "dbsync" / "data" / "telegrampnl-pnls.json"
"""The 190 real PNL records (11 duplicate pairs, string timestamps) the demo also uses."""


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


@dataclass
class Project:
    """A folder with dbsync.toml, an embedded store, and the real console script."""

    root: Path

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        environment = {**os.environ, "COLUMNS": "200", **(env or {})}
        for name in ("DBSYNC_URI", "DBSYNC_DATABASE", "DBSYNC_ASSET"):
            environment.pop(name, None) if name not in (env or {}) else None
        done = subprocess.run(
            [DBSYNC, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            input=stdin,
            env=environment,
            timeout=120,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self.run(*args, **kwargs)
        assert result.code == 0, result.output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").out)

    def snapshot(self, collection: str = "pnls") -> bytes:
        return (self.root / "database_backup" / f"{collection}.jsonl").read_bytes()


def new_project(
    root: Path, database: str = "shop", toml: str = "", uri: str | None = None
) -> Project:
    """A project on an embedded store, or on the MongoDB server ``uri`` names."""
    root.mkdir(parents=True, exist_ok=True)
    project = Project(root)
    on_server = ["--uri", uri] if uri else []
    project.ok("init", *on_server, "--database", database, "--asset", root.name)
    if toml:
        with (root / "dbsync.toml").open("a") as handle:
            handle.write(toml)
    return project


def write_lines(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(doc) + "\n" for doc in documents))
    return path
