"""Git left mid-operation by a killed dbsync: ``status`` says so with the fix, ``sync`` repairs
what is provably its own and refuses, naming the fix, what is not.

Real SIGKILLs: the merge driver git runs is swapped for a script that kills at the moment the
test needs (the whole process group, as a service manager or the OOM killer does, or the sync
process alone while git goes on).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.git_helpers import DBSYNC, Repo, real_records

RECORDS = real_records()
DRIVER_KEY = "merge.dbsync.driver"


def status(repo: Repo) -> dict:
    return json.loads(repo.dbsync("status", "--json", ok=False).out)


def reasons(repo: Repo, check: str = "git") -> list[dict]:
    return [reason for reason in status(repo)["reasons"] if reason["check"] == check]


def diverged(a: Repo, b: Repo) -> None:
    """a and b both hold a snapshot commit the other lacks: a's next pull runs the driver."""
    b.import_records(RECORDS[:30])
    b.dbsync("sync", "-q")
    a.import_records(RECORDS[30:60])
    a.dbsync("export", "-q")
    a.git("add", "-A", "database_backup")
    a.git("commit", "-q", "-m", "a's snapshot, not pushed")


def swap_driver(repo: Repo, script: str) -> str:
    """Make git run ``script`` as the merge driver; returns the real driver's command."""
    real = repo.git("config", "--get", DRIVER_KEY).out.strip()
    path = repo.root.parent / "driver.sh"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    repo.git("config", DRIVER_KEY, f"{path} %O %A %B %P")
    return real


def start_sync(repo: Repo) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DBSYNC, "sync"],
        cwd=repo.root,
        env=repo.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a service's
    )


def git_dir(repo: Repo) -> Path:
    return repo.root / ".git"


def test_a_sync_killed_with_git_inside_the_merge_driver_is_reported_and_repaired(pair):
    a, b = pair
    diverged(a, b)
    real = swap_driver(a, "kill -KILL -$(ps -o pgid= $$ | tr -d ' ')\n")
    killed = start_sync(a)
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert (git_dir(a) / "index.lock").exists()  # git died holding it
    a.git("config", DRIVER_KEY, real)

    found = reasons(a)
    (lock,) = [r for r in found if "index.lock" in r["message"]]
    assert lock["level"] == "DEGRADED" and "dbsync sync" in lock["fix"]
    assert all("index.lock" in r["message"] or ".merge_file_" in r["message"] for r in found)

    repaired = a.dbsync("sync")
    assert "repair: removed .git/index.lock" in repaired.out
    assert "push: done" in repaired.out
    assert reasons(a) == [] and len(a.dump()) == 60


KILLED_BEFORE_ABORTING = """
import os, signal, sys
from dbsync.runs import git_state

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

git_state.abort_own_merge = die  # git stopped on a conflict; sync dies before it aborts
from dbsync.launch import main
sys.argv = ["dbsync", "sync"]
main()
"""


def test_a_merge_left_by_a_killed_sync_is_reported_and_aborted_by_the_next_sync(pair):
    """git stops the pull's merge on a conflict (the driver gives up) and the sync is killed
    before it can abort it: MERGE_HEAD stays, with nobody left to finish it."""
    a, b = pair
    diverged(a, b)
    real = swap_driver(a, "exit 1\n")
    killed = a.run([sys.executable, "-c", KILLED_BEFORE_ABORTING], ok=False)
    assert killed.code == -signal.SIGKILL, killed.output
    assert (git_dir(a) / "MERGE_HEAD").exists()
    a.git("config", DRIVER_KEY, real)

    found = reasons(a)
    assert [r["level"] for r in found] == ["DEGRADED"], found
    assert "killed in the middle of its git merge" in found[0]["message"]
    assert "it aborts that merge" in found[0]["fix"]

    repaired = a.dbsync("sync")
    assert "repair: aborted the merge a killed 'dbsync sync' had left" in repaired.out
    assert not (git_dir(a) / "MERGE_HEAD").exists() and reasons(a) == []
    assert len(a.dump()) == 60 and a.git("rev-parse", "origin/main").out.strip() == a.head()


def wait_until(condition, attempts: int = 2400) -> None:
    """Poll for an event another process makes happen (bounded by a count, not a clock)."""
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the awaited event never happened")


def test_a_merge_dbsync_did_not_start_is_left_to_the_user_with_the_fix(pair):
    a, b = pair
    for repo, text in ((b, "b's line\n"), (a, "a's line\n")):
        (repo.root / "NOTES.txt").write_text(text)
        repo.git("add", "NOTES.txt")
        repo.git("commit", "-q", "-m", "notes")
    b.git("push", "-q", "--no-verify")
    assert a.git("pull", "-q", "--no-rebase", ok=False).code != 0  # a conflict in NOTES.txt

    found = reasons(a)
    assert [r["level"] for r in found] == ["DEGRADED"], found
    assert "in the middle of a merge" in found[0]["message"]
    assert "git merge --abort" in found[0]["fix"]
    refused = a.dbsync("sync", ok=False)
    assert refused.code == 5, refused.output
    assert "dbsync did not start it" in refused.err and "git merge --abort" in refused.err
    assert (git_dir(a) / "MERGE_HEAD").exists()  # the user's merge is left as it was

    (a.root / "NOTES.txt").write_text("a's line\nb's line\n")  # the user finishes it
    a.git("add", "NOTES.txt")
    a.git("commit", "-q", "--no-edit")
    assert "push: done" in a.dbsync("sync").out


def test_status_names_a_fix_that_works_for_an_export_left_uncommitted(pair):
    """Status must not send the user into a wall: after 'dbsync export', a pull that brings
    snapshot changes stops on the uncommitted snapshot; sync commits it first."""
    a, b = pair
    b.import_records(RECORDS[:20])
    b.dbsync("sync", "-q")
    a.import_records(RECORDS[20:40])
    a.dbsync("export", "-q")

    found = reasons(a)
    assert [r["level"] for r in found] == ["WARNING"], found
    assert "not committed" in found[0]["message"] and "dbsync sync" in found[0]["fix"]
    assert a.git("pull", "-q", ok=False).code != 0  # the wall status warns of

    synced = a.dbsync("sync")
    assert "left uncommitted by an earlier export" in synced.out
    assert reasons(a) == [] and len(a.dump()) == 40


def test_a_snapshot_change_dbsync_did_not_write_is_not_committed_by_sync(pair):
    a, _ = pair
    snapshot = a.root / "database_backup" / "pnls.jsonl"
    a.import_records(RECORDS[:5])
    a.dbsync("sync", "-q")
    snapshot.write_text(snapshot.read_text().replace("@", "#", 1))
    fix = reasons(a)[0]["fix"]
    assert "git checkout -- database_backup" in fix and "commits this asset's" not in fix
    refused = a.dbsync("sync", ok=False)
    assert refused.code == 5 and "not what this asset exported" in refused.err
    assert a.git("status", "--porcelain").out.strip() == "M database_backup/pnls.jsonl"


KILLED_BEFORE_RECORDING = """
import os, signal, sys
from dbsync.runs import export

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

export.record_synced = die  # the new snapshot is in place; what it is, is not recorded yet
from dbsync.launch import main
sys.argv = ["dbsync", "export"]
main()
"""


def test_an_export_killed_before_it_recorded_its_snapshot_is_committed_by_sync(pair):
    a, b = pair
    a.import_records(RECORDS[:20])
    a.dbsync("sync", "-q")
    a.import_records(RECORDS[20:30])
    killed = a.run([sys.executable, "-c", KILLED_BEFORE_RECORDING], ok=False)
    assert killed.code == -signal.SIGKILL, killed.output
    assert a.git("status", "--porcelain").out.strip() == "M database_backup/pnls.jsonl"
    assert "dbsync sync" in reasons(a)[0]["fix"]

    synced = a.dbsync("sync")
    assert "repair: recorded the export a killed run had written" in synced.out
    b.dbsync("sync", "-q")
    assert len(b.dump()) == 30  # every record a exported reached b
