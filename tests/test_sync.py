"""``dbsync sync``: pull (the hooks merge), export, commit, push, in one command."""

import json
from pathlib import Path

from dbsync.runs.sync import rejected_as_behind
from tests.git_helpers import Repo, environment, real_records


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
    assert "merge: merged database_backup into the database (two-way): 100 record(s)" in out
    assert "push: done" in out
    assert len(reports(b)) == 1  # merged once, by the hook: sync did not merge again
    a.dbsync("sync")
    assert len(a.dump()) == len(b.dump()) == 190
    assert a.dump() == b.dump()
    assert a.snapshot() == b.snapshot()
    assert b.git("status", "--porcelain").out == ""


def test_sync_after_another_asset_pushed_merges_the_snapshots(store_pair):
    a, b = store_pair
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


# ------------------------------------------------------------- any git configuration


def stock(repo: Repo, home: Path) -> Repo:
    """The same work tree under a stock git configuration: nothing set but the identity (no
    pull.rebase, pull.ff or init.defaultBranch, which the other tests' gitconfig sets)."""
    home.mkdir(exist_ok=True)
    (home / ".gitconfig").write_text("[user]\n    name = stock\n    email = stock@dbsync.invalid\n")
    return Repo(repo.root, environment(home))


def test_sync_reconciles_a_diverged_branch_on_a_stock_git_configuration(pair, tmp_path):
    a, b = pair
    records = real_records()
    b.import_records(records[:10])
    b.dbsync("export", "-q")
    b.git("add", "-A", "database_backup")
    b.git("commit", "-q", "-m", "b's snapshot, not pushed yet")
    a.import_records(records[10:30])
    a.push_snapshot()  # the remote now has a commit b lacks: the branches diverged
    b_stock, a_stock = stock(b, tmp_path / "home"), stock(a, tmp_path / "home")
    out = b_stock.dbsync("sync").out
    assert "merge: merged database_backup into the database" in out and "push: done" in out
    assert len(b.dump()) == 30
    a_stock.dbsync("sync")
    assert a.dump() == b.dump() and a.snapshot() == b.snapshot()


# ------------------------------------------------------------- git failures exit 6


def test_an_unreachable_remote_exits_6_without_a_traceback_or_the_password(pair):
    a, _ = pair
    a.git("remote", "set-url", "origin", "https://sync:s3cr3t-pw@127.0.0.1:9/remote.git")
    result = a.dbsync("sync", ok=False)
    assert result.code == 6, result.output
    assert "git pull failed" in result.err
    assert "s3cr3t-pw" not in result.output and "Traceback" not in result.output


def test_a_push_the_remote_refuses_exits_6(pair):
    a, _ = pair
    remote = a.root.parent / "remote.git"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'frozen for maintenance' >&2\nexit 1\n")
    hook.chmod(0o755)
    a.import_records(real_records()[:5])
    result = a.dbsync("sync", ok=False)
    assert result.code == 6, result.output
    assert "git push failed" in result.err and "frozen for maintenance" in result.err
    assert "Traceback" not in result.output


def test_only_a_push_behind_the_remote_counts_as_rejected_for_another_assets_push():
    behind = "To /r.git\n!\tHEAD:refs/heads/main\t[rejected] (fetch first)\nDone\n"
    non_fast_forward = (
        "To /r.git\n!\trefs/heads/main:refs/heads/main\t[rejected] (non-fast-forward)\n"
    )
    refused = "To /r.git\n!\trefs/heads/main:refs/heads/main\t[remote rejected] (hook declined)\n"
    pushed = "To /r.git\n \tHEAD:refs/heads/main\t5207813..4e870e0\nDone\n"
    assert rejected_as_behind(behind) and rejected_as_behind(non_fast_forward)
    assert not rejected_as_behind(refused) and not rejected_as_behind(pushed)
    assert not rejected_as_behind("")  # the pre-push hook stopped it: no ref line at all
