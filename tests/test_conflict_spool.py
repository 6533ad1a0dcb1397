"""Conflicts spooled to a file, and the reports streamed from them byte for byte."""

import os
from typing import Any

import orjson

from dbsync.core.merge import MergeCounts
from dbsync.core.report import SUCCESS, DriverDecisions, MergeReport, tie_break_notes
from dbsync.core.snapshot import Rules
from dbsync.edges.conflict_spool import SpooledConflicts

DATE = {"$date": "2025-07-01T00:00:00Z"}


def entry(n: int, **loser: Any) -> dict[str, Any]:
    winner = {"_id": n, "v": [1, {"deep": {"er": [None, 2.5, "a\nb\u00e9"]}}], "at": DATE, "e": {}}
    return {"key": {"_id": n}, "winner": winner, "loser": loser or None, "rule": "newer"}


def spooled(*entries: dict[str, Any]) -> SpooledConflicts:
    conflicts = SpooledConflicts()
    for item in entries:
        conflicts.append(item)
    return conflicts


def test_entries_come_back_in_order_from_the_file_and_none_are_held_in_memory() -> None:
    entries = [entry(n, _id=n, v="old" * n) for n in range(300)]
    conflicts = spooled(*entries)
    assert len(conflicts) == 300
    assert list(conflicts) == entries
    assert list(conflicts) == entries  # iterated as often as needed
    descriptor = conflicts.fileno()
    on_disk = os.pread(descriptor, os.fstat(descriptor).st_size, 0)
    assert [orjson.loads(line) for line in on_disk.splitlines()] == entries
    assert not [value for value in vars(conflicts).values() if isinstance(value, list | dict)]


def test_an_entry_appended_while_iterating_waits_for_the_next_iteration() -> None:
    conflicts = spooled(entry(1), entry(2))
    seen = []
    for item in conflicts:
        seen.append(item["key"]["_id"])
        conflicts.append(entry(10 + len(seen)))
    assert seen == [1, 2]
    assert [item["key"]["_id"] for item in conflicts] == [1, 2, 11, 12]


def test_entries_larger_than_a_read_chunk_survive_whole() -> None:
    big = entry(1, _id=1, blob="x" * (3 << 20))
    conflicts = spooled(entry(0), big, entry(2))
    assert list(conflicts) == [entry(0), big, entry(2)]


def report(conflicts: dict[str, Any]) -> MergeReport:
    collections = {
        name: MergeCounts(conflicts_resolved=len(found), conflicts=found)
        for name, found in conflicts.items()
    }
    return MergeReport(
        SUCCESS,
        "2026-01-01T00:00:00+00:00",
        "laptop",
        "database_backup",
        "base",
        backup="B1",
        notes=["a note", "conflicts [1, 2]"],
        collections=collections,
        merge_driver=DriverDecisions(("r.json",), {"items": 2}),
    )


def test_the_streamed_reports_are_the_ones_built_whole_for_spooled_and_listed_conflicts() -> None:
    entries = [entry(1, _id=1, v="old"), entry(2), entry(3, _id=3, v=[[]])]
    for found in (spooled(*entries), list(entries)):
        built = report({"items": found, "empty": [], "more": spooled(entry(9, _id=9)), "z": []})
        whole = orjson.dumps(built.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
        assert b"".join(built.json_chunks()) == whole == built.to_json_bytes()
        assert orjson.loads(whole)["collections"]["items"]["conflicts"] == entries
        text = "".join(built.text_lines())
        assert text == built.to_text()
        assert text.count("\n    lost:  ") == 4 and text.endswith("\n")
        assert '    lost:  {"_id":1,"v":"old"}\n' in text


def test_a_report_without_conflicts_streams_like_it_is_built() -> None:
    built = report({"items": SpooledConflicts(), "other": []})
    whole = orjson.dumps(built.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
    assert b"".join(built.json_chunks()) == whole
    assert b'"conflicts": []' in whole


def test_the_tie_break_note_reads_spooled_conflicts_in_one_stream() -> None:
    tied = {"rule": "more complete", "key": {"_id": 1}, "loser": {"_id": 1, "at": DATE}}
    conflicts = spooled({**tied, "winner": {"_id": 1, "at": DATE, "n": 1}}, entry(2))
    (note,) = tie_break_notes("items", Rules(key=("_id",)), MergeCounts(conflicts=conflicts))
    assert note.startswith("items: 1 conflict(s) decided by more complete, not by the newer")
    assert 'timestamp = "at"' in note
