"""The merge driver on tiny literal snapshot files, and the diff driver inside real git."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dbsync.core.rules import Rules
from dbsync.core.snapshot import line_document
from dbsync.edges import installer as hooks
from dbsync.edges.snapshot_files import read_sections
from dbsync.integration.merge_driver import merge_files
from tests.git_helpers import DBSYNC, PNL_SNAPSHOT_RULES, Repo, Run, write_snapshot

RULES = Rules(("_id",), "ts", ())


def record(n: int, value: str, ts: str = "2025-01-01T00:00:00") -> dict[str, Any]:
    return {"_id": n, "v": value, "ts": ts}


def items(path: Path, docs: list[dict[str, Any]], rules: Rules = RULES) -> Path:
    """A tiny literal snapshot of a collection ``items`` whose timestamp field is ``ts``."""
    return write_snapshot(path, docs, rules, "items")


def documents(path: Path) -> list[dict[str, Any]]:
    return [line_document(line) for section in read_sections(path) for line in section.records]


def driver(folder: Path, env: dict[str, str], base: Path, ours: Path, theirs: Path) -> Run:
    """``dbsync merge-driver`` as git calls it (%O %A %B %P)."""
    arguments = [DBSYNC, "merge-driver", str(base), str(ours), str(theirs), "items.jsonl"]
    return Repo(folder, env).run(arguments, ok=False)


BASE = [record(1, "one"), record(2, "two"), record(3, "three"), record(4, "four")]


def test_merge_driver_merges_record_by_record(tmp_path: Path, git_env: dict[str, str]) -> None:
    base = items(tmp_path / "base", BASE)
    ours = items(
        tmp_path / "ours",
        [
            record(1, "one, edited here"),  # only ours changed it
            record(2, "two, ours", "2025-03-01T00:00:00"),  # both changed it: ours is older
            record(3, "three"),
            # 4 deleted here, unchanged there: deleted
            record(5, "five, added here"),
        ],
    )
    theirs = items(
        tmp_path / "theirs",
        [
            record(1, "one"),
            record(2, "two, theirs", "2025-04-01T00:00:00"),  # newer: wins on both assets
            record(3, "three, edited there"),  # only theirs changed it
            record(4, "four"),
            record(6, "six, added there"),
        ],
    )
    result = driver(tmp_path, git_env, base, ours, theirs)
    assert result.code == 0, result.output
    assert "(three-way)" in result.err and "1 conflict(s)" in result.err
    assert documents(ours) == [
        record(1, "one, edited here"),
        record(2, "two, theirs", "2025-04-01T00:00:00"),
        record(3, "three, edited there"),
        record(5, "five, added here"),
        record(6, "six, added there"),
    ]


def test_the_merge_is_the_same_from_either_side(tmp_path: Path) -> None:
    """Both assets merge the same commits: they must write the same bytes."""
    sides = {
        "ours": [record(1, "x", "2025-02-01T00:00:00"), record(2, "two"), record(7, "seven")],
        "theirs": [record(1, "y", "2025-02-02T00:00:00"), record(3, "three")],
    }
    results = []
    for first, second in (("ours", "theirs"), ("theirs", "ours")):
        base = items(tmp_path / f"base-{first}", BASE)
        mine = items(tmp_path / f"{first}-mine", sides[first])
        other = items(tmp_path / f"{second}-other", sides[second])
        assert merge_files(base, mine, other, "items.jsonl").merged
        results.append(mine.read_bytes())
    assert results[0] == results[1]


def test_an_empty_base_means_a_two_way_union(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.write_bytes(b"")  # git's %O when the file was added on both sides
    ours = items(tmp_path / "ours", [record(1, "one"), record(2, "two")])
    theirs = items(tmp_path / "theirs", [record(2, "two"), record(3, "three")])
    result = merge_files(base, ours, theirs, "items.jsonl")
    assert result.merged and "(two-way)" in result.message
    assert [doc["_id"] for doc in documents(ours)] == [1, 2, 3]  # nothing deleted


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:-20]),  # cut short
        lambda path: path.write_bytes(path.read_bytes().replace(b'"three"', b'"THREE"')),
        lambda path: items(path, BASE, Rules(("v",), "ts", ())),  # another key
    ],
    ids=["truncated", "tampered", "other-key"],
)
def test_merge_driver_leaves_ours_untouched_when_it_cannot_decide(
    tmp_path: Path, damage: Any
) -> None:
    base = items(tmp_path / "base", BASE)
    ours = items(tmp_path / "ours", [*BASE, record(5, "five")])
    theirs = items(tmp_path / "theirs", BASE[:3])
    damage(theirs)
    before = ours.read_bytes()
    result = merge_files(base, ours, theirs, "items.jsonl")
    assert not result.merged
    assert "cannot merge items.jsonl" in result.message
    assert ours.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "ours", "theirs"]  # no temp


def test_merge_driver_exits_1_on_corrupt_input(tmp_path: Path, git_env: dict[str, str]) -> None:
    base = items(tmp_path / "base", BASE)
    ours = items(tmp_path / "ours", BASE[:2])
    theirs = tmp_path / "theirs"
    theirs.write_text("<<<<<<< not a snapshot\n")
    before = ours.read_bytes()
    result = driver(tmp_path, git_env, base, ours, theirs)
    assert result.code == 1
    assert "their version" in result.err and "not a dbsync snapshot" in result.err
    assert ours.read_bytes() == before


@pytest.fixture
def repo(pair: tuple[Repo, Repo]) -> Repo:
    """Asset ``a`` with a snapshot of three records committed."""
    a, _ = pair
    docs = [{"_id": n, "name": f"item {n}", "timestamp": "2025-01-01T00:00:00"} for n in (1, 2, 3)]
    write_snapshot(a.root / "database_backup" / "pnls.jsonl", docs, PNL_SNAPSHOT_RULES, "pnls")
    a.git("add", "database_backup")
    a.git("commit", "-q", "-m", "three items")
    return a


def test_git_diff_shows_record_level_changes(repo: Repo) -> None:
    path = repo.root / "database_backup" / "pnls.jsonl"
    docs = [
        {"_id": 1, "name": "item 1", "timestamp": "2025-01-01T00:00:00"},
        {"_id": 2, "name": "item 2, renamed", "timestamp": "2025-02-01T00:00:00"},
        {"_id": 4, "name": "item 4", "timestamp": "2025-01-01T00:00:00"},
    ]
    write_snapshot(path, docs, PNL_SNAPSHOT_RULES, "pnls")
    header = "diff --dbsync a/database_backup/pnls.jsonl b/database_backup/pnls.jsonl"
    assert repo.git("diff").out.splitlines() == [
        header,
        "~ pnls _id=2",
        '    name: "item 2" → "item 2, renamed"',
        '    timestamp: "2025-01-01T00:00:00" → "2025-02-01T00:00:00"',
        '- pnls _id=3: {"_id":3,"name":"item 3","timestamp":"2025-01-01T00:00:00"}',
        '+ pnls _id=4: {"_id":4,"name":"item 4","timestamp":"2025-01-01T00:00:00"}',
        "3 record(s) differ",
    ]
    repo.git("commit", "-q", "-am", "edit")
    patch = repo.git("log", "-p", "-1", "--format=").out
    assert '-pnls _id=2: {"_id":2,"name":"item 2",' in patch
    assert '+pnls _id=2: {"_id":2,"name":"item 2, renamed",' in patch
    assert '+pnls _id=4: {"_id":4,' in patch
    assert '"h":' not in patch  # records, not raw snapshot lines


def test_git_diff_of_a_damaged_snapshot_falls_back_to_text(repo: Repo) -> None:
    path = repo.root / "database_backup" / "pnls.jsonl"
    path.write_bytes(path.read_bytes().replace(b"item 3", b"item 9"))
    diff = repo.git("diff").out
    assert "not a valid snapshot on one side" in diff
    assert "+" in diff and "item 9" in diff


def test_the_shipped_attributes_and_settings_name_the_drivers() -> None:
    settings = hooks.driver_settings("/opt/my python/bin/python")
    assert settings["merge.dbsync.driver"].split(" -m ")[0].endswith("'/opt/my python/bin/python'")
    assert hooks.attributes_line("database_backup") == (
        "database_backup/*.jsonl -text merge=dbsync diff=dbsync"
    )
