import pytest

from dbsync.config import load_config
from dbsync.edges import state
from dbsync.errors import DatabaseUnreachable, SafetyRefusal
from dbsync.runs.recording import recorded_run


@pytest.fixture
def config(tmp_path):
    (tmp_path / "dbsync.toml").write_text('database = "shop"\nasset = "a1"\n')
    return load_config(
        cwd=tmp_path, environ={}, flags={"uri": "mongodb://bob:hunter2@db.example:27017/"}
    )


def history(config):
    with state.reading_state(config.state_dir) as db:
        return db.history()


def test_a_successful_run_is_recorded_per_collection_with_its_duration(config):
    warnings = []
    with recorded_run(config, "export", warn=warnings.append) as run:
        run.done("pnl", 190, "digest-1")
        run.done("users", 3)
    entries = history(config)
    assert [(e.collection, e.status, e.records, e.asset) for e in entries] == [
        ("pnl", "success", 190, "a1"),
        ("users", "success", 3, "a1"),
    ]
    assert all(e.duration_ms is not None and e.duration_ms >= 0 for e in entries)
    assert warnings == []


def test_a_failure_is_recorded_without_the_uri_password_and_re_raised(config):
    error = DatabaseUnreachable("cannot reach mongodb://bob:hunter2@db.example:27017/ (3 attempts)")
    with pytest.raises(DatabaseUnreachable):
        with recorded_run(config, "merge", collections=["pnl"], warn=print):
            raise error
    (entry,) = history(config)
    assert entry.status == "failed" and entry.collection == "pnl"
    assert "hunter2" not in entry.error and "bob:***@db.example" in entry.error


def test_a_failure_of_unnamed_collections_counts_for_every_collection_the_operation_knows(config):
    with recorded_run(config, "export", warn=print) as run:
        run.done("pnl", 1)
        run.done("users", 1)
    for _ in range(3):
        with pytest.raises(RuntimeError), recorded_run(config, "export", warn=print):
            raise RuntimeError("disk on fire")
    with state.reading_state(config.state_dir) as db:
        failures = {s.collection: s.consecutive_failures for s in db.collection_states()}
    assert failures == {"pnl": 3, "users": 3}
    assert history(config)[0].error == "RuntimeError: disk on fire"


def test_a_safety_refusal_is_recorded_as_refused(config):
    with pytest.raises(SafetyRefusal), recorded_run(config, "export", warn=print):
        raise SafetyRefusal("would delete everything")
    assert [(e.collection, e.status) for e in history(config)] == [(None, "refused")]


def test_a_damaged_state_database_warns_but_the_command_still_runs(config):
    config.state_dir.mkdir()
    (config.state_dir / "state.sqlite").write_bytes(b"garbage" * 1000)
    warnings, ran = [], []
    with recorded_run(config, "export", warn=warnings.append) as run:
        ran.append(True)
        run.done("pnl", 1)
    assert ran == [True]
    assert warnings and "not recorded" in warnings[0] and "state.sqlite" in warnings[0]


# ------------------------------------------------------------- end to end


def test_history_lists_every_attempt_newest_first(pnl_project):
    pnl_project.run("export")
    pnl_project.run("import", str(pnl_project.root / "pnl.json"), "-c", "pnl", expect=4)
    entries = pnl_project.history()
    assert [(e["operation"], e["collection"], e["status"]) for e in entries] == [
        ("import", "pnl", "failed"),
        ("export", "pnl", "success"),
    ]
    assert entries[1]["records"] == 190 and isinstance(entries[1]["duration_ms"], int)
    assert "already holds 190" in entries[0]["error"]
    text = pnl_project.run("history").stdout.splitlines()
    assert "import pnl failed" in text[0] and "export pnl success 190 records" in text[1]
    assert len(pnl_project.json("history", "--limit", "1")) == 1


def test_merge_restore_and_dry_run_are_recorded(pnl_project):
    pnl_project.run("merge", "database_backup", "--dry-run")
    report = pnl_project.json("merge", "database_backup")
    pnl_project.run("restore", report["backup"])
    entries = pnl_project.history()
    assert [(e["operation"], e["status"], e["records"]) for e in entries] == [
        ("restore", "success", 190),
        ("merge", "success", 190),
        ("merge", "dry-run", 190),
    ]


def test_history_without_any_run_is_empty(empty_project):
    assert empty_project.history() == []
    assert "no runs recorded yet" in empty_project.run("history").stdout
