"""The core commands end to end: the real console script on the embedded store."""

import json
import re

import bson
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS

from tests.cli_helpers import new_project, write_lines
from tests.test_extjson import every_type


def ordered(text: str):
    """A JSON value with object fields kept in order, for order-sensitive comparisons."""
    return json.loads(text, object_pairs_hook=list)


def every_type_documents():
    base = bson.decode(bson.encode(every_type()))
    others = [
        {"_id": 7, "kind": "int id"},
        {"_id": "text-id", "kind": "string id"},
        {"_id": {"a": 1, "b": "x"}, "kind": "document id"},
    ]
    return [base, *(bson.decode(bson.encode(doc)) for doc in others)]


def test_import_every_bson_type_then_dump_gives_back_exactly_what_went_in(tmp_path):
    project = new_project(tmp_path / "a")
    documents = every_type_documents()
    source = tmp_path / "export.json"
    source.write_text(
        "".join(json_util.dumps(d, json_options=CANONICAL_JSON_OPTIONS) + "\n" for d in documents)
    )
    project.ok("import", str(source), "--collection", "things")
    dumped = project.ok("dump", "things").out.splitlines()
    expected = {
        json_util.dumps(d["_id"], json_options=CANONICAL_JSON_OPTIONS): d for d in documents
    }
    assert len(dumped) == len(documents)
    for line in dumped:
        doc = json_util.loads(line)
        original = expected[json_util.dumps(doc["_id"], json_options=CANONICAL_JSON_OPTIONS)]
        want = json_util.dumps(original, json_options=CANONICAL_JSON_OPTIONS)
        assert ordered(line) == ordered(want)  # field order and every type, in canonical text
    project.ok("export")
    assert "ok: 1 file(s), 4 records verified" in project.ok("verify", "database_backup").out


def test_relaxed_mongoexport_output_and_json_arrays_import(tmp_path, pnl_records):
    project = new_project(tmp_path / "a")
    docs = every_type_documents()[1:]
    relaxed = tmp_path / "relaxed.json"
    relaxed.write_text(
        "".join(json_util.dumps(d, json_options=RELAXED_JSON_OPTIONS) + "\n" for d in docs)
    )
    assert "3 documents imported" in project.ok("import", str(relaxed), "-c", "r").out
    array = tmp_path / "pnls.json"
    array.write_text(json.dumps(pnl_records))
    assert "190 documents imported" in project.ok("import", str(array), "-c", "pnls").out
    assert len(project.ok("dump", "pnls").out.splitlines()) == 190


def test_export_is_deterministic_across_runs_and_assets(tmp_path, pnl_records):
    first, second = new_project(tmp_path / "a"), new_project(tmp_path / "b")
    write_lines(tmp_path / "forward.json", pnl_records)
    write_lines(tmp_path / "backward.json", list(reversed(pnl_records)))
    first.ok("import", str(tmp_path / "forward.json"), "-c", "pnls")
    second.ok("import", str(tmp_path / "backward.json"), "-c", "pnls")
    first.ok("export")
    once = first.snapshot()
    assert "(unchanged)" in first.ok("export").out
    assert first.snapshot() == once
    second.ok("export")
    assert second.snapshot() == once
    assert b"vm" not in once and str(tmp_path).encode() not in once


def test_insert_mode_refuses_existing_ids_and_writes_nothing(tmp_path, pnl_records):
    project = new_project(tmp_path / "a")
    source = write_lines(tmp_path / "p.json", pnl_records)
    project.ok("import", str(source), "-c", "pnls")
    again = project.run("import", str(source), "-c", "pnls")
    assert again.code == 4 and "--mode upsert" in again.err
    assert len(project.ok("dump", "pnls").out.splitlines()) == 190
    project.ok("import", str(source), "-c", "pnls", "--mode", "upsert")
    assert len(project.ok("dump", "pnls").out.splitlines()) == 190


def test_a_bad_document_in_the_import_file_names_its_line_and_nothing_is_written(tmp_path):
    project = new_project(tmp_path / "a")
    source = tmp_path / "bad.json"
    source.write_text('{"_id": 1}\n{"_id": 2, "n": {"$numberInt": "two"}}\n')
    result = project.run("import", str(source), "-c", "c")
    assert result.code == 4
    assert f"{source}:2: n: $numberInt wants a string of digits" in result.err
    assert project.run("dump", "c").code == 2  # the collection was never created


def test_verify_names_the_file_and_line_of_each_problem(tmp_path, pnl_records):
    project = new_project(tmp_path / "a")
    project.ok("import", str(write_lines(tmp_path / "p.json", pnl_records)), "-c", "pnls")
    project.ok("export")
    path = project.root / "database_backup" / "pnls.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5] = lines[5].replace(b"USD", b"EUR")
    path.write_bytes(b"".join(lines))
    result = project.run("verify", "database_backup")
    assert result.code == 4
    assert "database_backup/pnls.jsonl:6: the record does not match its hash" in result.err
    report = json.loads(project.run("verify", str(path), "--json").out)
    assert report["ok"] is False and report["problems"][0]["line"] == 6


def test_the_example_snapshot_in_the_repository_verifies(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "database_backup"
    project = new_project(tmp_path / "a")
    result = project.ok("verify", str(example))
    assert "records verified" in result.out


def test_global_options_work_after_the_subcommand(tmp_path, pnl_records):
    project = new_project(tmp_path / "a")
    project.ok(
        "import",
        str(write_lines(tmp_path / "p.json", pnl_records)),
        "-c",
        "pnls",
        "--database",
        "other",
    )
    assert project.json("stats", "--database", "other")["collections"]["pnls"]["count"] == 190
    assert project.json("--database", "other", "stats")["collections"]["pnls"]["count"] == 190
    assert project.json("stats")["collections"] == {}


def test_an_unreachable_database_exits_3_without_printing_the_password(tmp_path):
    project = new_project(tmp_path / "a", toml="retry_seconds = 0.5\n")
    result = project.run(
        "stats", "--uri", "mongodb://alice:s3cret-pw@127.0.0.1:1/?serverSelectionTimeoutMS=200"
    )
    assert result.code == 3, result.output
    assert "s3cret-pw" not in result.output
    assert "127.0.0.1:1" in result.err


def test_an_unreachable_database_says_what_it_retries_and_for_how_long_before_it_waits(
    tmp_path,
):
    project = new_project(tmp_path / "a", toml="retry_seconds = 3\n")
    result = project.run("stats", "--uri", "mongodb://127.0.0.1:1")
    assert result.code == 3, result.output
    lines = result.err.splitlines()
    said = [n for n, line in enumerate(lines) if line.startswith("dbsync: cannot reach")]
    error = [n for n, line in enumerate(lines) if line.startswith("error: cannot reach")]
    assert len(said) == 1 and len(error) == 1 and said[0] < error[0], result.err
    assert "retrying to list the collections for up to 3 s" in lines[said[0]]
    attempts = re.search(r"; (\d+) attempts in ", lines[error[0]])
    assert attempts and int(attempts.group(1)) >= 2, result.err  # it waited after saying so


def test_bad_configuration_exits_4_naming_file_and_key(tmp_path):
    project = new_project(tmp_path / "a", toml="colour = 'blue'\n")
    result = project.run("stats")
    assert result.code == 4
    assert "dbsync.toml: unknown key 'colour'" in result.err
    assert "Traceback" not in result.output


def test_usage_errors_exit_2(tmp_path):
    project = new_project(tmp_path / "a")
    assert project.run("export", "--collection", "nope").code == 2
    assert project.run("import").code == 2
    assert project.run("no-such-command").code == 2


def test_stats_reports_snapshot_state(tmp_path, pnl_records):
    project = new_project(tmp_path / "a")
    other = new_project(tmp_path / "b")
    project.ok("import", str(write_lines(tmp_path / "p.json", pnl_records)), "-c", "pnls")
    assert project.json("stats")["collections"]["pnls"]["snapshot"] == "no snapshot"
    project.ok("export")
    stats = project.json("stats")
    assert stats["database"] == "shop"
    pnls = stats["collections"]["pnls"]
    assert pnls["last_export"]["records"] == 190 and pnls["last_merge"] is None
    assert {k: pnls[k] for k in ("count", "snapshot_records", "snapshot")} == {
        "count": 190,
        "snapshot_records": 190,
        "snapshot": "in sync",
    }
    project.ok("import", str(write_lines(tmp_path / "one.json", [{"_id": 1}])), "-c", "pnls")
    assert project.json("stats")["collections"]["pnls"]["snapshot"] == "local changes"
    other.ok("import", str(write_lines(tmp_path / "o.json", pnl_records[:5])), "-c", "pnls")
    other.ok("export")
    (project.root / "database_backup" / "pnls.jsonl").write_bytes(other.snapshot())  # a pull
    assert project.json("stats")["collections"]["pnls"]["snapshot"] == "unmerged remote changes"


def test_output_writes_every_collection_into_one_file(tmp_path, pnl_records):
    project = new_project(tmp_path / "a")
    project.ok("import", str(write_lines(tmp_path / "p.json", pnl_records)), "-c", "pnls")
    project.ok("import", str(write_lines(tmp_path / "o.json", [{"_id": 1}])), "-c", "other")
    project.ok("export", "--output", "all.jsonl")
    assert "2 file(s)" not in project.ok("verify", "all.jsonl").out
    assert "191 records verified" in project.ok("verify", "all.jsonl").out
