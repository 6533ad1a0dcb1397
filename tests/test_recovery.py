"""A pull whose merge is killed: following what ``status`` says brings every record and every
deletion, the first time, on the embedded store and on MongoDB.

The merge is the real post-merge hook of a real ``git pull``, killed with SIGKILL at a chosen
point: git's environment for that pull puts a ``sitecustomize`` on ``PYTHONPATH`` that makes one
internal function kill its own process (nothing in dbsync knows about it). Then the test runs,
literally, each command ``dbsync status`` names as the fix, until status is HEALTHY.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.git_helpers import DBSYNC, Repo, init_pair
from tests.mongo_servers import MongoServer

SITECUSTOMIZE = """
import importlib, os, signal

spec = os.environ.get("DBSYNC_TEST_KILL")
if spec:
    module_name, attribute, calls = spec.split(":")
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    function, seen = getattr(owner, name), []

    def killing(*args, **kwargs):
        seen.append(1)
        if len(seen) > int(calls):
            os.kill(os.getpid(), signal.SIGKILL)
        return function(*args, **kwargs)

    setattr(owner, name, killing)
"""

RECORDS = 2500
DELETED = 40
EDITED = 1200


def records() -> list[dict[str, Any]]:
    return [
        {"_id": f"r{number:05d}", "user": f"user{number}", "timestamp": "2024-01-01T00:00:00"}
        for number in range(RECORDS)
    ]


@pytest.fixture(params=["embedded", "replica-set"])
def assets(request, tmp_path, git_env) -> tuple[str, Repo, Repo]:
    server: MongoServer | None = None
    if request.param != "embedded":
        server = request.getfixturevalue("replica_set")
    return (request.param, *init_pair(tmp_path / "assets", git_env, server))


def killer(tmp_path: Path) -> Path:
    folder = tmp_path / "killer"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def follow_status(repo: Repo, rounds: int = 4) -> list[str]:
    """Run every fix ``status`` names (``run 'dbsync ...'``) until it is HEALTHY."""
    done = []
    for _ in range(rounds):
        status = json.loads(repo.dbsync("status", "--json", ok=False).out)
        if status["status"] == "HEALTHY":
            return done
        fixes = [re.search(r"run '(dbsync [^']+)'", r["fix"]) for r in status["reasons"]]
        commands = [found.group(1) for found in fixes if found]
        assert commands, status["reasons"]
        repo.run([DBSYNC, *shlex.split(commands[0])[1:]])
        done.append(commands[0])
    raise AssertionError(f"still not HEALTHY after {done}: {status['reasons']}")


POINTS = {
    "before the backup is complete": "dbsync.runs.merge:plan_collection:0",
    "after the journal, before writing": "dbsync.runs.merge:apply_plan:0",
    "while writing": "",  # the store's own: below
}
WHILE_WRITING = {
    "embedded": "dbsync.edges.store:_write_change:600",  # inside the one transaction
    "replica-set": "dbsync.edges.mongo:MongoStore._cas_in_transaction:1",  # a batch committed
}


@pytest.mark.parametrize("point", list(POINTS))
def test_following_status_after_a_killed_hook_merge_keeps_every_deletion(assets, tmp_path, point):
    store, a, b = assets
    kill = POINTS[point] or WHILE_WRITING[store]
    a.import_records(records())
    a.push_snapshot()
    b.git("pull", "-q")
    gone = [f"r{number:05d}" for number in range(DELETED)]
    b.delete_records(gone)
    edited = [
        {**record, "user": "edited on b", "timestamp": "2025-01-01T00:00:00"}
        for record in records()[DELETED : DELETED + EDITED]
    ]
    b.import_records(edited, mode="upsert")
    b.push_snapshot()

    pulled = a.git("pull", "-q", PYTHONPATH=str(killer(tmp_path)), DBSYNC_TEST_KILL=kill)
    assert pulled.code == 0
    assert follow_status(a), "the kill left nothing to recover: it did not happen"

    assert a.dump() == b.dump()
    assert not [line for line in a.dump() if any(key in line for key in gone)]
