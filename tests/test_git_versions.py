"""No version lost on any git path: rebase, cherry-pick, a pull while the database was down, and
conflicts decided by the merge driver, between two real clones with the real hooks.

Deletions are made as a bot makes them: through montydb's own client on the asset's embedded
store, not through dbsync.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import montydb
import pytest

from dbsync.edges.state import open_state_read_only
from tests.git_helpers import Repo, real_records

RECORDS = real_records()
GONE = RECORDS[3]["_id"]


def bot_delete(repo: Repo, record_id: str) -> None:
    """What the application does on that asset: delete through its own database client."""
    client = montydb.MontyClient(str(repo.root / "database_sync" / "db"))
    try:
        assert client["shop"]["pnls"].delete_one({"_id": record_id}).deleted_count == 1
    finally:
        client.close()


def bot_update(repo: Repo, record_id: str, **fields: Any) -> None:
    client = montydb.MontyClient(str(repo.root / "database_sync" / "db"))
    try:
        client["shop"]["pnls"].update_one({"_id": record_id}, {"$set": fields})
    finally:
        client.close()


def ids(repo: Repo) -> set[str]:
    return {json.loads(line)["_id"] for line in repo.dump()}


def shared_start(a: Repo, b: Repo) -> None:
    """Both assets hold the same 20 records, synced through the remote."""
    a.import_records(RECORDS[:20])
    a.push_snapshot()
    b.git("pull")
    assert GONE in ids(b)


def a_deletes_and_pushes(a: Repo) -> None:
    bot_delete(a, GONE)
    a.push_snapshot()


def b_commits_its_own_snapshot(b: Repo) -> None:
    """b's application inserted records; b's push commits its snapshot, then is refused."""
    b.import_records(RECORDS[20:22])
    assert b.git("push", ok=False).code == 1  # the hook committed the snapshot
    assert b.git("push", ok=False).code != 0  # rejected: a pushed first


def diverged(a: Repo, b: Repo) -> None:
    """a deleted a record and pushed; b committed a snapshot of its own on top of the old one."""
    shared_start(a, b)
    a_deletes_and_pushes(a)
    b_commits_its_own_snapshot(b)


def converge(a: Repo, b: Repo) -> None:
    b.push_snapshot()
    a.git("pull")
    assert a.snapshot() == b.snapshot()
    assert a.dump() == b.dump()


def test_a_deletion_stays_deleted_after_a_fast_forward_pull(pair: tuple[Repo, Repo]) -> None:
    a, b = pair
    shared_start(a, b)
    a_deletes_and_pushes(a)
    pulled = b.git("pull")
    assert "Fast-forward" in pulled.out
    assert "merged database_backup into the database (three-way)" in pulled.err, pulled.err
    assert GONE not in ids(b)


@pytest.mark.parametrize("pull", [["pull", "--no-rebase"], ["pull", "--rebase"]])
def test_a_deletion_stays_deleted_after_a_pull_over_a_local_snapshot_commit(
    pair: tuple[Repo, Repo], pull: list[str]
) -> None:
    a, b = pair
    diverged(a, b)
    pulled = b.git(*pull)
    merges = b.git("rev-list", "--merges", "HEAD").out
    assert (merges == "") == ("--rebase" in pull)  # rebased, or merged
    assert "merged database_backup into the database (three-way)" in pulled.err, pulled.err
    assert GONE not in ids(b)
    converge(a, b)
    assert GONE not in ids(a) and len(ids(a)) == 21


def test_a_deletion_stays_deleted_after_a_cherry_pick_of_the_deleting_commit(
    pair: tuple[Repo, Repo],
) -> None:
    a, b = pair
    diverged(a, b)
    b.git("fetch", "-q")
    picked = b.git("cherry-pick", "origin/main")
    assert "merged database_backup into the database (three-way)" in picked.err, picked.err
    assert GONE not in ids(b)
    b.git("pull")  # b's branch and the remote still diverge: the ordinary pull joins them
    converge(a, b)
    assert GONE not in ids(a) and len(ids(a)) == 21


def test_an_ordinary_commit_of_the_snapshot_merges_nothing(pair: tuple[Repo, Repo]) -> None:
    a, _ = pair
    a.import_records(RECORDS[:5])
    a.dbsync("export", "-q")
    a.git("add", "database_backup")
    committed = a.git("commit", "-m", "snapshot by hand")
    assert "dbsync" not in committed.err


def test_a_pull_while_the_database_was_down_is_merged_three_way_later(
    pair: tuple[Repo, Repo],
) -> None:
    a, b = pair
    shared_start(a, b)
    a_deletes_and_pushes(a)
    local = b.root / "dbsync.local.toml"
    reachable = local.read_text()
    unreachable = 'uri = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200"'
    local.write_text(f'{unreachable}\nasset = "b"\nretry_seconds = 0.2\n')
    pulled = b.git("pull")
    assert "pending" in pulled.err
    local.write_text(reachable)
    merged = b.dbsync("merge", "database_backup")
    assert "merged (three-way)" in merged.out, merged.output
    assert GONE not in ids(b)
    b.import_records(RECORDS[20:21])
    converge(a, b)
    assert GONE not in ids(a)


def test_a_conflict_decided_by_the_merge_driver_is_reported_and_kept_after_12_merges(
    pair: tuple[Repo, Repo],
) -> None:
    a, b = pair
    shared_start(a, b)
    edited = RECORDS[5]["_id"]
    bot_update(a, edited, username="@newer_on_a", timestamp="2025-09-02T00:00:00")
    a.push_snapshot()
    bot_update(b, edited, username="@older_on_b", timestamp="2025-09-01T00:00:00")
    assert b.git("push", ok=False).code == 1
    pulled = b.git("pull")
    assert "1 conflict(s) decided by the rules; every losing version is in" in pulled.err
    assert "(and 1 by the git merge driver, see below)" in pulled.err, pulled.err
    reports = b.root / "database_sync" / "reports"
    driver = [
        json.loads(path.read_text())
        for path in sorted(reports.glob("*.json"))
        if json.loads(path.read_text())["source"] == "database_backup/pnls.jsonl"
    ]
    assert len(driver) == 1
    (conflict,) = driver[0]["collections"]["pnls"]["conflicts"]
    assert conflict["loser"]["username"] == "@older_on_b"
    assert conflict["winner"]["username"] == "@newer_on_a"
    database_merge = json.loads(sorted(reports.glob("*.json"))[-1].read_text())
    assert database_merge["collections"]["pnls"]["conflicts_resolved"] == 0  # decided already
    assert database_merge["collections"]["pnls"]["conflicts_by_merge_driver"] == 1
    assert database_merge["merge_driver"]["conflicts"] == {"pnls": 1}
    (named,) = database_merge["merge_driver"]["reports"]
    assert "@older_on_b" in (b.root / named).read_text()  # the driver's text report, with the loser
    history = json.loads(b.dbsync("history", "--json", "--limit", "50").out)
    assert {"merge-driver"} <= {row["operation"] for row in history}

    for _ in range(12):
        b.dbsync("merge", "database_backup", "-q")
    assert not [p for p in reports.glob("*.json") if "pnls.jsonl" in p.read_text()]
    state = open_state_read_only(b.root / "database_sync")
    assert state is not None
    try:
        (kept,) = state.losing_versions()
    finally:
        state.close()
    assert (kept.place, kept.collection, kept.asset) == ("merge-driver", "pnls", "b")
    assert json.loads(kept.loser)["username"] == "@older_on_b"
    assert json.loads(kept.key) == [edited]
    assert kept.winner is not None and json.loads(kept.winner)["username"] == "@newer_on_a"
    assert Path(str(kept.report)).name.startswith("merge_report_")


def test_amending_the_synced_snapshot_commit_moves_the_synced_commit(
    pair: tuple[Repo, Repo],
) -> None:
    a, _ = pair
    a.import_records(RECORDS[:3])
    assert a.git("push", ok=False).code == 1  # the hook committed and synced the snapshot
    a.git("commit", "--amend", "-q", "-m", "dbsync: a snapshot, reworded")
    meta = json.loads((a.root / "database_sync" / "synced" / "synced.json").read_text())
    assert meta["commit"] == a.head()
