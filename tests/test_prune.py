import json
import shutil
import tempfile
from collections import namedtuple

import pytest

from dbsync.config import load_config
from dbsync.edges import backups, state
from dbsync.errors import SafetyRefusal
from dbsync.runs.export import export
from dbsync.runs.merge import merge_snapshot
from dbsync.runs.prune import prune


@pytest.fixture
def config(tmp_path, monkeypatch):
    scratch = tmp_path / "tmpdir"  # scratch folders of other runs on this machine stay out
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    (tmp_path / "dbsync.toml").write_text('database = "shop"\n')
    return load_config(cwd=tmp_path, environ={})


def backup_id(number):
    return f"2020010{number // 10}T00000{number % 10}000Z-ab{number:02d}"


def make_backup(config, number, complete=True):
    folder = backups.backup_folder(config.state_dir, backup_id(number))
    folder.mkdir(parents=True)
    (folder / "pnl.jsonl").write_text("data\n")
    if complete:
        info = backups.BackupInfo(backup_id(number), "2020-01-01T00:00:00+00:00", ["pnl"], "test")
        backups.write_meta(folder, info)
    return folder


def make_report(config, number):
    folder = config.state_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("txt", "json"):
        (
            folder / f"merge_report_2020010{number // 10}T00000{number % 10}000000.{suffix}"
        ).write_text("{}")


def remaining_backups(config):
    return sorted(p.name for p in backups.backups_dir(config.state_dir).iterdir())


def remaining_reports(config):
    return sorted(p.name for p in (config.state_dir / "reports").iterdir())


@pytest.fixture
def cluttered(config):
    for number in range(13):
        make_backup(config, number)
        make_report(config, number)
    make_backup(config, 50, complete=False)
    config.snapshot_dir.mkdir()
    (config.snapshot_dir / ".pnl.jsonl.x1y2z3.tmp").write_text("half a snapshot")
    (config.snapshot_dir / "pnl.jsonl").write_text("kept")
    (config.state_dir / "synced").mkdir()
    (config.state_dir / "synced" / ".synced.json.abc.tmp").write_text("half")
    (config.root / ".notes.tmp").write_text("the user's own file")
    return config


def test_prune_keeps_the_newest_n_and_clears_leftovers(cluttered):
    config = cluttered
    result = prune(config, keep=10)
    assert result.backups == [backup_id(n) for n in (2, 1, 0)]
    assert remaining_backups(config) == sorted(backup_id(n) for n in range(3, 13))
    assert result.unfinished_backups == [backup_id(50)]
    assert len(result.reports) == 6 and result.kept_reports == 10
    assert len(remaining_reports(config)) == 20
    assert "merge_report_20200100T000002000000.txt" not in remaining_reports(config)
    assert sorted(result.temporary_files) == [
        "database_backup/.pnl.jsonl.x1y2z3.tmp",
        "database_sync/synced/.synced.json.abc.tmp",
    ]
    assert (config.snapshot_dir / "pnl.jsonl").read_text() == "kept"
    assert (config.root / ".notes.tmp").exists()  # not dbsync's
    assert prune(config, keep=10).to_json()["removed"] == {
        "backups": [],
        "unfinished_backups": [],
        "reports": [],
        "temporary_files": [],
        "scratch_folders": [],
        "history_rows": 0,
        "losing_versions": 0,
    }


def test_keep_zero_still_keeps_the_newest_backup(cluttered):
    result = prune(cluttered, keep=0)
    assert remaining_backups(cluttered) == [backup_id(12)]
    assert result.kept_backups == 1 and remaining_reports(cluttered) == []


def test_a_backup_a_pending_merge_needs_is_kept(cluttered):
    db = state.open_state(cluttered.state_dir)
    needed = backups.backup_folder(cluttered.state_dir, backup_id(0)) / "pnl.jsonl"
    db.add_pending(str(needed.relative_to(cluttered.root)))
    db.close()
    prune(cluttered, keep=10)
    assert backup_id(0) in remaining_backups(cluttered)
    assert backup_id(1) not in remaining_backups(cluttered)


def test_under_a_parent_run_unfinished_backups_and_temporary_files_stay(cluttered):
    result = prune(cluttered, keep=10, leftovers=False)
    assert result.unfinished_backups == [] and result.temporary_files == []
    assert backup_id(50) in remaining_backups(cluttered)


def test_prune_trims_the_history(config, monkeypatch):
    monkeypatch.setattr(state, "HISTORY_KEPT", 2)
    db = state.open_state(config.state_dir)
    for _ in range(5):
        db.finish_run(db.start_run("export", "a"), 1, [state.CollectionResult("pnl", "success", 1)])
    db.close()
    assert prune(config).history_rows == 3


def test_a_full_disk_refuses_the_merge_before_anything_is_written(config, mongo_store, monkeypatch):
    mongo_store.insert_many("pnl", [{"_id": i, "v": i} for i in range(20)])
    export(config, mongo_store)
    mongo_store.apply("pnl", [{"_id": 1, "v": "changed"}], [])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1024))
    with pytest.raises(SafetyRefusal, match="not enough free disk space") as refused:
        merge_snapshot(config, mongo_store, config.snapshot_dir)
    assert refused.value.exit_code == 5 and "prune" in refused.value.hint
    assert mongo_store.find_by_ids("pnl", [1]) == [{"_id": 1, "v": "changed"}]
    assert backups.list_backups(config.state_dir) == []
    assert list(backups.backups_dir(config.state_dir).iterdir()) == []
    assert not (config.state_dir / "reports").exists()


# ------------------------------------------------------------- end to end


def test_every_successful_merge_prunes_quietly(pnl_project):
    config = load_config(cwd=pnl_project.root, environ={})
    for number in range(12):
        make_backup(config, number)
    make_backup(config, 50, complete=False)
    result = pnl_project.run("merge", "database_backup")
    assert "prune" not in result.stdout + result.stderr
    remaining = remaining_backups(config)
    assert len(remaining) == 10 and backup_id(50) not in remaining
    newest = json.loads(pnl_project.run("backups", "--json").stdout)[0]["id"]
    assert newest in remaining and newest > backup_id(99)


def test_prune_command_reports_what_it_removed(pnl_project):
    config = load_config(cwd=pnl_project.root, environ={})
    for number in range(3):
        make_backup(config, number)
    document = pnl_project.json("prune", "--keep", "1")
    assert document["removed"]["backups"] == [backup_id(1), backup_id(0)]
    assert document["kept"]["backups"] == 1
    text = pnl_project.run("prune", "--keep", "1").stdout
    assert "removed 0 backup(s)" in text and "kept 1 backup(s)" in text
    assert pnl_project.run("prune", "--keep", "-1", expect=2).returncode == 2
