"""README.md's "Using it", run literally on two machines: a bare remote, two clones.

The commands are read out of the README, so the test follows the text: a step left out of the
README (``.gitattributes`` in the ``git add``, ``dbsync init`` on the second machine) makes it
fail. Two substitutions only: each machine's embedded store for the MongoDB URI, and a bare
repository's path for the remote's URL.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bson import json_util

from dbsync.config import resolve_uri
from dbsync.edges.store import open_store
from tests.cli_helpers import DATA
from tests.git_helpers import Repo, environment, make_home

README = Path(__file__).resolve().parents[1] / "README.md"
MONGODB_URI = "mongodb://localhost:27017"
EMBEDDED_URI = "embedded://database_sync/db"
MACHINE = re.compile(r"^# machine (\d+)$")


def using_it_steps() -> dict[str, list[str]]:
    """The "Using it" block's commands, per machine, comments stripped."""
    section = README.read_text().split("## Using it", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    steps: dict[str, list[str]] = {}
    machine = None
    for line in block.splitlines():
        marker = MACHINE.match(line.strip())
        if marker:
            machine = marker.group(1)
            steps[machine] = []
            continue
        command = line.split("   #", 1)[0].split(" # ", 1)[0].strip()
        if command:
            assert machine is not None, f"a command before any '# machine N' line: {line}"
            steps[machine].append(command)
    return steps


def clone_url(steps: list[str]) -> str:
    clone = next(step for step in steps if step.startswith("git clone "))
    return clone.split()[2]


def run_machine(home: Path, commands: list[str], remote: Path, url: str) -> None:
    """One machine's commands in one shell (so ``cd`` holds), stopping at the first failure."""
    script = "\n".join(
        [
            "set -ex",
            *(c.replace(MONGODB_URI, EMBEDDED_URI).replace(url, str(remote)) for c in commands),
        ]
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=home,
        env=environment(make_home(home / ".home")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def database(root: Path) -> list[dict[str, object]]:
    store = open_store(resolve_uri(EMBEDDED_URI, root), "telegram")
    try:
        return sorted(store.iter_documents("pnls"), key=lambda doc: str(doc["_id"]))
    finally:
        store.close()


def seed(root: Path) -> None:
    """The bot's database on machine 1, there before dbsync is."""
    store = open_store(resolve_uri(EMBEDDED_URI, root), "telegram")
    try:
        store.insert_many("pnls", json_util.loads(DATA.read_text()))
    finally:
        store.close()


def test_using_it_works_literally_on_two_machines(tmp_path: Path) -> None:
    steps = using_it_steps()
    assert sorted(steps) == ["1", "2"], steps
    url = clone_url(steps["2"])
    remote = tmp_path / "remote" / "my-bot.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    first, second = tmp_path / "machine1", tmp_path / "machine2"
    first.mkdir()
    second.mkdir()
    env = environment(make_home(first / ".home"))
    Repo(first, env).git("clone", "-q", str(remote), "my-bot")
    seed(first / "my-bot")

    run_machine(first, steps["1"], remote, url)
    run_machine(second, steps["2"], remote, url)

    merged = database(second / "my-bot")
    assert len(merged) == len(json_util.loads(DATA.read_text()))
    assert merged == database(first / "my-bot")
    clone = second / "my-bot"
    assert "merge=dbsync" in (clone / ".gitattributes").read_text()  # it came with the clone
    hook = clone / ".git" / "hooks" / "post-merge"
    assert "dbsync" in hook.read_text()  # the next pull merges by itself
