"""``dbsync log KEY``: a record's versions through git, on real repositories and literal files."""

from __future__ import annotations

import datetime
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dbsync.config import load_config
from dbsync.core.ordering import part_of, sort_key
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, encode_record, snapshot_filename
from dbsync.edges.log_index import INDEX_FILE
from dbsync.edges.snapshot_files import write_snapshot as write_snapshot_file
from dbsync.errors import UsageError
from dbsync.runs.bring_back import stamped_now
from dbsync.runs.log import (
    LogRequest,
    RecordKey,
    RecordLog,
    Version,
    field_diffs,
    find_record,
    index_new_commits,
    key_readings,
    mark_recreations,
    record_log,
    value_candidates,
)
from tests.git_helpers import Repo, real_records

RECORDS = real_records()[:12]
NATURAL = Rules(("user", "ticker"), None, ())

# ---------------------------------------------------------------- the pure parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", ["abc"]),
        ("42", [42, "42"]),
        ('"42"', ["42"]),
        ("ObjectId(6865e26e00db2977eb40450c)", [{"$oid": "6865e26e00db2977eb40450c"}]),
        ('ObjectId("6865E26E00DB2977EB40450C")', [{"$oid": "6865e26e00db2977eb40450c"}]),
        (
            "6865e26e00db2977eb40450c",
            [{"$oid": "6865e26e00db2977eb40450c"}, "6865e26e00db2977eb40450c"],
        ),
        ("NumberLong(7)", [7]),
        ("ISODate(2025-04-09T00:00:00Z)", [{"$date": {"$numberLong": "1744156800000"}}]),
    ],
)
def test_a_key_is_read_as_the_user_writes_it(text: str, expected: list[Any]) -> None:
    assert value_candidates(text) == expected


def test_a_natural_key_needs_every_key_field() -> None:
    readings = key_readings(NATURAL, None, ["user=7", "ticker=SOL"])
    assert [r.values for r in readings] == [(7, "SOL"), ("7", "SOL")]
    with pytest.raises(UsageError, match="not given: ticker"):
        key_readings(NATURAL, None, ["user=7"])
    with pytest.raises(UsageError, match="one-field key"):
        key_readings(NATURAL, "7", [])
    with pytest.raises(UsageError, match="NAME=VALUE"):
        key_readings(NATURAL, None, ["user"])


def section_bytes(tmp_path: Path, docs: list[dict[str, Any]], rules: Rules) -> bytes:
    lines = sorted(encode_record(doc, rules.key) for doc in docs)
    path = tmp_path / "section.jsonl"
    write_snapshot_file(path, Header("c", rules), [line for _, line in lines])
    return path.read_bytes()


def test_binary_search_finds_every_record_and_nothing_else(tmp_path: Path) -> None:
    docs = [{"user": n % 7, "ticker": f"T{n}", "v": "x" * (n % 5)} for n in range(60)]
    data = section_bytes(tmp_path, docs, NATURAL)
    for doc in docs:
        line = find_record(data, NATURAL.key, sort_key(doc, NATURAL.key))
        assert line is not None and json.loads(line)["d"] == doc
    for absent in ({"user": 3, "ticker": "T0"}, {"user": -1, "ticker": ""}, {"user": 9}):
        assert find_record(data, NATURAL.key, sort_key(absent, NATURAL.key)) is None
    empty = section_bytes(tmp_path, [], NATURAL)
    assert find_record(empty, NATURAL.key, sort_key(docs[0], NATURAL.key)) is None


def test_field_diffs_name_added_removed_and_changed_fields() -> None:
    diffs = field_diffs({"a": 1, "b": 2, "c": 1}, {"a": 1, "b": 3, "d": None, "c": 1.0})
    assert [(d.field, d.change, d.old, d.new) for d in diffs] == [
        ("b", "changed", 2, 3),
        ("d", "added", None, None),
        ("c", "changed", 1, 1.0),  # an Int32 becoming a Double is a change
    ]
    assert [(d.field, d.change) for d in field_diffs({"a": 1}, {})] == [("a", "removed")]


def test_a_creation_after_an_older_version_is_a_recreation() -> None:
    def event(kind: str) -> Version:
        return Version("c", "d", "a", None, "s", kind, None, None, None)

    events = ["changed", "created", "deleted", "created"]  # newest first
    assert [v.event for v in mark_recreations([event(e) for e in events], False)] == [
        "changed",
        "re-created",
        "deleted",
        "created",
    ]
    assert mark_recreations([event("created")], True)[0].event == "re-created"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("2025-04-08T00:00:00", "2026-12-01T10:20:30.456"),
        ("2025-04-08T00:00:00Z", "2026-12-01T10:20:30.456Z"),
        ("2025-04-08T00:00:00+00:00", "2026-12-01T10:20:30.456+00:00"),
        (1744070400, 1796120430),
        (1744070400000, 1796120430456),
        ({"$date": {"$numberLong": "1"}}, {"$date": {"$numberLong": "1796120430456"}}),
        (None, {"$date": {"$numberLong": "1796120430456"}}),
    ],
)
def test_the_timestamp_is_set_to_now_in_the_type_it_had(before: Any, after: Any) -> None:
    now = datetime.datetime(2026, 12, 1, 10, 20, 30, 456000, tzinfo=datetime.timezone.utc)
    assert stamped_now(before, now) == after


# ---------------------------------------------------------------- on real repositories


def edit(
    repo: Repo, record: dict[str, Any], also: tuple[dict[str, Any], ...] = (), **changes: Any
) -> dict[str, Any]:
    """Edit a record (and write ``also`` in the same snapshot), then push as a user does."""
    edited = {**record, **changes}
    repo.import_records([edited, *also], mode="upsert")
    repo.push_snapshot()
    return edited


def versions(repo: Repo, *args: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(repo.dbsync("log", *args, "--json").out)["versions"]
    return found


def test_three_edits_show_as_three_versions_with_field_diffs_newest_first(
    pair: tuple[Repo, Repo],
) -> None:
    a, b = pair
    a.import_records(RECORDS)
    a.push_snapshot()
    record = RECORDS[3]
    edit(a, record, profit_usd=1.5, timestamp="2025-06-01T00:00:00")
    b.git("pull")
    edit(b, record, profit_usd=2.5, timestamp="2025-06-02T00:00:00", note="on b")
    a.git("pull")
    other = {**RECORDS[5], "username": "@other"}  # another record, in the same commit
    edit(a, record, (other,), profit_usd=2.5, timestamp="2025-06-03T00:00:00", screenshot="s.png")

    found = versions(a, record["_id"])
    assert [(v["event"], v["asset"]) for v in found] == [
        ("changed", "a"),
        ("changed", "b"),
        ("changed", "a"),
        ("created", "a"),
    ]
    assert [(c["field"], c["change"], c["old"], c["new"]) for c in found[0]["changes"]] == [
        ("timestamp", "changed", "2025-06-02T00:00:00", "2025-06-03T00:00:00"),
        ("screenshot", "changed", None, "s.png"),
        ("note", "removed", "on b", None),  # an upsert replaces the whole document
    ]
    assert [(c["field"], c["change"]) for c in found[1]["changes"]] == [
        ("profit_usd", "changed"),
        ("timestamp", "changed"),
        ("note", "added"),
    ]
    assert found[2]["changes"][0] == {
        "field": "profit_usd",
        "change": "changed",
        "old": record["profit_usd"],
        "new": 1.5,
    }
    assert found[0]["previous_commit"] == found[1]["commit"]
    assert b.git("log", "-1", "--format=%s", found[1]["commit"]).out.startswith("dbsync: b ")
    assert [v["commit"] for v in versions(a, record["_id"], "--limit", "2")] == [
        v["commit"] for v in found[:2]
    ]
    text = a.dbsync("log", record["_id"]).out
    assert "4 version(s), newest first" in text
    assert '~ screenshot: null → "s.png"' in text and '+ note: "on b"' in text


def test_a_deleted_record_is_shown_and_brought_back_from_its_history(
    store_pair: tuple[Repo, Repo],
) -> None:
    a, b = store_pair
    a.import_records(RECORDS)
    a.push_snapshot()
    record = RECORDS[7]
    edit(a, record, username="@last")
    last_commit = a.head()
    a.delete_records([record["_id"]])
    a.push_snapshot()

    found = versions(a, record["_id"])
    assert [v["event"] for v in found] == ["deleted", "changed", "created"]
    assert found[0]["document"] is None
    assert found[0]["previous"]["username"] == "@last"
    assert found[0]["previous_commit"] == last_commit
    assert f"--restore {last_commit[:12]}" in a.dbsync("log", record["_id"]).out

    brought = a.dbsync("log", record["_id"], "--restore", found[0]["commit"])  # the deletion
    assert "is the current version again" in brought.out
    assert "timestamp is set to now" in brought.out and "next sync" in brought.out
    restored = [json.loads(line) for line in a.dump() if record["_id"] in line]
    assert len(restored) == 1 and restored[0]["username"] == "@last"
    assert restored[0]["timestamp"] > "2026"
    history = json.loads(a.dbsync("history", "--json").out)
    assert any(run["operation"] == "restore" for run in history)
    a.push_snapshot()
    b.git("pull")
    assert [json.loads(line)["username"] for line in b.dump() if record["_id"] in line] == ["@last"]
    assert [v["event"] for v in versions(b, record["_id"], "-n", "2")] == [
        "re-created",
        "deleted",
    ]


def test_a_key_with_no_version_and_a_wrong_commit_are_usage_errors(
    pair: tuple[Repo, Repo],
) -> None:
    a, _ = pair
    a.import_records(RECORDS[:3])
    a.push_snapshot()
    missing = a.dbsync("log", "no-such-id", ok=False)
    assert missing.code == 2 and "no version of pnls" in missing.err
    wrong = a.dbsync("log", RECORDS[0]["_id"], "--restore", "0" * 12, ok=False)
    assert wrong.code == 2 and "names no commit" in wrong.err
    natural = a.dbsync("log", "--field", "user_id=1", ok=False)
    assert natural.code == 2 and "keyed by _id" in natural.err


def commit_parts(repo: Repo, docs: list[dict[str, Any]], message: str) -> None:
    """A collection in 4 parts, written as export writes them, and committed."""
    folder = repo.root / "database_backup"
    for old in folder.glob("*.jsonl"):
        old.unlink()
    keyed = sorted(encode_record(doc, NATURAL.key) for doc in docs)
    for index in range(4):
        lines = [line for key, line in keyed if part_of(key, 4) == index]
        header = Header("trades", NATURAL, (index, 4))
        write_snapshot_file(folder / snapshot_filename("trades", (index, 4)), header, lines)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", message)


def test_a_natural_key_is_found_in_the_part_its_key_hashes_to(
    tmp_path: Path, git_env: dict[str, str]
) -> None:
    root = tmp_path / "repo"
    (root / "database_backup").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, env=git_env, check=True)
    (root / "dbsync.toml").write_text(
        'database = "shop"\n[collections.trades]\nkey = ["user", "ticker"]\n'
    )
    docs = [{"_id": n, "user": n % 5, "ticker": f"T{n}", "qty": 1} for n in range(40)]
    repo = Repo(root, git_env)
    commit_parts(repo, docs, "first")
    docs[11] = {**docs[11], "qty": 2}
    commit_parts(repo, docs, "second")
    docs[12] = {**docs[12], "qty": 3}  # another record: the version of T11 does not change
    commit_parts(repo, docs, "third")
    found = versions(repo, "--field", "user=1", "--field", "ticker=T11", "-c", "trades")
    assert [(v["event"], v["subject"]) for v in found] == [
        ("changed", "second"),
        ("created", "first"),
    ]
    assert found[0]["changes"] == [{"field": "qty", "change": "changed", "old": 1, "new": 2}]
    assert RecordKey(NATURAL.key, (1, "T11")).text() == 'user=1, ticker="T11"'


def test_a_merge_commit_is_no_version_when_it_keeps_one_side(pair: tuple[Repo, Repo]) -> None:
    a, b = pair
    a.import_records(RECORDS)
    a.push_snapshot()
    b.git("pull")
    mine, theirs = RECORDS[1], RECORDS[2]
    a.import_records([{**mine, "username": "@a"}], mode="upsert")
    b.import_records([{**theirs, "username": "@b"}], mode="upsert")
    b.push_snapshot()
    assert a.git("push", ok=False).code == 1  # the hook commits a's snapshot
    a.git("pull")  # a merge commit: the driver merges both snapshots record by record
    assert a.git("rev-list", "--merges", "HEAD").out.strip()
    assert [(v["event"], v["asset"]) for v in versions(a, mine["_id"])] == [
        ("changed", "a"),
        ("created", "a"),
    ]
    found = versions(a, theirs["_id"])
    assert [(v["event"], v["asset"]) for v in found] == [("changed", "b"), ("created", "a")]
    assert found[0]["changes"][0]["new"] == "@b"


# ---------------------------------------------------------------- the log index


def commit_layout(repo: Repo, docs: list[dict[str, Any]], message: str, parts: int = 1) -> None:
    """The collection ``pnls`` in one file or in ``parts`` parts, written as export writes them,
    and committed."""
    folder = repo.root / "database_backup"
    for old in folder.glob("*.jsonl"):
        old.unlink()
    keyed = sorted(encode_record(doc, ("_id",)) for doc in docs)
    for index in range(parts):
        lines = [line for key, line in keyed if parts == 1 or part_of(key, parts) == index]
        part = (index, parts) if parts > 1 else None
        header = Header("pnls", Rules(("_id",), None, ()), part)
        write_snapshot_file(folder / snapshot_filename("pnls", part), header, lines)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", message)


def record_logs(root: Path, key: str, **request: Any) -> RecordLog:
    config = load_config(cwd=root)
    return record_log(config, LogRequest("pnls", key, **request))


@pytest.fixture
def history(tmp_path: Path, git_env: dict[str, str]) -> tuple[Repo, list[dict[str, Any]]]:
    """A history with edits, a deletion, a re-creation, a part-count change and a merge."""
    root = tmp_path / "repo"
    (root / "database_backup").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, env=git_env, check=True)
    (root / "dbsync.toml").write_text('database = "shop"\n')
    (root / ".gitignore").write_text("database_sync/\n")
    repo = Repo(root, git_env)
    docs = [{"_id": f"r{n:02d}", "v": 0} for n in range(40)]
    commit_layout(repo, docs, "first")
    for step, (position, value) in enumerate([(11, 1), (12, 1), (11, 2)]):
        docs[position] = {**docs[position], "v": value}
        commit_layout(repo, docs, f"edit {step}")
    gone = docs.pop(11)
    commit_layout(repo, docs, "delete r11")
    docs.insert(11, {**gone, "v": 3})
    commit_layout(repo, docs, "re-create r11")
    commit_layout(repo, docs, "split", parts=4)  # the same records, in parts
    repo.git("checkout", "-q", "-b", "side")
    docs[11] = {**docs[11], "v": 4}
    commit_layout(repo, docs, "edit on side", parts=4)
    repo.git("checkout", "-q", "main")
    docs[11], docs[30] = {**docs[11], "v": 3}, {**docs[30], "v": 9}
    commit_layout(repo, docs, "edit r30", parts=4)
    repo.git("merge", "-q", "--no-ff", "-X", "theirs", "side", "-m", "merge side")
    return repo, docs


def shown(log: RecordLog) -> list[tuple[str, str, Any]]:
    return [(v.subject, v.event, v.document and v.document["v"]) for v in log.versions]


def test_the_log_index_gives_the_versions_every_blob_read_gives(
    history: tuple[Repo, list[dict[str, Any]]],
) -> None:
    repo, _ = history
    index_file = repo.root / "database_sync" / INDEX_FILE
    without = record_logs(repo.root, "r11", use_index=False)
    fresh = record_logs(repo.root, "r11")
    warm = record_logs(repo.root, "r11")
    index_file.unlink()
    deleted = record_logs(repo.root, "r11")
    assert [log.to_json() for log in (fresh, warm, deleted)] == [without.to_json()] * 3
    assert shown(without) == [  # the merge keeps the side's version, the split changes none
        ("edit on side", "changed", 4),
        ("re-create r11", "re-created", 3),
        ("delete r11", "deleted", None),
        ("edit 2", "changed", 2),
        ("edit 0", "changed", 1),
        ("first", "created", 0),
    ]
    assert fresh.pairs_computed > 0 and warm.pairs_computed == 0
    assert warm.blobs_read < without.blobs_read
    for other in ("r12", "r30", "r00"):
        assert (
            record_logs(repo.root, other).to_json()
            == record_logs(repo.root, other, use_index=False).to_json()
        )


def test_the_log_index_holds_across_rewritten_history(
    history: tuple[Repo, list[dict[str, Any]]],
) -> None:
    repo, docs = history
    record_logs(repo.root, "r11")  # the index knows this history
    before = len(repo.git("rev-list", "HEAD").out.split())
    repo.run(
        ["git", "filter-branch", "-f", "--msg-filter", "sed 's/^/rewritten: /'", "HEAD"],
        FILTER_BRANCH_SQUELCH_WARNING="1",
    )
    assert len(repo.git("rev-list", "HEAD").out.split()) == before
    rewritten = record_logs(repo.root, "r11")
    assert rewritten.to_json() == record_logs(repo.root, "r11", use_index=False).to_json()
    assert rewritten.versions[0].subject == "rewritten: edit on side"
    assert rewritten.pairs_computed == 0  # new commits, the same blobs: the same pairs
    docs[11] = {**docs[11], "v": 5}
    commit_layout(repo, docs, "after the rewrite", parts=4)
    latest = record_logs(repo.root, "r11", limit=2)
    assert [(v.subject, v.event) for v in latest.versions] == [
        ("after the rewrite", "changed"),
        ("rewritten: edit on side", "changed"),
    ]
    assert latest.pairs_computed == 1


@pytest.mark.parametrize("damage", [b"not a database at all" * 100, b""])
def test_a_damaged_log_index_is_started_afresh(
    history: tuple[Repo, list[dict[str, Any]]], damage: bytes
) -> None:
    repo, _ = history
    expected = record_logs(repo.root, "r11", use_index=False).to_json()
    index_file = repo.root / "database_sync" / INDEX_FILE
    index_file.parent.mkdir(exist_ok=True)
    index_file.write_bytes(damage)
    assert record_logs(repo.root, "r11").to_json() == expected
    warm = record_logs(repo.root, "r11")  # the new file was kept and serves the next log
    assert warm.to_json() == expected and warm.pairs_computed == 0


def test_an_index_of_another_schema_is_started_afresh(
    history: tuple[Repo, list[dict[str, Any]]],
) -> None:
    repo, _ = history
    index_file = repo.root / "database_sync" / INDEX_FILE
    record_logs(repo.root, "r11")
    with sqlite3.connect(index_file) as connection:
        connection.execute("DROP TABLE changes")
        connection.execute("PRAGMA user_version = 99")
    connection.close()
    again = record_logs(repo.root, "r11")
    assert again.to_json() == record_logs(repo.root, "r11", use_index=False).to_json()
    assert again.pairs_computed > 0


def test_the_cli_log_fills_the_index_beside_the_state_store(
    history: tuple[Repo, list[dict[str, Any]]],
) -> None:
    repo, _ = history
    found = versions(repo, "r11")
    assert (repo.root / "database_sync" / INDEX_FILE).is_file()
    assert versions(repo, "r11") == found
    assert [v["event"] for v in found][:2] == ["changed", "re-created"]


def test_the_hooks_fill_the_log_index_so_a_first_log_computes_nothing(
    pair: tuple[Repo, Repo],
) -> None:
    """Every commit of the snapshot this clone saw came through a hook (pre-push's own commit,
    a pull, a commit made by hand): the first ``dbsync log`` finds every pair indexed."""
    a, b = pair
    a.import_records(RECORDS)
    a.push_snapshot()
    record = RECORDS[4]
    edit(a, record, profit_usd=1.5, timestamp="2025-06-01T00:00:00")
    b.git("pull")  # post-merge: a's commits
    edit(b, record, profit_usd=2.5, timestamp="2025-06-02T00:00:00")
    a.git("pull")
    a.import_records([{**record, "note": "by hand", "timestamp": "2025-06-03T00:00:00"}], "upsert")
    a.dbsync("export")
    a.git("add", "database_backup")
    a.git("commit", "-q", "-m", "a snapshot committed by hand")  # post-commit
    a.git("push")
    b.git("pull")

    for repo in (a, b):
        index_file = repo.root / "database_sync" / INDEX_FILE
        assert index_file.is_file()
        first = record_logs(repo.root, record["_id"])
        assert first.pairs_computed == 0, repo.root
        assert first.to_json() == record_logs(repo.root, record["_id"], use_index=False).to_json()
        assert [v.subject for v in first.versions][:1] == ["a snapshot committed by hand"]
        assert len(first.versions) == 4
        index_file.unlink()  # without what the hooks kept, the same log computes the pairs
        assert record_logs(repo.root, record["_id"]).pairs_computed == 3


def test_a_hook_indexes_at_most_its_budget_and_never_fails_on_the_index(
    pair: tuple[Repo, Repo],
) -> None:
    a, b = pair
    a.import_records(RECORDS)
    a.push_snapshot()
    for step in range(3):
        edit(a, RECORDS[step], timestamp=f"2025-06-0{step + 1}T00:00:00")
    b.git("pull")
    config = load_config(cwd=b.root)
    (b.root / "database_sync" / INDEX_FILE).unlink()
    root_commit = b.git("rev-list", "--max-parents=0", "HEAD").out.split()
    assert index_new_commits(config, root_commit, budget=2) == 2
    assert index_new_commits(config, root_commit) == 1  # the rest; the two known are skipped
    assert index_new_commits(config, root_commit) == 0
    index_file = b.root / "database_sync" / INDEX_FILE
    index_file.unlink()
    index_file.mkdir()  # no index can be kept here: a pull still merges and succeeds
    edit(a, RECORDS[5], timestamp="2025-06-09T00:00:00")
    pulled = b.git("pull")
    assert "merged database_backup into the database" in pulled.err
    assert any(RECORDS[5]["_id"] in line and "2025-06-09" in line for line in b.dump())
