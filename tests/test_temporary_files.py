"""Temporary files never enter git, and what killed runs leave is removed once they are gone.

Real SIGKILLs at exact points: the real CLI runs through a wrapper that makes one internal
function kill its own process (as ``tests/test_crash.py`` does); dbsync has no test hooks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from dbsync.edges.files import remove_stale_scratch_folders, stale_scratch_folders, writer_pid
from tests.git_helpers import Repo, real_records

RECORDS = real_records()
KILL_AT = """
import os, signal, sys
from dbsync.core import snapshot
from dbsync.runs import merge

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

calls = []
def add_then_die(self, *args):  # the export dies half way through writing its snapshot
    calls.append(1)
    if len(calls) > 20:
        die()
    return real_add(self, *args)

real_add = snapshot.Digest.add
if sys.argv[1] == "export-mid-write":
    snapshot.Digest.add = add_then_die
else:
    merge._apply_all = die  # the merge's scratch folder holds its plan
from dbsync.launch import main
sys.argv = ["dbsync", *sys.argv[2:]]
main()
"""


def killed(repo: Repo, point: str, *args: str, **env: str) -> None:
    done = repo.run([sys.executable, "-c", KILL_AT, point, *args], ok=False, **env)
    assert done.code == -signal.SIGKILL, done.output


def test_a_killed_export_leaves_nothing_git_would_commit(pair):
    a, b = pair
    a.import_records(RECORDS[:60])
    killed(a, "export-mid-write", "export")
    (left,) = (a.root / "database_sync" / "tmp").glob(".pnls.jsonl.*.tmp")
    assert writer_pid(left.name) is not None  # named after the killed process
    assert a.git("status", "--porcelain", "--untracked-files=all").out == ""
    assert "push: done" in a.dbsync("sync").out
    committed = a.git("ls-tree", "-r", "--name-only", "HEAD", "database_backup").out.split()
    assert committed == ["database_backup/pnls.jsonl"]
    removed = a.dbsync("prune", "--json").out
    assert ".pnls.jsonl." in removed and not left.exists()


def test_a_killed_merges_scratch_folder_goes_with_the_next_merge(pair, tmp_path):
    a, b = pair
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    b.import_records(RECORDS[:40])
    b.dbsync("sync", "-q")
    a.git("fetch", "-q")
    a.git("checkout", "-q", "origin/main", "--", "database_backup")
    killed(a, "merge", "merge", "database_backup", TMPDIR=str(scratch))
    (left,) = scratch.glob("dbsync-merge-*")
    assert left.is_dir()
    a.run(["dbsync", "merge", "database_backup", "-q"], TMPDIR=str(scratch))
    assert list(scratch.iterdir()) == []


def test_only_the_scratch_folders_of_gone_processes_are_stale(tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = int(gone.stdout)
    folders = {
        "dead": tmp_path / f"dbsync-merge-{dead}-abc123",
        "alive": tmp_path / f"dbsync-merge-{os.getppid()}-def456",
        "mine": tmp_path / f"dbsync-bring-back-{os.getpid()}-x_y",
        "older": tmp_path / "dbsync-merge-q1w2e3r4",  # no pid: not known to be stale
        "other": tmp_path / f"someone-else-{dead}-abc",
    }
    for folder in folders.values():
        folder.mkdir()
    assert stale_scratch_folders(tmp_path) == [folders["dead"]]
    assert remove_stale_scratch_folders(tmp_path) == [folders["dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f.name for k, f in folders.items() if k != "dead"
    )


def test_a_temporary_file_is_named_after_its_writer():
    assert writer_pid(".pnls.jsonl.4242.k3j_x9z1.tmp") == 4242
    assert writer_pid(".pnls.part-03-of-16.jsonl.77.abcdefgh.tmp") == 77
    assert writer_pid(".pnls.jsonl.x1y2z3.tmp") is None  # an older dbsync's: no writer known
    assert writer_pid("pnls.jsonl") is None


def test_a_write_inside_a_project_stages_outside_the_snapshot_folder(tmp_path):
    from dbsync.edges.files import atomic_writer, temporary_folder

    (tmp_path / "dbsync.toml").write_text('database = "x"\n')
    target = tmp_path / "database_backup" / "pnls.jsonl"
    assert temporary_folder(target) == tmp_path / "database_sync" / "tmp"
    with atomic_writer(target) as handle:
        handle.write(b"data")
        staged = list((tmp_path / "database_sync" / "tmp").iterdir())
        assert len(staged) == 1 and list(target.parent.iterdir()) == []
    assert target.read_bytes() == b"data"
    outside = Path("/") / "nonexistent-project" / "x.jsonl"
    assert temporary_folder(outside) == outside.parent
