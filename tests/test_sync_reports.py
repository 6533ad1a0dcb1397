"""What sync says about itself is true: failing cycles make the asset WARNING, then DEGRADED
(with git's reason and the fix) and fire the alert; sync shows what the hooks merged and what
they warned of; an asset whose own edits keep losing conflicts is told so where it looks."""

from __future__ import annotations

import json

from dbsync.agent.schedule import Agent
from dbsync.config import load_config
from tests.git_helpers import Repo, real_records
from tests.test_agent import RunningAgent

RECORDS = real_records()


def sync_reasons(repo: Repo) -> list[dict]:
    document = json.loads(repo.dbsync("status", "--json", ok=False).out)
    return [reason for reason in document["reasons"] if reason["check"] == "sync"]


def test_failing_syncs_make_the_asset_warning_then_degraded_with_gits_reason(pair):
    a, _ = pair
    a.git("remote", "set-url", "origin", str(a.root.parent / "nowhere.git"))
    assert a.dbsync("sync", ok=False).code == 6
    (once,) = sync_reasons(a)
    assert once["level"] == "WARNING" and "git pull failed" in once["message"]
    assert "dbsync sync" in once["fix"]
    for _ in range(2):
        assert a.dbsync("sync", ok=False).code == 6
    (thrice,) = sync_reasons(a)
    assert thrice["level"] == "DEGRADED" and "the last 3 syncs" in thrice["message"]
    assert "nowhere.git" in thrice["message"]  # git's own words: what is wrong

    a.git("remote", "set-url", "origin", str(a.root.parent / "remote.git"))
    a.dbsync("sync", "-q")
    assert sync_reasons(a) == []


def test_usage_errors_are_no_failed_sync(pair):
    a, _ = pair
    a.git("checkout", "-q", "-b", "lonely")
    assert a.dbsync("sync", ok=False).code == 2
    assert sync_reasons(a) == []


def test_an_agent_whose_every_cycle_fails_is_degraded_and_alerts(pair, tmp_path):
    a, _ = pair
    alerts = tmp_path / "alerts.jsonl"
    with (a.root / "dbsync.local.toml").open("a") as local:
        local.write(f'alert_command = "cat >> {alerts}; echo >> {alerts}"\n')
    a.git("remote", "set-url", "origin", "/nonexistent")
    agent = RunningAgent(a)
    try:
        agent.wait_for(r"cycle 1: failed.*git pull failed.*status WARNING")
        agent.call("POST", "/sync")
        agent.wait_for(r"cycle 2: failed.*status WARNING")
        agent.call("POST", "/sync")
        agent.wait_for(r"cycle 3: failed.*status DEGRADED")
        document = agent.call("GET", "/status")[1]
    finally:
        agent.stop()
    assert document["status"] == "DEGRADED"
    (reason,) = [r for r in document["reasons"] if r["check"] == "sync"]
    assert "/nonexistent" in reason["message"] and "dbsync sync" in reason["fix"]
    fired = [json.loads(line) for line in alerts.read_text().split("\n") if line]
    assert [alert["status"] for alert in fired] == ["DEGRADED"]


def no_timestamp_conflict(a: Repo, b: Repo) -> None:
    """Both assets edit one record of a collection that has no timestamp configured."""
    for repo in (a, b):
        (repo.root / "items.json").write_text('{"_id": 1, "v": "first"}\n')
    a.dbsync("import", str(a.root / "items.json"), "-c", "items", "-q")
    a.dbsync("sync", "-q")
    b.dbsync("sync", "-q")
    for repo, value in ((a, "edited on a"), (b, "edited on b, longer")):
        (repo.root / "items.json").write_text(json.dumps({"_id": 1, "v": value}) + "\n")
        repo.dbsync(
            "import", str(repo.root / "items.json"), "-c", "items", "-q", "--mode", "upsert"
        )
    a.dbsync("sync", "-q")


def test_sync_shows_what_the_hooks_merged_and_warned_of(pair):
    a, b = pair
    no_timestamp_conflict(a, b)

    done = b.dbsync("sync", "--json")

    result = json.loads(done.out)
    assert any("merged database_backup into the database" in line for line in result["merges"])
    (warning,) = [w for w in result["warnings"] if "no timestamp is configured" in w]
    assert "[collections.items]" in warning
    assert "no timestamp is configured for items" in done.err  # said on the terminal too
    assert result["conflicts"]["decided"] == 1


def test_an_asset_whose_own_edits_keep_losing_is_told_where_it_looks(pair):
    """a's clock runs an hour behind: every record both assets edit, a's edit loses."""
    a, b = pair
    shared = RECORDS[:3]
    a.import_records(shared)
    a.dbsync("sync", "-q")
    b.dbsync("sync", "-q")
    b.import_records(
        [{**r, "profit_usd": 2.0, "timestamp": "2026-01-01T12:00:00"} for r in shared], "upsert"
    )
    b.dbsync("sync", "-q")
    a.import_records(
        [{**r, "profit_usd": 1.0, "timestamp": "2026-01-01T11:30:00"} for r in shared], "upsert"
    )

    done = a.dbsync("sync", "--json")

    result = json.loads(done.out)
    assert result["conflicts"] == {"decided": 3, "own_version_lost": 3}
    assert any("own version lost 3 of the 3" in w for w in result["warnings"])
    assert any("keeps editing the same records" in w for w in result["warnings"])
    document = json.loads(a.dbsync("status", "--json", ok=False).out)
    (losing,) = [r for r in document["reasons"] if r["check"] == "conflicts"]
    assert losing["level"] == "WARNING" and "dbsync conflicts" in losing["fix"]
    config = load_config(cwd=a.root, environ={})
    page = Agent(lambda: config, 3600.0, lambda line: None).page()
    assert "own edits lost 3 of the 3 conflicts" in page and "dbsync conflicts" in page
