import json
import shutil

import pytest

from dbsync.config import load_config
from dbsync.edges import state
from dbsync.edges.change_index import ChangeIndex
from dbsync.edges.state import CollectionResult
from dbsync.runs import status
from dbsync.runs.export import export
from dbsync.runs.status import DEGRADED, WARNING, Reason, StatusContext


@pytest.fixture
def config(tmp_path):
    (tmp_path / "dbsync.toml").write_text('database = "shop"\n')
    return load_config(cwd=tmp_path, environ={})


@pytest.fixture
def db(config):
    store = state.open_state(config.state_dir)
    yield store
    store.close()


def record(db, operation, *outcomes):
    db.finish_run(db.start_run(operation, "a"), 1, list(outcomes))


def reasons(check, context):
    return [(r.level, r.message, r.fix) for r in check(context)]


# ------------------------------------------------------------- one check at a time


def test_three_consecutive_failures_of_a_collection_are_degraded(config, db):
    context = StatusContext(config, state=db)
    for _ in range(2):
        record(db, "merge", CollectionResult("pnl", "failed", error="database down"))
    assert status.check_consecutive_failures(context) == []
    record(db, "merge", CollectionResult("pnl", "failed", error="database down"))
    ((level, message, fix),) = reasons(status.check_consecutive_failures, context)
    assert level == DEGRADED
    assert message == "pnl: the last 3 merge attempts failed (last: database down)"
    assert "dbsync merge database_backup" in fix
    record(db, "merge", CollectionResult("pnl", "success", 5))
    assert status.check_consecutive_failures(context) == []


def test_each_pending_merge_is_a_warning_that_says_what_to_run(config, db):
    db.add_pending("database_backup", "/tmp/base", "0123456789abcdef0123")
    pending = db.list_pending()[0]
    db.mark_pending_attempt(pending.id, "connection refused", None)
    ((level, message, fix),) = reasons(status.check_pending_merges, StatusContext(config, db))
    assert level == WARNING
    assert "database_backup (commit 0123456789ab)" in message
    assert "1 attempts; last error: connection refused" in message
    assert fix == (
        "run 'dbsync merge database_backup --base /tmp/base' (three-way against the base the "
        "pull's merge had, deletions included)"
    )


def test_the_snapshot_check_tells_local_changes_from_unmerged_ones(config, db, mongo_store):
    context = StatusContext(config, state=db, _store=mongo_store)
    mongo_store.insert_many("pnl", [{"_id": i} for i in range(3)])
    assert reasons(status.check_snapshot_matches_database, context) == [
        (WARNING, "pnl: 3 records were never exported", "run 'dbsync export'")
    ]
    elsewhere = config.root / "elsewhere"
    (exported,) = export(config, mongo_store, target_dir=elsewhere)  # records nothing as synced
    config.snapshot_dir.mkdir(exist_ok=True)
    shutil.copy(exported.path, config.snapshot_dir / exported.path.name)
    mongo_store.insert_many("pnl", [{"_id": 4}])
    ((_, message, fix),) = reasons(status.check_snapshot_matches_database, context)
    assert "differ (this asset has no record of exporting or merging this snapshot)" in message
    assert "dbsync diff database_backup db" in fix
    mongo_store.apply("pnl", [], [4])
    record(db, "export", CollectionResult("pnl", "success", 3, exported.digest))
    assert status.check_snapshot_matches_database(context) == []
    mongo_store.insert_many("pnl", [{"_id": 9}])
    ((_, message, fix),) = reasons(status.check_snapshot_matches_database, context)
    assert "not in the snapshot (not exported)" in message and fix == "run 'dbsync export'"
    (arriving,) = export(config, mongo_store, target_dir=elsewhere)  # another asset's export
    shutil.copy(arriving.path, config.snapshot_dir / arriving.path.name)  # arrives by git pull
    mongo_store.apply("pnl", [], [9])  # ...over a database that does not have it
    ((_, message, fix),) = reasons(status.check_snapshot_matches_database, context)
    assert "the snapshot holds changes that are not merged" in message
    assert fix == "run 'dbsync merge database_backup'"


class NoFullReads:
    """A store that fails the test when a collection is read in full."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        if name in ("iter_documents", "iter_raw_documents", "size_bytes", "find_by_ids"):
            raise AssertionError(f"status read a whole collection ({name})")
        return getattr(self.inner, name)


def test_status_tells_a_changed_database_by_its_fingerprint_without_reading_it(
    config, db, embedded_store
):
    embedded_store.insert_many("pnl", [{"_id": i, "v": i} for i in range(5)])
    (exported,) = export(config, embedded_store)
    record(db, "export", CollectionResult("pnl", "success", 5, exported.digest))
    index = ChangeIndex.open_read_only(config.state_dir)
    cheap = StatusContext(config, state=db, _store=NoFullReads(embedded_store), index=index)
    deep = StatusContext(config, state=db, _store=embedded_store, deep=True)
    assert status.check_snapshot_matches_database(cheap) == []
    assert status.check_snapshot_matches_database(deep) == []
    embedded_store.apply("pnl", [{"_id": 2, "v": -2}], [])  # same count, another record
    expected = [
        (
            WARNING,
            "pnl: the database has changes that are not in the snapshot (not exported)",
            "run 'dbsync export'",
        )
    ]
    assert reasons(status.check_snapshot_matches_database, cheap) == expected
    assert reasons(status.check_snapshot_matches_database, deep) == expected
    index.close()


def test_after_a_merge_the_plain_status_says_the_merge_moved_the_database(
    config, db, embedded_store
):
    embedded_store.insert_many("pnl", [{"_id": i, "v": i} for i in range(5)])
    (exported,) = export(config, embedded_store)
    record(db, "export", CollectionResult("pnl", "success", 5, exported.digest))
    embedded_store.apply("pnl", [{"_id": 7, "v": 7}], [])  # as a merge writes
    record(db, "merge", CollectionResult("pnl", "success", 6, exported.digest))
    index = ChangeIndex.open_read_only(config.state_dir)
    context = StatusContext(config, state=db, _store=NoFullReads(embedded_store), index=index)
    ((level, message, fix),) = reasons(status.check_snapshot_matches_database, context)
    assert level == WARNING and fix == "run 'dbsync export'"
    assert message.startswith("pnl: the database changed since its last export (a merge")
    assert "--deep" in message
    index.close()


def test_duplicate_keys_in_the_database_are_a_warning(tmp_path, mongo_store):
    (tmp_path / "dbsync.toml").write_text('database = "shop"\n[collections.pnl]\nkey = ["user"]\n')
    config = load_config(cwd=tmp_path, environ={})
    mongo_store.insert_many("pnl", [{"_id": 1, "user": "a"}, {"_id": 2, "user": "a"}])
    context = StatusContext(config, _store=mongo_store, deep=True)  # only reading tells
    ((level, message, _),) = reasons(status.check_snapshot_matches_database, context)
    assert (level, message) == (WARNING, "pnl: the key ['user'] is not unique in the database")
    cheap = StatusContext(config, _store=mongo_store)
    ((level, message, fix),) = reasons(status.check_snapshot_matches_database, cheap)
    assert (level, message, fix) == (
        WARNING,
        "pnl: 2 records were never exported",
        "run 'dbsync export'",  # which names the clash
    )


def test_the_status_is_the_worst_level_of_all_reasons(config):
    def warn(context):
        return [Reason(WARNING, "x", "w", "do w")]

    def degrade(context):
        return [Reason(DEGRADED, "y", "d", "do d")]

    assert status.health(config, [warn])["status"] == WARNING
    assert status.health(config, [warn, degrade])["status"] == DEGRADED
    assert status.health(config, [lambda context: []])["status"] == "HEALTHY"
    assert status.health(config, [degrade, warn])["reasons"] == [
        {"level": DEGRADED, "check": "y", "message": "d", "fix": "do d"},
        {"level": WARNING, "check": "x", "message": "w", "fix": "do w"},
    ]


# ------------------------------------------------------------- end to end


def files_under(root):
    """Every file and its bytes, SQLite's own -wal/-shm companions left out."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


def test_a_fresh_export_is_healthy_and_a_local_change_is_a_warning(pnl_project):
    assert pnl_project.json("status")["status"] == "HEALTHY"
    pnl_project.run("export")  # the state now knows this snapshot came from here
    extra = pnl_project.root / "extra.json"
    extra.write_text('{"_id": "new-record", "v": 1}\n')
    pnl_project.run("import", str(extra), "-c", "pnl")
    document = pnl_project.json("status")
    assert document["status"] == "WARNING"
    assert document["reasons"] == [
        {
            "level": "WARNING",
            "check": "snapshot",
            "message": "pnl: the database has changes that are not in the snapshot (not exported)",
            "fix": "run 'dbsync export'",
        }
    ]
    assert document["database"] == "shop"
    text = pnl_project.run("status").stdout
    assert "status: WARNING" in text and "→ run 'dbsync export'" in text
    assert pnl_project.json("status", "--deep")["reasons"] == document["reasons"]


def test_a_missing_database_is_degraded_and_status_creates_nothing(pnl_project):
    shutil.rmtree(pnl_project.state / "db")
    pnl_project.run("history")  # leaves a state database behind? it must not either
    before = files_under(pnl_project.root)
    document = pnl_project.json("status")
    assert document["status"] == "DEGRADED"
    (reason,) = document["reasons"]
    assert reason["check"] == "database" and "does not exist" in reason["message"]
    assert "--uri" in reason["fix"]
    assert files_under(pnl_project.root) == before
    assert not (pnl_project.state / "db").exists()


def test_status_reads_but_never_writes_the_state(pnl_project):
    pnl_project.run("export")
    before = files_under(pnl_project.root)
    pnl_project.run("status")
    assert files_under(pnl_project.root) == before


def test_repeated_refusals_make_the_asset_degraded(pnl_project):
    for _ in range(3):
        pnl_project.run("--database", "typo", "export", expect=5)
    document = pnl_project.json("status")
    assert document["status"] == "DEGRADED"
    (reason,) = document["reasons"]
    assert reason["message"].startswith("pnl: the last 3 export attempts failed (last: pnl: this")
    assert "run 'dbsync export'" in reason["fix"]


def test_an_unreachable_mongodb_is_degraded_within_a_few_seconds(pnl_project):
    document = pnl_project.json("--uri", "mongodb://u:pw@127.0.0.1:1/", "status")
    assert document["status"] == "DEGRADED"
    assert document["reasons"][0]["check"] == "database"
    assert "u:***@127.0.0.1:1" in document["reasons"][0]["message"]
    assert "pw@" not in str(document)


def test_a_pending_merge_is_reported_not_retried(pnl_project):
    db = state.open_state(pnl_project.state)
    db.add_pending("database_backup", None, "abc")
    db.close()
    document = pnl_project.json("status")
    assert document["status"] == "WARNING"
    assert document["pending_merges"][0]["attempts"] == 0
    assert "dbsync merge database_backup" in document["reasons"][0]["fix"]
    assert pnl_project.history() == []  # nothing ran


def test_a_clone_without_hooks_or_drivers_is_a_warning(pair):
    a, _ = pair
    assert not [
        r for r in json.loads(a.dbsync("status", "--json").out)["reasons"] if r["check"] == "git"
    ]
    a.dbsync("hooks", "uninstall")
    a.git("config", "--unset", "merge.dbsync.driver")
    document = json.loads(a.dbsync("status", "--json", ok=False).out)
    git_reasons = [r for r in document["reasons"] if r["check"] == "git"]
    assert document["status"] == "WARNING"
    assert (
        "git hooks not installed here: pre-push, post-merge, post-rewrite"
        in git_reasons[0]["message"]
    )
    assert "merge driver" in git_reasons[1]["message"] and "dbsync init" in git_reasons[1]["fix"]
