"""``dbsync conflicts``: losing versions listed, compared and restored (the real console script)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import orjson
import pytest
from bson import json_util

from dbsync.core.rules import Rules
from dbsync.core.snapshot import line_body
from dbsync.edges.snapshot_files import read_sections
from dbsync.edges.state import NewLosingVersion, open_state
from dbsync.errors import UsageError
from dbsync.runs.bring_back import unstamped_reason, with_timestamp
from dbsync.runs.conflicts import since_text
from tests.git_helpers import Repo, real_records
from tests.project import Project

TIMESTAMP = '\n[collections.pnl]\ntimestamp = "timestamp"\n'


def snapshot_documents(project: Project) -> list[bytes]:
    return [line_body(line) for s in read_sections(project.snapshot()) for line in s.records]


def record_conflict(project: Project, winner: bytes, loser: dict[str, Any], **extra: Any) -> int:
    """A losing version as merge, the hooks or the driver record it, through the state API."""
    state = open_state(project.state)
    try:
        (conflict_id,) = state.add_losing_versions(
            [
                NewLosingVersion(
                    collection=extra.get("collection", "pnl"),
                    key=orjson.dumps([loser["_id"]]).decode(),
                    loser=orjson.dumps(loser).decode(),
                    winner_hash="0123456789abcdef",
                    winner=winner.decode(),
                    rule="newer timestamp",
                    asset="test-asset",
                    place=extra.get("place", "merge-driver"),
                )
            ]
        )
    finally:
        state.close()
    return conflict_id


def current(project: Project, record_id: str) -> dict[str, Any]:
    """The record as the database holds it, as Python values (floats, not wrappers)."""
    (found,) = [json_util.loads(x) for x in project.dump().splitlines() if record_id in x]
    document: dict[str, Any] = found
    return document


@pytest.fixture
def conflict(pnl_project: Project) -> tuple[Project, dict[str, Any], int]:
    winner = snapshot_documents(pnl_project)[4]
    loser = {**json.loads(winner), "username": "@lost", "profit_usd": 1.25}
    return pnl_project, loser, record_conflict(pnl_project, winner, loser)


def test_losing_versions_are_listed_newest_first_and_filtered(
    conflict: tuple[Project, dict[str, Any], int],
) -> None:
    project, loser, first = conflict
    other = record_conflict(project, b'{"_id":"x"}', {"_id": "x"}, collection="other")
    listed = project.json("conflicts")
    assert [entry["id"] for entry in listed] == [other, first]
    entry = listed[1]
    assert entry["collection"] == "pnl" and entry["key"] == [loser["_id"]]
    assert entry["loser"] == loser and entry["winner"]["username"] != "@lost"
    assert entry["rule"] == "newer timestamp" and entry["place"] == "merge-driver"
    assert set(entry) >= {"time", "asset", "report", "winner_hash"}
    assert [e["id"] for e in project.json("conflicts", "--collection", "pnl")] == [first]
    assert project.json("conflicts", "--since", "2999-01-01") == []
    assert len(project.json("conflicts", "--since", "1d")) == 2
    text = project.run("conflicts").stdout
    assert f"{first:>5}  " in text and "lost by 'newer timestamp'" in text
    bad = project.run("conflicts", "--since", "yesterday", expect=2)
    assert "not a date" in bad.stderr


def test_show_compares_winner_and_loser_field_by_field(
    conflict: tuple[Project, dict[str, Any], int],
) -> None:
    project, loser, conflict_id = conflict
    shown = project.json("conflicts", "show", str(conflict_id))
    assert [(c["field"], c["new"]) for c in shown["changes"]] == [
        ("username", "@lost"),
        ("profit_usd", 1.25),
    ]
    text = project.run("conflicts", "show", str(conflict_id)).stdout
    assert 'username: "' in text and '→ "@lost"' in text
    assert f"dbsync conflicts restore {conflict_id}" in text
    missing = project.run("conflicts", "show", "999", expect=2)
    assert "no losing version 999" in missing.stderr
    assert "Missing argument 'ID'" in project.run("conflicts", "show", expect=2).stderr


def test_restore_makes_the_loser_current_with_its_timestamp_set_to_now(
    conflict: tuple[Project, dict[str, Any], int],
) -> None:
    project, loser, conflict_id = conflict
    with (project.root / "dbsync.toml").open("a") as handle:
        handle.write(TIMESTAMP)
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    restored = project.run("conflicts", "restore", str(conflict_id)).stdout
    assert f"losing version {conflict_id} is the current version again" in restored
    assert "timestamp field timestamp is set to now" in restored
    assert "newest-wins carries it to every other asset at the next sync" in restored
    now = current(project, loser["_id"])
    assert {k: v for k, v in now.items() if k != "timestamp"} == {
        k: v for k, v in loser.items() if k != "timestamp"
    }
    assert datetime.datetime.fromisoformat(now["timestamp"]) >= before.replace(microsecond=0)
    assert len(project.dump().splitlines()) == 190  # one record replaced, nothing else
    (backup, *_) = project.json("backups")
    assert "pnl" in backup["collections"]
    runs = [run for run in project.history() if run["operation"] == "restore"]
    assert runs and runs[0]["status"] == "success"
    reports = sorted((project.state / "reports").glob("merge_report_*.json"))
    report = json.loads(reports[-1].read_text())
    assert report["collections"]["pnl"]["updated"] == 1
    project.run("restore", backup["id"])  # backed up like a merge: the restore is undone
    assert current(project, loser["_id"])["username"] != "@lost"


def test_restore_without_a_timestamp_says_what_that_means(
    conflict: tuple[Project, dict[str, Any], int],
) -> None:
    project, loser, conflict_id = conflict
    restored = project.run("conflicts", "restore", str(conflict_id))
    assert "has no timestamp configured" in restored.stderr
    assert "decided by completeness and content hash, not by time" in restored.stderr
    assert current(project, loser["_id"]) == loser


def test_no_state_yet_lists_nothing(pnl_project: Project) -> None:
    assert pnl_project.json("conflicts") == []
    assert "no losing versions recorded" in pnl_project.run("conflicts").stdout
    assert not (pnl_project.state / "state.sqlite").exists()  # reading creates nothing


def test_since_reads_dates_times_and_durations() -> None:
    now = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)
    assert since_text("2026-11-30", now) == "2026-11-30T00:00:00.000+00:00"
    assert since_text("2026-11-30T12:00+02:00", now) == "2026-11-30T10:00:00.000+00:00"
    assert since_text("12h", now) == "2026-12-01T00:00:00.000+00:00"
    with pytest.raises(UsageError):
        since_text("soon", now)


# ---------------------------------------------------------------- end to end through git


def driver_records(repo: Repo) -> bool:
    return bool(json.loads(repo.dbsync("conflicts", "--json").out))


def test_a_conflict_decided_by_the_merge_driver_is_restored_and_reaches_the_other_asset(
    store_pair: tuple[Repo, Repo],
) -> None:
    a, b = store_pair
    records = real_records()[:10]
    a.import_records(records)
    a.push_snapshot()
    b.git("pull")
    record = records[2]
    newer = {**record, "username": "@newer_on_a", "timestamp": "2025-09-02T00:00:00"}
    older = {**record, "username": "@older_on_b", "timestamp": "2025-09-01T00:00:00"}
    a.import_records([newer], mode="upsert")
    b.import_records([older], mode="upsert")
    b.push_snapshot()
    assert a.git("push", ok=False).code == 1  # the hook commits a's snapshot
    pulled = a.git("pull")  # the merge driver decides: a's newer edit wins
    assert "1 conflict(s)" in pulled.err

    (lost,) = json.loads(a.dbsync("conflicts", "--json").out)
    assert lost["loser"]["username"] == "@older_on_b" and lost["place"] == "merge-driver"
    shown = json.loads(a.dbsync("conflicts", "show", str(lost["id"]), "--json").out)
    assert [(c["field"], c["old"], c["new"]) for c in shown["changes"]] == [
        ("username", "@newer_on_a", "@older_on_b"),
        ("timestamp", "2025-09-02T00:00:00", "2025-09-01T00:00:00"),
    ]
    restored = a.dbsync("conflicts", "restore", str(lost["id"]))
    assert "timestamp field timestamp is set to now" in restored.out
    a.push_snapshot()
    b.git("pull")
    (on_b,) = [json.loads(line) for line in b.dump() if record["_id"] in line]
    assert on_b["username"] == "@older_on_b" and on_b["timestamp"] > "2026"
    assert a.dump() == b.dump()


def test_a_timestamp_that_is_part_of_the_key_is_kept_as_it_was() -> None:
    """A new timestamp would make the version another record (a new key), not the same one."""
    now = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    keyed = Rules(("user", "timestamp"), "timestamp", ())
    document = {"user": 1, "timestamp": "2025-01-01T00:00:00"}
    assert with_timestamp(document, keyed, now) == document
    assert "is part of its key" in (unstamped_reason("pnl", keyed) or "")
    assert "no timestamp configured" in (unstamped_reason("pnl", Rules()) or "")
    stamped = with_timestamp(document, Rules(("user",), "timestamp", ()), now)
    assert stamped["timestamp"] == "2026-12-01T00:00:00.000"
    assert unstamped_reason("pnl", Rules(("user",), "timestamp", ())) is None
