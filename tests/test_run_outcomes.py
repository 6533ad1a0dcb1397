"""What a run says it did is what it did: a source without a snapshot is not "merged", and a
typo, a lock wait or a Ctrl-C is not a failure of the asset (issue 22, items 5 and 6).

The real console script on copies of a project holding the 190 PNL records.
"""

from __future__ import annotations

import json
import os

from project import clean_env
from test_interrupt import interrupt, open_for_writing
from test_lock import start_holder

FAILURES_DEGRADED = 3


def backups(project) -> list[dict]:
    return project.json("backups")


def merge_rows(project) -> list[dict]:
    return [row for row in project.history() if row["operation"] == "merge"]


# ---------------------------------------------------------------- a source with no snapshot


def test_merging_an_empty_folder_is_invalid_input_and_makes_no_backup(pnl_project):
    empty = pnl_project.root / "empty"
    empty.mkdir()
    before = pnl_project.dump()
    result = pnl_project.run("merge", "empty", expect=4)
    assert "empty holds no dbsync snapshot" in result.stderr
    assert "merged" not in result.stdout + result.stderr
    assert backups(pnl_project) == [] and merge_rows(pnl_project) == []
    assert pnl_project.dump() == before


def test_merging_an_empty_file_names_it(pnl_project):
    (pnl_project.root / "nothing.jsonl").write_text("")
    result = pnl_project.run("merge", "nothing.jsonl", expect=4)
    assert "nothing.jsonl" in result.stderr and "empty" in result.stderr
    assert backups(pnl_project) == []


def test_merging_mongoexport_output_says_to_import_it(pnl_project):
    lines = pnl_project.root / "export.json"
    lines.write_text('{"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "n": 1}\n{"_id": 2}\n')
    array = pnl_project.root / "array.json"
    array.write_text(json.dumps([{"_id": 1}, {"_id": 2}]))
    for name in ("export.json", "array.json"):
        result = pnl_project.run("merge", name, expect=4)
        assert f"{name} is not a dbsync snapshot" in result.stderr
        assert "mongoexport" in result.stderr
        assert f"dbsync import {name} --collection NAME" in result.stderr
    assert backups(pnl_project) == [] and merge_rows(pnl_project) == []


def test_a_mistyped_path_is_a_usage_error(pnl_project):
    result = pnl_project.run("merge", "database_backp", expect=2)
    assert "database_backp does not exist" in result.stderr
    assert "dbsync merge database_backup" in result.stderr


# ---------------------------------------------------------------- not failures of the asset


def status(project) -> dict:
    return project.json("status")


def failures(document: dict) -> list[dict]:
    return [reason for reason in document["reasons"] if reason["check"] == "failures"]


def test_typos_do_not_degrade_the_asset(pnl_project):
    pnl_project.run("merge", "database_backup")  # merge now knows the collection pnl
    for _ in range(FAILURES_DEGRADED + 1):
        pnl_project.run("merge", "database_backp", expect=2)
        pnl_project.run("export", "-c", "pnll", expect=2)
    document = status(pnl_project)
    assert failures(document) == [] and document["status"] == "HEALTHY", document
    assert [row["operation"] for row in pnl_project.history()] == ["merge"]  # typos did nothing


def test_lock_waits_do_not_degrade_the_asset(pnl_project):
    pnl_project.run("merge", "database_backup")
    holder = start_holder(pnl_project)
    try:
        at_once = clean_env(DBSYNC_LOCK_TIMEOUT="0")
        for _ in range(FAILURES_DEGRADED + 1):
            pnl_project.run("merge", "database_backup", expect=5, env=at_once)
    finally:
        holder.kill()
        holder.wait()
    assert failures(status(pnl_project)) == []
    assert [row["status"] for row in merge_rows(pnl_project)] == ["success"]


def test_ctrl_c_during_merges_does_not_degrade_the_asset(pnl_project):
    """Each merge reads its snapshot from a FIFO, so it is inside its run when Ctrl-C comes."""
    pnl_project.run("merge", "database_backup")
    fifo = pnl_project.root / "incoming.jsonl"
    os.mkfifo(fifo)
    for _ in range(FAILURES_DEGRADED + 1):
        process = pnl_project.popen("merge", str(fifo))
        writer = open_for_writing(fifo, process)
        try:
            _, stderr = interrupt(process)
        finally:
            os.close(writer)
        assert process.returncode == 130, stderr
    document = status(pnl_project)
    assert failures(document) == [], document
    statuses = [row["status"] for row in merge_rows(pnl_project)]
    assert statuses == ["cancelled"] * (FAILURES_DEGRADED + 1) + ["success"]


def test_real_failures_still_degrade_the_asset(pnl_project):
    """The counterpart: a snapshot that is corrupt is a failure, counted as before."""
    pnl_project.run("merge", "database_backup")
    corrupt = pnl_project.root / "corrupt.jsonl"
    lines = pnl_project.snapshot("pnl").read_bytes().splitlines(keepends=True)
    corrupt.write_bytes(b"".join([*lines[:5], lines[5].replace(b'"', b"'", 2), *lines[6:]]))
    for _ in range(FAILURES_DEGRADED):
        pnl_project.run("merge", "corrupt.jsonl", expect=4)
    document = status(pnl_project)
    assert document["status"] == "DEGRADED" and len(failures(document)) == 1, document
