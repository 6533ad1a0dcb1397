"""``dbsync sync``: pull (the hooks merge), export, commit, push, in one command."""

import json

from tests.git_helpers import real_records


def reports(repo) -> list:
    folder = repo.root / "database_sync" / "reports"
    return sorted(folder.glob("merge_report_*.json")) if folder.exists() else []


def test_sync_sends_local_records_and_brings_the_other_assets(pair):
    a, b = pair
    records = real_records()
    a.import_records(records[:100])
    out = a.dbsync("sync").out
    assert "export: committed" in out and "push: done" in out
    b.import_records(records[100:])
    out = b.dbsync("sync").out
    assert "merge: done by the post-merge hook" in out
    assert "push: done" in out
    assert len(reports(b)) == 1  # merged once, by the hook: sync did not merge again
    a.dbsync("sync")
    assert len(a.dump()) == len(b.dump()) == 190
    assert a.dump() == b.dump()
    assert a.snapshot() == b.snapshot()
    assert b.git("status", "--porcelain").out == ""


def test_sync_after_another_asset_pushed_merges_the_snapshots(pair):
    a, b = pair
    records = real_records()
    a.import_records(records[:150])
    a.dbsync("sync")
    b.dbsync("sync")
    a.import_records(
        [{**records[0], "profit_usd": 1.0, "timestamp": "2026-01-01T00:00:00"}], "upsert"
    )
    b.import_records(records[150:])
    a.dbsync("sync")
    b.dbsync("sync")  # pulls a's commit: the merge driver and the hook merge both snapshots
    a.dbsync("sync")
    assert a.dump() == b.dump()
    assert len(a.dump()) == 190
    edited = [json.loads(line) for line in b.dump() if records[0]["_id"] in line]
    assert edited[0]["profit_usd"] == {"$numberDouble": "1.0"}


def test_without_hooks_sync_merges_itself_once(pair):
    a, b = pair
    a.import_records(real_records()[:20])
    a.dbsync("sync")
    b.dbsync("hooks", "uninstall")
    out = b.dbsync("sync").out
    assert "merged database_backup into the database" in out
    assert len(reports(b)) == 1
    assert len(b.dump()) == 20


def test_sync_needs_an_upstream(pair):
    a, _ = pair
    a.git("checkout", "-q", "-b", "lonely")
    result = a.dbsync("sync", ok=False)
    assert result.code == 2
    assert "git push -u origin" in result.err
