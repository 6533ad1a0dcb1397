"""What ``dbsync export`` says about what it wrote: every part of a split collection (issue 22,
item 9), and, once, the timestamp field a collection's records obviously carry when its rules
name none (item 14). The real console script; the split layout is made by an export run with
small part limits in this process, as the snapshot folder of a large collection would be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bson import json_util

from dbsync.config import load_config, resolve_uri
from dbsync.edges import parts
from dbsync.edges.stores import open_store
from dbsync.runs.export import export
from tests.cli_helpers import Project, new_project


def write_documents(path: Path, documents: list[dict]) -> Path:
    path.write_text("".join(json_util.dumps(document) + "\n" for document in documents))
    return path


def split_into_parts(project: Project, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Export the project's database in parts, as if each passed the 50 MB limit."""
    monkeypatch.setattr(parts, "MAX_FILE_BYTES", 12_000)
    monkeypatch.setattr(parts, "TARGET_PART_BYTES", 4_000)
    config = load_config(cwd=project.root, environ={})
    store = open_store(resolve_uri("embedded://database_sync/db", project.root), "shop")
    try:
        export(config, store)
    finally:
        store.close()
    return sorted(path.name for path in (project.root / "database_backup").glob("*.jsonl"))


def test_an_export_in_parts_names_every_part(tmp_path, monkeypatch):
    project = new_project(tmp_path / "p")
    documents = [{"_id": n, "note": "x" * 40} for n in range(300)]
    project.ok("import", str(write_documents(tmp_path / "docs.json", documents)), "-c", "notes")
    names = split_into_parts(project, monkeypatch)
    assert len(names) >= 4 and all(".part-" in name for name in names)
    edited = [{"_id": 7, "note": "edited"}]
    project.ok(
        "import",
        str(write_documents(tmp_path / "edit.json", edited)),
        "-c",
        "notes",
        "--mode",
        "upsert",
    )
    said = project.ok("export").out
    assert f"{len(names)} parts" in said, said
    for name in names:
        assert name in said, said
    (exported,) = json.loads(project.ok("export", "--json").out)
    assert sorted(Path(file).name for file in exported["files"]) == names


# ---------------------------------------------------------------- a timestamp field to configure

DATED = [
    {
        "_id": n,
        "text": f"event {n}",
        "updated_at": {"$date": f"2026-0{1 + n % 9}-0{1 + n % 7}T10:00:00Z"},
    }
    for n in range(8)
] + [{"_id": 8, "text": "undated"}, {"_id": 9, "text": "undated"}]


def suggestions(output: str) -> list[str]:
    return [line for line in output.splitlines() if "no timestamp is configured" in line]


def test_a_first_export_of_dated_records_suggests_the_timestamp_line_once(tmp_path):
    project = new_project(tmp_path / "p")  # init before the data: nothing to propose then
    project.ok("import", str(write_documents(tmp_path / "events.json", DATED)), "-c", "events")
    first = project.ok("export")
    (said,) = suggestions(first.err)
    assert "8 of 10 records" in said and "'updated_at'" in said
    assert 'add timestamp = "updated_at" under [collections.events] in dbsync.toml' in said
    edited = [{**DATED[0], "text": "edited"}]
    project.ok(
        "import",
        str(write_documents(tmp_path / "edit.json", edited)),
        "-c",
        "events",
        "--mode",
        "upsert",
    )
    again = project.ok("export")
    assert "(changed)" in again.out and suggestions(again.err) == []  # said once, not each time


def test_iso_text_in_most_records_is_a_timestamp_too(tmp_path, pnl_records):
    project = new_project(tmp_path / "p")
    project.ok("import", str(write_documents(tmp_path / "pnls.json", pnl_records)), "-c", "pnls")
    (exported,) = json.loads(project.ok("export", "--json").out)
    (said,) = suggestions("\n".join(exported["notes"]))
    assert 'add timestamp = "timestamp" under [collections.pnls] in dbsync.toml' in said


def test_no_suggestion_when_a_timestamp_is_configured_or_nothing_is_dated(tmp_path):
    configured = new_project(
        tmp_path / "a", toml='\n[collections.events]\ntimestamp = "updated_at"\n'
    )
    configured.ok("import", str(write_documents(tmp_path / "e.json", DATED)), "-c", "events")
    assert suggestions(configured.ok("export").err) == []
    plain = new_project(tmp_path / "b")
    undated = [{"_id": n, "code": "2024", "n": 1_700_000_000 + n} for n in range(10)]
    plain.ok("import", str(write_documents(tmp_path / "u.json", undated)), "-c", "codes")
    assert suggestions(plain.ok("export").err) == []
