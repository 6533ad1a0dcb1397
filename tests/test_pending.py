"""Zero data loss around failed merges: the pending queue and the unmerged-snapshot guard."""

import json
import shutil

from tests.cli_helpers import new_project, write_lines
from tests.git_helpers import real_records

RECORDS_FOR_TESTS = real_records()


def test_export_refuses_to_overwrite_a_snapshot_it_has_not_merged(tmp_path, pnl_records):
    a, b = new_project(tmp_path / "a"), new_project(tmp_path / "b")
    a.ok("import", str(write_lines(tmp_path / "a.json", pnl_records[:100])), "-c", "pnls")
    b.ok("import", str(write_lines(tmp_path / "b.json", pnl_records[100:])), "-c", "pnls")
    a.ok("export")
    b.ok("export")
    shutil.copy(b.root / "database_backup" / "pnls.jsonl", a.root / "database_backup")  # a "pull"
    refused = a.run("export")
    assert refused.code == 5
    assert "holds changes this database has not merged" in refused.err
    assert "dbsync merge database_backup" in refused.err
    assert a.snapshot() == b.snapshot()  # nothing was written
    a.ok("merge", "database_backup")
    assert "190 records" in a.ok("export").out


def test_a_pull_while_the_database_is_down_is_merged_by_the_next_command(pair):
    a, b = pair
    a.import_records(RECORDS_FOR_TESTS[:30])
    a.push_snapshot()
    local = b.root / "dbsync.local.toml"
    reachable = local.read_text()
    down = 'uri = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200"\nretry_seconds = 0.2\n'
    local.write_text(down + 'asset = "b"\n')
    pulled = b.git("pull")
    assert "pending" in pulled.err
    status = json.loads(b.dbsync("status", "--json", ok=False).out)
    assert any("pending" in reason["message"] for reason in status["reasons"])
    assert b.dbsync("export", ok=False).code == 3  # still down: retried, and it says so
    local.write_text(reachable)
    exported = b.dbsync("export")
    assert "retrying the pending merge of database_backup" in exported.out
    assert len(b.dump()) == 30
    assert b.snapshot() == a.snapshot()
    status = json.loads(b.dbsync("status", "--json", ok=False).out)
    assert not any("pending" in reason["message"] for reason in status["reasons"])


def test_a_pending_merge_blocks_a_push_of_an_older_snapshot(pair):
    a, b = pair
    a.import_records(RECORDS_FOR_TESTS[:30])
    a.push_snapshot()
    b.import_records(RECORDS_FOR_TESTS[30:40])
    local = b.root / "dbsync.local.toml"
    reachable = local.read_text()
    local.write_text(
        'uri = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200"\n'
        'retry_seconds = 0.2\nasset = "b"\n'
    )
    b.git("pull")
    local.write_text(reachable)
    pushed = b.push_snapshot()  # the hook retries the pending merge, then exports the union
    assert pushed.code == 0
    a.git("pull")
    assert len(a.dump()) == 40 == len(b.dump())
