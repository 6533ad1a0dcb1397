import sqlite3
import subprocess
import sys

import pytest

from dbsync.edges import state
from dbsync.edges.state import CollectionResult
from dbsync.errors import InvalidInput


@pytest.fixture
def db(tmp_path):
    store = state.open_state(tmp_path / "database_sync")
    yield store
    store.close()


def finished(db, operation, *outcomes, duration=5):
    run_id = db.start_run(operation, "asset-a")
    db.finish_run(run_id, duration, list(outcomes))
    return run_id


def test_a_new_state_is_wal_with_the_current_schema_version(tmp_path, db):
    raw = sqlite3.connect(tmp_path / "database_sync" / "state.sqlite")
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert raw.execute("PRAGMA user_version").fetchone() == (state.SCHEMA_VERSION,)


def test_history_is_newest_first_with_one_row_per_collection(db):
    finished(
        db,
        "export",
        CollectionResult("a", "success", 3),
        CollectionResult("b", "success", 4),
        duration=12,
    )
    finished(db, "merge", CollectionResult("a", "failed", error="boom"))
    rows = [entry.to_json() for entry in db.history()]
    assert [(r["operation"], r["collection"], r["status"]) for r in rows] == [
        ("merge", "a", "failed"),
        ("export", "a", "success"),
        ("export", "b", "success"),
    ]
    assert rows[1]["records"] == 3 and rows[1]["duration_ms"] == 12
    assert rows[0]["error"] == "boom"
    assert set(rows[0]) == {
        "time",
        "operation",
        "collection",
        "status",
        "records",
        "duration_ms",
        "error",
    }
    assert [entry.collection for entry in db.history(limit=1)] == ["a"]


def test_consecutive_failures_count_up_and_a_success_resets_them(db):
    for _ in range(3):
        finished(db, "merge", CollectionResult("pnl", "failed", error="down"))
    finished(db, "export", CollectionResult("pnl", "success", 190, "d1"))
    states = {s.operation: s for s in db.collection_states()}
    assert states["merge"].consecutive_failures == 3
    assert states["merge"].last_error == "down" and states["merge"].last_success is None
    assert states["export"].last_records == 190 and states["export"].last_digest == "d1"
    finished(db, "merge", CollectionResult("pnl", "success", 190))
    assert {s.operation: s.consecutive_failures for s in db.collection_states()} == {
        "export": 0,
        "merge": 0,
    }


def test_a_refusal_counts_as_a_failure_and_a_dry_run_as_neither(db):
    finished(db, "merge", CollectionResult("pnl", "success", 5))
    finished(db, "merge", CollectionResult("pnl", "refused", error="guard"))
    finished(db, "merge", CollectionResult("pnl", "dry-run", 5))
    (merge,) = db.collection_states()
    assert merge.consecutive_failures == 1


def test_a_run_whose_process_died_reads_as_interrupted(db):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with db._db:
        db._db.execute(
            "INSERT INTO history (run_id, time, operation, status, pid) "
            "VALUES (99, '2026-01-01', 'merge', 'running', ?)",
            (dead.pid,),
        )
    db.start_run("export", "asset-a")  # this process is alive: still running
    statuses = [(entry.operation, entry.status) for entry in db.history()]
    assert statuses == [("merge", "interrupted"), ("export", "running")]
    assert db.last_run("merge").status == "interrupted"


def test_pending_merges_queue(db):
    first = db.add_pending("database_backup", None, "abc123")
    second = db.add_pending("/tmp/x.jsonl", "/tmp/base.jsonl")
    assert [p.id for p in db.list_pending()] == [first.id, second.id]
    assert (first.source, first.base, first.commit, first.attempts) == (
        "database_backup",
        None,
        "abc123",
        0,
    )
    db.mark_pending_attempt(first.id, "database down", "2026-01-01T00:05:00+00:00")
    again = db.pending(first.id)
    assert (again.attempts, again.last_error, again.next_retry) == (
        1,
        "database down",
        "2026-01-01T00:05:00+00:00",
    )
    db.remove_pending(first.id)
    assert [p.id for p in db.list_pending()] == [second.id]


def test_trim_history_keeps_the_newest_rows(db):
    for number in range(5):
        finished(db, "export", CollectionResult(f"c{number}", "success", number))
    assert db.trim_history(keep=2) == 3
    assert [entry.collection for entry in db.history()] == ["c4", "c3"]


def test_a_damaged_state_file_is_refused_naming_it_and_the_fix(tmp_path):
    folder = tmp_path / "database_sync"
    folder.mkdir()
    (folder / "state.sqlite").write_bytes(b"this is not sqlite" * 100)
    for opener in (state.open_state, state.open_state_read_only):
        with pytest.raises(InvalidInput) as caught:
            opener(folder)
        assert "state.sqlite" in caught.value.message
        assert "mv " in caught.value.hint


def test_a_state_from_a_newer_dbsync_is_refused(tmp_path):
    folder = tmp_path / "database_sync"
    state.open_state(folder).close()
    raw = sqlite3.connect(folder / "state.sqlite")
    raw.execute("PRAGMA user_version = 7")
    raw.close()
    with pytest.raises(InvalidInput, match="schema version 7"):
        state.open_state(folder)


def test_reading_a_state_that_does_not_exist_creates_nothing(tmp_path):
    with state.reading_state(tmp_path / "database_sync") as nothing:
        assert nothing is None
    assert not (tmp_path / "database_sync").exists()


def _version(path):
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA user_version").fetchone()[0]


def test_a_state_written_by_an_older_dbsync_is_migrated_keeping_its_history(tmp_path):
    path = tmp_path / state.STATE_FILE
    with sqlite3.connect(path) as connection:
        connection.executescript(state._MIGRATIONS[0] + "PRAGMA user_version = 1;")
        connection.execute(
            "INSERT INTO history (run_id, time, operation, status, asset) "
            "VALUES (1, '2026-01-01T00:00:00Z', 'export', 'success', 'laptop')"
        )
    with state.reading_state(tmp_path) as reader:
        assert reader is not None
        assert [entry.operation for entry in reader.history()] == ["export"]
        assert reader.losing_versions() == []
    assert _version(path) == state.SCHEMA_VERSION


def test_losing_versions_are_kept_newest_first_and_pruned_by_age(db):
    def version(key):
        return state.NewLosingVersion(
            collection="pnl",
            key=f'["{key}"]',
            loser=f'{{"_id":"{key}","v":1}}',
            winner_hash="00ff",
            winner=f'{{"_id":"{key}","v":2}}',
            rule="newer timestamp",
            asset="laptop",
            place="merge-driver",
        )

    first, second = db.add_losing_versions([version("a"), version("b")])
    assert [found.id for found in db.losing_versions()] == [second, first]
    assert db.losing_version(first).loser == '{"_id":"a","v":1}'
    assert db.losing_versions(collection="other") == []
    assert db.prune_losing_versions("0000") == 0
    assert db.prune_losing_versions("9999") == 2
    with pytest.raises(KeyError):
        db.losing_version(first)
