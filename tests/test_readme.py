"""README.md's "Using it", run literally on two machines: a bare remote, two clones.

The commands are read out of the README, so the test follows the text: a step left out of the
README (``.gitattributes`` in the ``git add``, ``dbsync init`` on the second machine) makes it
fail. Two substitutions only: each machine's database for the MongoDB URI, and a bare
repository's path for the remote's URL. It runs twice: each machine with its own embedded
store, and each machine with its own MongoDB server (a SecantusDB replica set: the database
name, ``telegram``, is shared through ``dbsync.toml``, so the two machines cannot share a
server, as two machines with a local ``mongod`` each do not). Both on git's default
configuration: the test's git config sets nothing about pulls.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bson import json_util

from dbsync.config import resolve_uri
from dbsync.edges.stores import open_store
from tests.cli_helpers import DATA
from tests.git_helpers import Repo, environment, make_home
from tests.mongo_servers import EMBEDDED, EXTERNAL, REPLICA_SET, start_server

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


def run_machine(home: Path, commands: list[str], uri: str, remote: Path, url: str) -> None:
    """One machine's commands in one shell (so ``cd`` holds), stopping at the first failure;
    ``uri`` (this machine's database) in place of the README's MongoDB URI."""
    script = "\n".join(
        ["set -ex", *(c.replace(MONGODB_URI, uri).replace(url, str(remote)) for c in commands)]
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


def database(uri: str, root: Path) -> list[bytes]:
    """The machine's ``pnls`` as the BSON its store holds, sorted."""
    store = open_store(resolve_uri(uri, root), "telegram")
    try:
        return sorted(store.iter_raw_documents("pnls"))
    finally:
        store.close()


def seed(uri: str, root: Path) -> None:
    """The bot's database on machine 1, there before dbsync is."""
    store = open_store(resolve_uri(uri, root), "telegram")
    try:
        store.insert_many("pnls", json_util.loads(DATA.read_text()))
    finally:
        store.close()


@pytest.fixture(params=[EMBEDDED, "mongodb"])
def machine_uris(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The URI each machine puts where the README says ``mongodb://localhost:27017``."""
    if request.param == EMBEDDED:
        yield EMBEDDED_URI, EMBEDDED_URI
        return
    if os.environ.get(EXTERNAL[REPLICA_SET]):
        pytest.skip("two machines, two servers: the tests start SecantusDB for each")
    servers = [start_server(REPLICA_SET, tmp_path / f"server{n}") for n in (1, 2)]
    try:
        yield servers[0].uri.rstrip("/"), servers[1].uri.rstrip("/")
    finally:
        for server in servers:
            server.stop()


def test_using_it_works_literally_on_two_machines(
    tmp_path: Path, machine_uris: tuple[str, str]
) -> None:
    uri1, uri2 = machine_uris
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
    seed(uri1, first / "my-bot")

    run_machine(first, steps["1"], uri1, remote, url)
    run_machine(second, steps["2"], uri2, remote, url)

    merged = database(uri2, second / "my-bot")
    assert len(merged) == len(json_util.loads(DATA.read_text()))
    assert merged == database(uri1, first / "my-bot")
    clone = second / "my-bot"
    assert "merge=dbsync" in (clone / ".gitattributes").read_text()  # it came with the clone
    hook = clone / ".git" / "hooks" / "post-merge"
    assert "dbsync" in hook.read_text()  # the next pull merges by itself
