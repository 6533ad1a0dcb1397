"""End-to-end helpers: a dbsync project in a temporary folder, driven by the real console script.

A template project (``dbsync init --database shop``, the 190 real PNL records imported and
exported) is built once per session and copied for each test, which costs milliseconds instead
of the second that ``init`` + ``import`` + ``export`` take.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_helpers import DATA

DBSYNC = str(Path(sys.executable).parent / "dbsync")


def _ctrl_c_as_at_a_terminal() -> None:
    """SIGINT back to its default in the child: a suite started in the background by a shell
    without job control inherits SIGINT ignored, and Python then installs no Ctrl-C handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without DBSYNC_* variables (a lock token above all), plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DBSYNC_")}
    env.update(extra)
    return env


def write_json_lines(path: Path, documents: list[dict]) -> Path:
    path.write_text("".join(json.dumps(document) + "\n" for document in documents))
    return path


@dataclass
class Project:
    root: Path

    def run(self, *args: str, expect: int | None = 0, env: dict[str, str] | None = None):
        """Run ``dbsync args`` in the project; check the exit code unless ``expect`` is None."""
        result = subprocess.run(
            [DBSYNC, *args], cwd=self.root, env=env or clean_env(), capture_output=True, text=True
        )
        if expect is not None:
            assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
        return result

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [DBSYNC, *args],
            cwd=self.root,
            env=env or clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ctrl_c_as_at_a_terminal,
        )

    def json(self, *args: str, expect: int | None = 0):
        return json.loads(self.run(*args, "--json", expect=expect).stdout)

    @property
    def snapshots(self) -> Path:
        return self.root / "database_backup"

    @property
    def state(self) -> Path:
        return self.root / "database_sync"

    def snapshot(self, collection: str = "pnl") -> Path:
        return self.snapshots / f"{collection}.jsonl"

    def dump(self, collection: str = "pnl") -> str:
        return self.run("dump", collection).stdout

    def history(self):
        return self.json("history", "--limit", "1000")


def make_project(root: Path, documents: list[dict] | None = None) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    project = Project(root)
    project.run("init", "--database", "shop", "--asset", "test-asset")
    with (root / "dbsync.toml").open("a") as config:
        config.write("retry_seconds = 0\n")
    if documents:
        project.run("import", str(write_json_lines(root / "pnl.json", documents)), "-c", "pnl")
        project.run("export")
    return project


@pytest.fixture(scope="session")
def pnl_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "project"
    make_project(root, json.loads(DATA.read_text()))
    for name in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):
        (root / "database_sync" / name).unlink(missing_ok=True)
    shutil.rmtree(root / "database_sync" / "backups")  # the import's: a project with no history
    return root


@pytest.fixture
def pnl_project(pnl_template: Path, tmp_path: Path) -> Project:
    """A project whose embedded database and snapshot hold the 190 PNL records; no history."""
    root = tmp_path / "project"
    shutil.copytree(pnl_template, root)
    return Project(root)


@pytest.fixture
def empty_project(tmp_path: Path) -> Project:
    return make_project(tmp_path / "project")
