"""A pull whose merge is killed: following what ``status`` says brings every record and every
deletion, the first time, on the embedded store and on MongoDB.

The merge is the real post-merge hook of a real ``git pull``, killed with SIGKILL at a chosen
point (``tests/killpoints.py``: git's environment for that pull makes one internal function
kill its own process; nothing in dbsync knows about it). Then the test runs, literally, each
command ``dbsync status`` names as the fix, until status is HEALTHY.

On MongoDB the same kill points also stop the hook in the middle of a batch's writes (a
transaction written and not committed on a replica set; written and not read back on a
standalone server), and the *server* (SIGKILL, then started again on the same port and
storage) before a pull and during its merge: the merge is pending, the pull still succeeds, and
what ``status`` names completes it once the server is back.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from tests import killpoints
from tests.git_helpers import DBSYNC, Repo, Run, init_pair
from tests.mongo_servers import (
    EMBEDDED,
    EXTERNAL,
    MODES,
    REPLICA_SET,
    SERVER_FIXTURES,
    STANDALONE,
    MongoServer,
    start_server,
)

RECORDS = 2500
DELETED = 40
EDITED = 1200
FEWER = 300  # one write batch: enough where the kill point is not between batches


def records(count: int = RECORDS) -> list[dict[str, Any]]:
    return [
        {"_id": f"r{number:05d}", "user": f"user{number}", "timestamp": "2024-01-01T00:00:00"}
        for number in range(count)
    ]


@pytest.fixture(params=[EMBEDDED, REPLICA_SET])
def assets(request, tmp_path, git_env) -> tuple[str, Repo, Repo]:
    server: MongoServer | None = None
    if request.param != EMBEDDED:
        server = request.getfixturevalue(SERVER_FIXTURES[request.param])
    return (request.param, *init_pair(tmp_path / "assets", git_env, server))


def diverge(a: Repo, b: Repo, count: int = RECORDS) -> list[str]:
    """``a`` pushes ``count`` records, ``b`` pulls them, deletes ``DELETED`` and edits
    ``EDITED`` (at most half of the rest), then pushes; returns the deleted keys."""
    a.import_records(records(count))
    a.push_snapshot()
    b.git("pull", "-q")
    gone = [f"r{number:05d}" for number in range(DELETED)]
    b.delete_records(gone)
    edited = [
        {**record, "user": "edited on b", "timestamp": "2025-01-01T00:00:00"}
        for record in records(count)[DELETED : DELETED + min(EDITED, count // 2)]
    ]
    b.import_records(edited, mode="upsert")
    b.push_snapshot()
    return gone


def assert_converged(a: Repo, b: Repo, gone: list[str]) -> None:
    """The same records on both assets, and none of those ``b`` deleted."""
    dump = a.dump()
    assert dump == b.dump()
    assert not [line for line in dump if any(key in line for key in gone)]


def follow_status(repo: Repo, rounds: int = 4) -> list[tuple[str, Run]]:
    """Run every fix ``status`` names (``run 'dbsync ...'``) until it is HEALTHY; each command
    with what it printed. HEALTHY, no command refuses: ``dbsync export`` (what every ``git
    push`` runs) then goes through."""
    done: list[tuple[str, Run]] = []
    for _ in range(rounds):
        status = json.loads(repo.dbsync("status", "--json", ok=False).out)
        if status["status"] == "HEALTHY":
            exported = repo.dbsync("export", ok=False)
            assert exported.code == 0, f"HEALTHY after {[c for c, _ in done]}: {exported.output}"
            return done
        fixes = [re.search(r"run '(dbsync [^']+)'", r["fix"]) for r in status["reasons"]]
        commands = [found.group(1) for found in fixes if found]
        assert commands, status["reasons"]
        done.append((commands[0], repo.run([DBSYNC, *shlex.split(commands[0])[1:]])))
    ran = [command for command, _ in done]
    raise AssertionError(f"still not HEALTHY after {ran}: {status['reasons']}")


POINTS = {
    "before the backup is complete": "dbsync.runs.merge:_planned:0",
    "after the journal, before writing": "dbsync.runs.merge:apply_plan:0",
    "while writing": "",  # the store's own: below
}
WHILE_WRITING = {
    EMBEDDED: "dbsync.edges.embedded:_write_change:600",  # inside the one transaction
    REPLICA_SET: "dbsync.edges.mongo:MongoStore._cas_in_transaction:1",  # a batch committed
}


@pytest.mark.parametrize("point", list(POINTS))
def test_following_status_after_a_killed_hook_merge_keeps_every_deletion(assets, tmp_path, point):
    store, a, b = assets
    kill = POINTS[point] or WHILE_WRITING[store]
    gone = diverge(a, b)

    pulled = a.git("pull", "-q", **killpoints.at(tmp_path / "killer", kill))
    assert pulled.code == 0
    assert follow_status(a), "the kill left nothing to recover: it did not happen"

    assert_converged(a, b, gone)


def test_a_merge_run_by_hand_after_a_killed_hook_merge_leaves_status_true(assets, tmp_path):
    """The user merges the snapshot again by hand (not the fix status names): then either
    status is not HEALTHY, or export (every push) goes through — never HEALTHY while it
    refuses; and following status still brings every record and deletion."""
    store, a, b = assets
    gone = diverge(a, b)
    pulled = a.git("pull", "-q", **killpoints.at(tmp_path / "killer", WHILE_WRITING[store]))
    assert pulled.code == 0
    merged = a.dbsync("merge", "database_backup", ok=False)
    status = json.loads(a.dbsync("status", "--json", ok=False).out)
    exported = a.dbsync("export", ok=False)
    healthy = status["status"] == "HEALTHY"
    assert not healthy or exported.code == 0, (merged.output, status, exported.output)
    follow_status(a)
    assert_converged(a, b, gone)


# ------------------------------------------------------------- MongoDB: mid-write, the server

MID_WRITE = {
    # the batch's transaction has written, not committed: its locks outlive the killed process
    # until the server's transaction lifetime ends (3 s on this test's server; mongod: 60 s)
    REPLICA_SET: "pymongo.client_session:ClientSession.commit_transaction:0",
    # no transaction: the batch is written, not yet read back
    STANDALONE: "dbsync.edges.mongo:read_raw:1",
}


@pytest.fixture(params=MODES)
def short_lifetime_server(request, tmp_path) -> Iterator[MongoServer]:
    """A server of the test's own whose transactions live 3 s (mongod: 60 s by default)."""
    if os.environ.get(EXTERNAL[request.param]):
        pytest.skip("needs a server whose transaction lifetime the test sets: SecantusDB only")
    server = start_server(request.param, tmp_path / "mongo", transaction_lifetime=3.0)
    yield server
    server.stop()


def test_a_hook_merge_killed_mid_write_on_mongodb_is_recovered_the_first_time(
    short_lifetime_server, tmp_path, git_env
):
    """On a replica set the killed hook leaves a transaction written and not committed, whose
    locks the server keeps until its lifetime ends (the fix status names waits for them if
    they are still held when it runs: ``test_mongo_safety`` tests that wait and its message);
    on a standalone server, the batch written and not read back, its journal open."""
    server = short_lifetime_server
    a, b = init_pair(tmp_path / "assets", git_env, server)
    gone = diverge(a, b, FEWER)

    kill = MID_WRITE[server.mode]
    pulled = a.git("pull", "-q", **killpoints.at(tmp_path / "killer", kill))
    assert pulled.code == 0

    fixes = follow_status(a)
    assert fixes, "the kill left nothing to recover: it did not happen"
    assert fixes[0][0] == "dbsync merge --resume"
    assert_converged(a, b, gone)


def quick_retries(repo: Repo) -> None:
    """Give up on an unreachable server after 1 s (30 s by default) in this asset."""
    with (repo.root / "dbsync.local.toml").open("a") as local:
        local.write("retry_seconds = 1\n")


def assert_pending(pulled: Run) -> None:
    """The pull succeeded and said that its merge is pending."""
    assert pulled.code == 0
    (warning,) = [line for line in pulled.err.splitlines() if "is pending" in line]
    assert "the merge of database_backup into the database is pending" in warning


def test_a_server_killed_before_a_pull_leaves_the_merge_pending_until_it_is_back(
    own_server, tmp_path, git_env
):
    a, b = init_pair(tmp_path / "assets", git_env, own_server)
    quick_retries(a)
    gone = diverge(a, b, FEWER)
    own_server.kill()

    assert_pending(a.git("pull"))
    down = json.loads(a.dbsync("status", "--json", ok=False).out)
    assert down["status"] == "DEGRADED"
    assert {"pending", "database"} <= {reason["check"] for reason in down["reasons"]}, down

    own_server.start()  # the same port and storage
    assert follow_status(a)
    assert_converged(a, b, gone)


def test_a_server_killed_during_a_pull_s_merge_leaves_it_pending_until_it_is_back(
    own_server, tmp_path, git_env
):
    """SIGKILL to the server when the hook's merge has started a batch's transaction."""
    a, b = init_pair(tmp_path / "assets", git_env, own_server)
    quick_retries(a)
    gone = diverge(a, b, FEWER)

    kill = "dbsync.edges.mongo:_write_in_transaction:0"
    pulled = a.git("pull", **killpoints.at(tmp_path / "killer", kill, server=own_server))

    assert_pending(pulled)
    own_server.kill()  # reaps the process the hook killed
    own_server.start()
    assert follow_status(a)
    assert_converged(a, b, gone)
