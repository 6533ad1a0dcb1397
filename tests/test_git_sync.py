"""Two assets syncing through a bare remote with the real hooks: push, pull, merge, rebase.

The flows that write the database run on each store (``store_pair``): embedded stores, and a
database of each asset's own on a MongoDB server (replica set; the concurrent merge, whose
writes differ without transactions, on a standalone server too).
"""

from __future__ import annotations

import json

import pytest

from tests.git_helpers import Repo, real_records, write_snapshot
from tests.mongo_servers import STORES

RECORDS = real_records()


def synced_commit(repo: Repo) -> str:
    meta = repo.root / "database_sync" / "synced" / "synced.json"
    commit: str = json.loads(meta.read_text())["commit"]
    return commit


def assert_identical(a: Repo, b: Repo) -> list[str]:
    """Byte-identical snapshot files and identical databases; returns the dump."""
    assert a.snapshot() == b.snapshot()
    dump = a.dump()
    assert dump == b.dump()
    return dump


def test_push_commits_the_snapshot_then_a_fast_forward_pull_merges_it(
    store_pair: tuple[Repo, Repo],
) -> None:
    a, b = store_pair
    a.import_records(RECORDS[:40])
    before = a.head()
    first = a.git("push", ok=False)
    assert first.code == 1
    hook_lines = [line for line in first.err.splitlines() if line.startswith("dbsync:")]
    assert len(hook_lines) == 1 and "push again" in hook_lines[0], first.err
    assert a.git("log", "-1", "--format=%s").out.strip() == "dbsync: a snapshot (40 records)"
    assert a.git("rev-parse", "HEAD~1").out.strip() == before
    assert a.git("status", "--porcelain").out == ""
    assert synced_commit(a) == a.head()
    second = a.git("push")
    assert "dbsync:" not in second.err
    assert a.git("rev-parse", "origin/main").out.strip() == a.head()

    pulled = b.git("pull")
    assert "Fast-forward" in pulled.out
    assert "merged database_backup into the database (two-way)" in pulled.err
    assert len(assert_identical(a, b)) == 40
    assert synced_commit(b) == b.head()


@pytest.mark.parametrize("store_pair", STORES, indirect=True)
def test_concurrent_snapshots_merge_without_conflict_and_converge(
    store_pair: tuple[Repo, Repo],
) -> None:
    a, b = store_pair
    shared = RECORDS[:30]
    a.import_records(shared)
    a.push_snapshot()
    b.git("pull")
    # Concurrent work: new records on each side, one record edited on both (a's edit is newer),
    # one record deleted by b.
    edited_a = {**shared[0], "username": "@edited_on_a", "timestamp": "2025-09-02T00:00:00"}
    edited_b = {**shared[0], "username": "@edited_on_b", "timestamp": "2025-09-01T00:00:00"}
    a.import_records([*RECORDS[30:40], edited_a], mode="upsert")
    b.import_records([*RECORDS[40:45], edited_b], mode="upsert")
    b.delete_records([shared[1]["_id"]])
    b.push_snapshot()
    assert a.git("push", ok=False).code == 1  # the hook commits a's snapshot
    assert a.git("push", ok=False).code != 0  # rejected: b pushed first
    pulled = a.git("pull")
    assert "CONFLICT" not in pulled.out
    assert "merged database_backup/pnls.jsonl record by record (three-way)" in pulled.err
    assert "merged database_backup into the database (three-way)" in pulled.err
    a.push_snapshot()
    b.git("pull")
    records = {r["_id"]: r for r in map(json.loads, assert_identical(a, b))}
    assert len(records) == 30 + 10 + 5 - 1
    assert shared[1]["_id"] not in records  # deleted on b, unchanged on a: three-way deletes
    assert records[shared[0]["_id"]]["username"] == "@edited_on_a"  # the newer timestamp
    assert a.git("status", "--porcelain").out == ""


def test_pull_rebase_merges_the_rebased_snapshot(store_pair: tuple[Repo, Repo]) -> None:
    a, b = store_pair
    a.import_records(RECORDS[:20])
    a.push_snapshot()
    b.import_records(RECORDS[20:25])
    assert b.git("push", ok=False).code == 1
    pulled = b.git("pull", "--rebase")
    assert "CONFLICT" not in pulled.out + pulled.err
    # three-way: the synced commit was rebased, and its rewrite descends from it
    assert "merged database_backup into the database (three-way)" in pulled.err
    assert b.git("rev-list", "--merges", "HEAD").out == ""  # rebased, not merged
    b.push_snapshot()
    a.git("pull")
    assert len(a.dump()) == 25
    assert_identical(a, b)


def test_an_unreachable_database_leaves_the_merge_pending_and_git_succeeds(
    pair: tuple[Repo, Repo],
) -> None:
    _, b = pair
    b.git("switch", "-q", "-c", "incoming")  # another asset's snapshot, arriving by a merge
    write_snapshot(b.root / "database_backup" / "pnls.jsonl", RECORDS[:10])
    b.git("add", "database_backup")
    b.git("commit", "-q", "-m", "snapshot from elsewhere")
    b.git("switch", "-q", "main")
    local = b.root / "dbsync.local.toml"
    unreachable = 'uri = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200"'
    local.write_text(f'{unreachable}\nasset = "b"\nretry_seconds = 0.2\n')
    merged = b.git("merge", "incoming")
    assert "Fast-forward" in merged.out
    warning = [line for line in merged.err.splitlines() if "pending" in line]
    assert len(warning) == 1 and "'dbsync merge database_backup' retries it" in warning[0]
    assert b.head() == b.git("rev-parse", "incoming").out.strip()


def test_init_on_a_clone_adds_only_the_local_parts(pair: tuple[Repo, Repo]) -> None:
    _, b = pair
    assert b.git("status", "--porcelain").out == ""  # nothing tracked was touched
    assert (b.root / "dbsync.local.toml").is_file()
    status = json.loads(b.dbsync("hooks", "status", "--json").out)
    assert status["complete"], status
    assert (
        b.git("config", "--local", "merge.dbsync.driver")
        .out.strip()
        .endswith("-m dbsync merge-driver %O %A %B %P")
    )
