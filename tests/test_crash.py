"""SIGKILL in the middle of export, merge and restore: never a mix of old and new.

Each run is a real dbsync process killed with SIGKILL, which no code can intercept. To kill it at
exact points (mid-write, between the backup and the first write, after the n-th record written
inside the transaction...), the process is the real CLI started through a small wrapper that
makes one internal function send SIGKILL to its own process; nothing in dbsync itself knows
about these tests. A last test kills the real console script at a moment chosen by the clock.

Guarantees tested:
* export: every snapshot file verifies and holds either the old or the new bytes (writes go to
  a temporary file, fsynced, renamed); the leftover temporary file is removed by ``prune``.
* merge and restore: the embedded store is readable and holds the old state or the new one,
  never a mix (one SQLite transaction per collection); a run killed after it started writing is
  journaled: ``export`` refuses (exit 5) until the recovery ``status`` names has run, and that
  recovery (``merge --resume``, ``restore ID`` again) ends with every record: the asset's own
  unexported records and newer edits included.
"""

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mongomock
import pytest
from conftest import no_sleep_policy
from project import Project, clean_env, forget_history

from dbsync.config import load_config
from dbsync.edges.embedded import EmbeddedStore
from dbsync.edges.mongo import MongoStore
from dbsync.edges.snapshot_files import verify_file
from dbsync.edges.store import decode_raw
from dbsync.runs.export import export

RECORDS = 300
LOCAL_NEW = range(5000, 5005)  # records this asset added and never exported
LOCAL_EDITED = range(0, 5)  # records this asset edited after its export, newer than theirs
THEIRS_NEW = range(300, 310)  # records only the other asset has: the merge inserts them

KILLER = """
import importlib, os, signal, sys
from dbsync.edges import embedded, files
from dbsync.core import snapshot
from dbsync.runs import merge

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

def patch_after(spec):  # module:attribute[.method]:n, SIGKILL on the (n+1)-th call
    module_name, attribute, calls = spec.split(":")
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, after_calls(getattr(owner, name), int(calls)))

if ":" in point:
    patch_after(point)
elif point == "export-mid-write":
    snapshot.Digest.add = after_calls(snapshot.Digest.add, 150)
elif point == "export-after-rename":
    files.fsync_directory = die
elif point == "merge-before-writing":
    merge._apply_all = die
elif point == "merge-after-writing":
    merge.write_report_files = die  # the first step after the last write

from dbsync.launch import main
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
    local = [{"_id": i, "name": f"local{i}", "ts": "2024-01-01T00:00:00"} for i in LOCAL_NEW]
    local += [{**documents(9)[i], "name": f"edited{i}"} for i in LOCAL_EDITED]
    records.write_text("".join(json.dumps(d) + "\n" for d in local))
    project.run("import", str(records), "-c", "items", "--mode", "upsert")  # not exported
    theirs = MongoStore(mongomock.MongoClient(), "theirs", retry=no_sleep_policy())
    extra = [{"_id": i, "name": f"theirs{i}", "ts": "2024-01-02T00:00:00"} for i in THEIRS_NEW]
    theirs.insert_many("items", documents(2) + extra)
    export(load_config(cwd=root, environ={}), theirs, target_dir=root / "theirs")
    forget_history(root)
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


@pytest.fixture(scope="session")
def states(crash_template, tmp_path_factory):
    """The stored documents before a merge and after it, as ``stored`` reads them."""
    reference = Project(tmp_path_factory.mktemp("states") / "project")
    shutil.copytree(crash_template, reference.root)
    before = stored(reference)
    reference.run("merge", "theirs")
    return before, stored(reference)


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
        assert leftover.startswith("database_sync/tmp/.items.jsonl.") and leftover.endswith(".tmp")
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


def stored(project):
    """The embedded store's documents as raw BSON, sorted: read in-process, and readable."""
    uri, database = load_config(cwd=project.root, environ={}).require_database()
    store = EmbeddedStore(Path(uri.removeprefix("embedded://")), database)
    try:
        return sorted(store.iter_raw_documents("items"))
    finally:
        store.close()


def keeps_the_asset_s_own_records(state):
    documents = {document["_id"]: document for document in map(decode_raw, state)}
    assert all(documents[i]["name"] == f"local{i}" for i in LOCAL_NEW)
    assert all(documents[i]["name"] == f"edited{i}" for i in LOCAL_EDITED)


def test_a_merge_killed_mid_apply_leaves_the_old_state_and_is_resumed(crash_project, after):
    before = crash_project.dump("items")
    killed(crash_project, "dbsync.edges.embedded:_put_row:150", "merge", "theirs")
    assert crash_project.dump("items") == before
    status = crash_project.json("status")
    assert status["status"] == "DEGRADED"
    (reason,) = [r for r in status["reasons"] if r["check"] == "interrupted"]
    (backup,) = crash_project.json("backups")
    assert "dbsync merge --resume" in reason["fix"]
    assert f"dbsync restore {backup['id']}" in reason["fix"]
    refused = crash_project.run("export", expect=5)
    assert "dbsync merge --resume" in refused.stderr
    crash_project.run("merge", "--resume")
    assert crash_project.dump("items") == after
    assert "interrupted" not in {r["check"] for r in crash_project.json("status")["reasons"]}
    crash_project.run("export")


MERGE_POINTS = [
    "dbsync.edges.embedded:_put_row:0",
    "dbsync.edges.embedded:_put_row:1",
    *(f"dbsync.edges.embedded:_put_row:{n}" for n in random.Random(10).sample(range(2, 304), 9)),
    "dbsync.edges.embedded:_put_row:304",  # the last record, before the commit
    "dbsync.edges.changes:ChangeWriter.add:100",  # planning: the backup half written
    "dbsync.edges.backups:write_meta:0",
    "dbsync.edges.journal:begin:0",
    "dbsync.edges.embedded:EmbeddedStore.close:0",  # after the commit
    "dbsync.edges.journal:finish:0",
    "dbsync.runs.merge:write_report_files:0",
]


@pytest.mark.parametrize("point", MERGE_POINTS)
def test_a_merge_killed_anywhere_leaves_old_or_new_and_its_recovery_keeps_every_record(
    crash_project, states, point
):
    before, after = states
    killed(crash_project, point, "merge", "theirs")
    left = stored(crash_project)
    assert left in (before, after)
    exported = crash_project.run("export", expect=None)
    if exported.returncode == 5:
        assert "dbsync merge --resume" in exported.stderr
        crash_project.run("merge", "--resume")
    else:
        assert exported.returncode == 0, exported.stderr
        crash_project.run("merge", "theirs")
    assert stored(crash_project) == after
    keeps_the_asset_s_own_records(after)


RESTORE_POINTS = [
    "dbsync.edges.embedded:_delete_row:0",  # undoing the merge's inserts comes first
    "dbsync.edges.embedded:_delete_row:5",
    "dbsync.edges.embedded:_delete_row:9",
    "dbsync.edges.embedded:_put_row:0",
    *(f"dbsync.edges.embedded:_put_row:{n}" for n in random.Random(11).sample(range(1, 294), 6)),
    "dbsync.edges.journal:begin:0",  # the safety backup is taken, nothing written yet
    "dbsync.edges.journal:finish:0",
]


@pytest.fixture(scope="session")
def merged_template(crash_template, tmp_path_factory):
    """The crash project after its merge: the merge's backup is the one to restore."""
    root = tmp_path_factory.mktemp("merged") / "project"
    shutil.copytree(crash_template, root)
    Project(root).run("merge", "theirs")
    return root


@pytest.mark.parametrize("point", RESTORE_POINTS)
def test_a_restore_killed_anywhere_leaves_old_or_new_and_restoring_again_finishes_it(
    merged_template, tmp_path, states, point
):
    before, after = states
    project = Project(tmp_path / "project")
    shutil.copytree(merged_template, project.root)
    (backup,) = [p.name for p in (project.state / "backups").iterdir()]
    killed(project, point, "restore", backup)
    assert stored(project) in (before, after)
    exported = project.run("export", expect=None)
    if exported.returncode == 5:
        assert f"dbsync restore {backup}" in exported.stderr
    project.run("restore", backup)
    assert stored(project) == before
    keeps_the_asset_s_own_records(before)


def test_the_real_command_killed_at_any_moment_keeps_a_guarantee(crash_project, after):
    before = crash_project.dump("items")
    merging = crash_project.popen("merge", "theirs")
    backups = crash_project.state / "backups"
    while not list(backups.glob("*/backup.json")) and merging.poll() is None:
        time.sleep(0.005)  # the merge's own end stops the wait: no deadline to miss when loaded
    merging.send_signal(signal.SIGKILL)
    merging.wait()
    assert crash_project.dump("items") in (before, after)  # readable, never a mix
