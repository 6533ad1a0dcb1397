"""SIGKILL in the middle of export and merge: never a mix of old and new.

Each run is a real dbsync process killed with SIGKILL, which no code can intercept. To kill it at
exact points (mid-write, between the backup and the first write, after the first batch of
writes...), the process is the real CLI started through a small wrapper that makes one internal
function send SIGKILL to its own process; nothing in dbsync itself knows about these tests. A
last test kills the real console script at a moment chosen by the clock.

Guarantees tested:
* export: every snapshot file verifies and holds either the old or the new bytes (writes go to
  a temporary file, fsynced, renamed); the leftover temporary file is removed by ``prune``.
* merge: the database is unchanged if killed before the first write, fully merged if killed
  after the last; killed in between it is partly merged, and ``dbsync restore <backup>`` (the
  backup ``dbsync status`` names) puts it back exactly as it was before the merge.
"""

import json
import shutil
import signal
import subprocess
import sys
import time

import mongomock
import pytest
from conftest import no_sleep_policy
from project import Project, clean_env

from dbsync.commands.export import export
from dbsync.config import load_config
from dbsync.mongo import MongoStore
from dbsync.snapshot import verify_file

RECORDS = 2500  # three batches of writes when every record changes

KILLER = """
import os, signal, sys
from dbsync import files, snapshot, store
from dbsync.commands import merge

point = sys.argv[1]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def after_calls(function, calls):
    seen = []
    def wrapper(*args, **kwargs):
        seen.append(1)
        if len(seen) > calls:
            die()
        return function(*args, **kwargs)
    return wrapper

if point == "export-mid-write":
    snapshot.Digest.add = after_calls(snapshot.Digest.add, 1200)
elif point == "export-after-rename":
    files.fsync_directory = die
elif point == "merge-before-writing":
    merge._apply_all = die
elif point == "merge-mid-apply":
    store.EmbeddedStore.apply = after_calls(store.EmbeddedStore.apply, 1)
elif point == "merge-after-writing":
    merge.write_report_files = die  # the first step after the last write

from dbsync.cli import main
sys.argv = ["dbsync", *sys.argv[2:]]
main()
"""


def documents(version):
    return [
        {"_id": i, "name": f"user{i}", "v": i * version, "ts": f"2024-01-0{version}T00:00:00"}
        for i in range(RECORDS)
    ]


@pytest.fixture(scope="session")
def crash_template(tmp_path_factory):
    """A project holding version 1 of the records, exported, and version 2 as another asset's
    snapshot directory (newer timestamps: a merge rewrites every record)."""
    root = tmp_path_factory.mktemp("crash") / "project"
    root.mkdir()
    (root / "dbsync.toml").write_text(
        'database = "shop"\nretry_seconds = 0\n[collections.items]\ntimestamp = "ts"\n'
    )
    project = Project(root)
    project.run("init", "--asset", "test-asset")
    records = root / "items.json"
    records.write_text("".join(json.dumps(d) + "\n" for d in documents(1)))
    project.run("import", str(records), "-c", "items")
    project.run("export")
    theirs = MongoStore(mongomock.MongoClient(), "theirs", retry=no_sleep_policy())
    theirs.insert_many("items", documents(2))
    export(load_config(cwd=root, environ={}), theirs, target_dir=root / "theirs")
    for name in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):
        (root / "database_sync" / name).unlink(missing_ok=True)
    return root


@pytest.fixture
def crash_project(crash_template, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(crash_template, root)
    return Project(root)


def killed(project, point, *args):
    """Run ``dbsync args`` until it SIGKILLs itself at ``point``."""
    result = subprocess.run(
        [sys.executable, "-c", KILLER, point, *args],
        cwd=project.root,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr)


@pytest.fixture(scope="session")
def after(crash_template, tmp_path_factory):
    """The database as a merge that is not killed leaves it."""
    reference = Project(tmp_path_factory.mktemp("reference") / "project")
    shutil.copytree(crash_template, reference.root)
    reference.run("merge", "theirs")
    return reference.dump("items")


# ------------------------------------------------------------- export


@pytest.mark.parametrize("point", ["export-mid-write", "export-after-rename"])
def test_a_killed_export_leaves_the_old_snapshot_or_the_new_one(crash_project, point):
    path = crash_project.snapshot("items")
    old = path.read_bytes()
    records = crash_project.root / "v2.json"
    records.write_text("".join(json.dumps(d) + "\n" for d in documents(2)))
    crash_project.run("import", str(records), "-c", "items", "--mode", "upsert")
    killed(crash_project, point, "export")
    left = path.read_bytes()
    assert verify_file(path).ok
    crash_project.run("export")
    new = path.read_bytes()
    assert new != old
    assert left == (old if point == "export-mid-write" else new)
    assert [e["status"] for e in crash_project.history()] == ["success", "interrupted", "success"]
    leftovers = crash_project.json("prune")["removed"]["temporary_files"]
    if point == "export-mid-write":
        (leftover,) = leftovers
        assert leftover.startswith("database_backup/.items.jsonl.") and leftover.endswith(".tmp")
    assert [p.name for p in crash_project.snapshots.iterdir()] == ["items.jsonl"]


# ------------------------------------------------------------- merge


def test_a_merge_killed_before_writing_leaves_the_database_unchanged(crash_project):
    before = crash_project.dump("items")
    killed(crash_project, "merge-before-writing", "merge", "theirs")
    assert crash_project.dump("items") == before
    crash_project.run("export")  # the lock is free again


def test_a_merge_killed_after_writing_leaves_the_merged_database(crash_project, after):
    killed(crash_project, "merge-after-writing", "merge", "theirs")
    assert crash_project.dump("items") == after


def test_a_merge_killed_mid_apply_is_undone_exactly_by_restoring_its_backup(crash_project, after):
    before = crash_project.dump("items")
    killed(crash_project, "merge-mid-apply", "merge", "theirs")
    partly = crash_project.dump("items")
    assert partly not in (before, after)
    status = crash_project.json("status")
    assert status["status"] == "DEGRADED"
    (reason,) = [r for r in status["reasons"] if r["check"] == "interrupted"]
    (backup,) = crash_project.json("backups")
    assert f"dbsync restore {backup['id']}" in reason["fix"]
    crash_project.run("restore", backup["id"])
    assert crash_project.dump("items") == before
    assert "interrupted" not in {r["check"] for r in crash_project.json("status")["reasons"]}


def test_the_real_command_killed_at_any_moment_keeps_a_guarantee(crash_project, after):
    before = crash_project.dump("items")
    merging = crash_project.popen("merge", "theirs")
    backups = crash_project.state / "backups"
    while not list(backups.glob("*/backup.json")) and merging.poll() is None:
        time.sleep(0.005)  # the merge's own end stops the wait: no deadline to miss when loaded
    merging.send_signal(signal.SIGKILL)
    merging.wait()
    state = crash_project.dump("items")
    if state not in (before, after):
        (backup,) = crash_project.json("backups")
        crash_project.run("restore", backup["id"])
        assert crash_project.dump("items") == before
