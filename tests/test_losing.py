"""Losing versions kept durably, their own retention, and conflicts decided without a timestamp.

Pure parts on literal values; the CLI parts through the real console script on tiny projects.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from dbsync.config import load_config
from dbsync.core.conflict import LARGER_HASH, MORE_COMPLETE, NEWER, obvious_timestamp
from dbsync.core.merge import MergeCounts
from dbsync.core.report import SUCCESS, DriverDecisions, MergeReport, tie_break_notes
from dbsync.core.rules import Rules
from dbsync.core.snapshot import content_hash
from dbsync.edges.embedded import EmbeddedStore
from dbsync.edges.state import NewLosingVersion, open_state, open_state_read_only
from dbsync.integration.merge_driver import merge_files
from dbsync.runs.losing import MERGE, key_text, losing_versions
from dbsync.runs.prune import prune
from tests.cli_helpers import Project, new_project, write_lines
from tests.git_helpers import write_snapshot

UNTIMED = Rules(("_id",), None, ())
DATE = {"$date": {"$numberLong": "1700000000000"}}


def conflict(winner: dict[str, Any], loser: dict[str, Any] | None, rule: str) -> dict[str, Any]:
    return {"key": {"_id": winner["_id"]}, "winner": winner, "loser": loser, "rule": rule}


def report_with(*conflicts: dict[str, Any]) -> MergeReport:
    counts = MergeCounts(conflicts_resolved=len(conflicts), conflicts=list(conflicts))
    return MergeReport(SUCCESS, "now", "laptop", "there", None, collections={"items": counts})


# ---------------------------------------------------------------- pure


def test_a_key_is_recorded_as_canonical_extended_json_text() -> None:
    assert key_text({"user_id": {"$numberLong": "7"}, "n": 3}) == (
        '[{"$numberLong":"7"},{"$numberInt":"3"}]'
    )
    assert key_text({"_id": {"$oid": "6865e26e00db2977eb40450c"}}) == (
        '[{"$oid":"6865e26e00db2977eb40450c"}]'
    )


def test_every_losing_document_becomes_a_record_and_a_lost_deletion_none() -> None:
    winner, loser = {"_id": 1, "v": "new"}, {"_id": 1, "v": "old"}
    report = report_with(
        conflict(winner, loser, NEWER), conflict({"_id": 2}, None, "changed beats deleted")
    )
    (version,) = losing_versions(report, MERGE, Path("r.json"))
    assert version == NewLosingVersion(
        collection="items",
        key="[1]".replace("1", '{"$numberInt":"1"}'),
        loser='{"_id":1,"v":"old"}',
        winner_hash=content_hash(b'{"_id":1,"v":"new"}'),
        winner='{"_id":1,"v":"new"}',
        rule=NEWER,
        asset="laptop",
        place=MERGE,
        report="r.json",
    )


def test_a_tie_break_without_timestamp_is_said_once_per_collection_with_the_fix() -> None:
    first = conflict(
        {"_id": 1, "v": "b", "updated_at": DATE}, {"_id": 1, "updated_at": DATE}, MORE_COMPLETE
    )
    second = conflict(
        {"_id": 2, "v": "y", "updated_at": DATE},
        {"_id": 2, "v": "x", "updated_at": DATE},
        LARGER_HASH,
    )
    counts = MergeCounts(conflicts=[first, second])
    (note,) = tie_break_notes("items", UNTIMED, counts)
    assert "2 conflict(s) decided by larger content hash or more complete" in note
    assert 'add timestamp = "updated_at" under [collections.items] in dbsync.toml' in note
    assert tie_break_notes("items", Rules(("_id",), "updated_at", ()), counts) == []
    newer = MergeCounts(conflicts=[conflict({"_id": 1}, {"_id": 1}, NEWER)])
    assert tie_break_notes("items", UNTIMED, newer) == []


@pytest.mark.parametrize(
    ("documents", "field"),
    [
        ([{"updated_at": "2025-01-01T00:00:00", "modified": DATE}], "updated_at"),
        ([{"updatedAt": 1700000000}, {"updatedAt": 1700000001}], "updatedAt"),
        ([{"timestamp": DATE}, {"timestamp": "yesterday"}], None),  # not readable everywhere
        ([{"at": DATE, "n": 1}, {"at": DATE}], "at"),  # the one date field in every document
        ([{"at": DATE, "born": DATE}], None),  # two date fields: not obvious
        ([{"at": DATE}, {"n": 1}], None),
        ([], None),
    ],
)
def test_an_obvious_timestamp_field_is_found_only_when_it_is_obvious(
    documents: list[dict[str, Any]], field: str | None
) -> None:
    assert obvious_timestamp(documents) == field


# ---------------------------------------------------------------- retention


def test_losing_versions_have_their_own_retention(tmp_path: Path) -> None:
    (tmp_path / "dbsync.toml").write_text('database = "shop"\n')
    config = load_config(cwd=tmp_path, environ={})
    state = open_state(config.state_dir)
    version = NewLosingVersion("items", "[1]", "{}", "h", None, NEWER, "a", MERGE)
    state.add_losing_versions([version])
    state.close()
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=31)
    assert prune(config, 0, now=later).losing_versions == 0  # off by default
    assert prune(config, 0, conflicts_older_than=40, now=later).losing_versions == 0
    assert prune(config, 0, conflicts_older_than=30, now=later).losing_versions == 1
    reading = open_state_read_only(config.state_dir)
    assert reading is not None and reading.losing_versions() == []
    reading.close()


def test_prune_refuses_a_negative_number_of_days(tmp_path: Path) -> None:
    project = new_project(tmp_path / "p")
    refused = project.run("prune", "--conflicts-older-than", "-1")
    assert refused.code == 2, refused.output


# ---------------------------------------------------------------- through the CLI


def test_the_first_hash_decided_conflict_without_timestamp_warns(tmp_path: Path) -> None:
    project = new_project(tmp_path / "p")
    docs = [
        {"_id": n, "v": "here", "updated_at": {"$date": "2025-01-01T00:00:00Z"}} for n in (1, 2)
    ]
    project.ok("import", str(write_lines(tmp_path / "in.json", docs)), "-c", "items")
    moment = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    theirs = [{**doc, "v": "there", "updated_at": moment} for doc in docs]
    write_snapshot(tmp_path / "theirs.jsonl", theirs, UNTIMED, "items")
    merged = project.ok("merge", str(tmp_path / "theirs.jsonl"))
    warnings = [line for line in merged.err.splitlines() if "no timestamp is configured" in line]
    assert len(warnings) == 1, merged.output
    assert 'timestamp = "updated_at" under [collections.items]' in warnings[0]
    (text,) = (project.root / "database_sync" / "reports").glob("*.txt")
    assert "no timestamp is configured for items" in text.read_text()
    assert _recorded(project) == 2


def _recorded(project: Project) -> int:
    state = open_state_read_only(project.root / "database_sync")
    assert state is not None
    try:
        return len(state.losing_versions(collection="items"))
    finally:
        state.close()


def test_dedupe_records_its_losing_versions(tmp_path: Path) -> None:
    project = new_project(tmp_path / "p", toml='\n[collections.items]\nkey = ["sku"]\n')
    docs = [{"_id": 1, "sku": "A", "v": "one"}, {"_id": 2, "sku": "A", "v": "two", "x": 1}]
    project.ok("import", str(write_lines(tmp_path / "in.json", docs)), "-c", "items")
    project.ok("export", "--dedupe")
    state = open_state_read_only(project.root / "database_sync")
    assert state is not None
    (kept,) = state.losing_versions()
    state.close()
    assert (kept.place, json.loads(kept.loser)["v"]) == ("dedupe", "one")


def test_init_proposes_an_obvious_timestamp_field_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "p"
    store = EmbeddedStore(root / "database_sync" / "db", "shop")
    moment = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    store.insert_many("events", [{"_id": n, "updated_at": moment} for n in range(3)])
    store.insert_many("plain", [{"_id": 1, "n": 1}])
    store.close()
    done = Project(root).ok("init", "--database", "shop", "--asset", "a")
    assert "collection events: every document read has 'updated_at'" in done.out
    config = load_config(cwd=root, environ={})
    assert config.rules("events").timestamp == "updated_at"
    assert config.rules("plain").timestamp is None


def test_a_merge_after_the_driver_says_where_the_driver_put_its_decisions() -> None:
    report = report_with()
    report.merge_driver = DriverDecisions(("database_sync/reports/r.txt",), {"items": 2})
    document = report.to_json()
    assert document["merge_driver"] == {
        "reports": ["database_sync/reports/r.txt"],
        "conflicts": {"items": 2},
    }
    assert document["collections"]["items"]["conflicts_by_merge_driver"] == 2
    text = report.to_text()
    assert "merge driver: 2 conflict(s) were decided by the git merge driver" in text
    assert "database_sync/reports/r.txt" in text
    assert report_with().to_json()["merge_driver"] is None


def test_the_driver_s_reports_of_a_split_collection_are_named_first_to_last() -> None:
    """A pull of a collection split in 32 part files: one report per file. The note names the
    first and the last and how many, and stays one readable line; the JSON lists them all."""
    reports = tuple(f"database_sync/reports/merge_report_{n:02d}.txt" for n in range(32))
    decisions = DriverDecisions(reports, {"items": 40})
    note = decisions.note()
    assert "32 reports, database_sync/reports/merge_report_00.txt to " in note
    assert note.count("merge_report_") == 2
    assert note.endswith("merge_report_31.txt and in 'dbsync conflicts'")
    assert decisions.to_json()["reports"] == list(reports)
    few = DriverDecisions(reports[:3], {"items": 4}).note()
    assert all(report in few for report in reports[:3])


def test_the_merge_driver_says_when_a_conflict_was_decided_without_timestamp(
    tmp_path: Path,
) -> None:
    base = write_snapshot(tmp_path / "base", [{"_id": 1, "v": "old"}], UNTIMED, "items")
    ours = write_snapshot(tmp_path / "ours", [{"_id": 1, "v": "here"}], UNTIMED, "items")
    theirs = write_snapshot(tmp_path / "theirs", [{"_id": 1, "v": "there"}], UNTIMED, "items")
    result = merge_files(base, ours, theirs, "items.jsonl")
    assert result.merged
    (note,) = result.notes
    assert "because no timestamp is configured for items" in note
