"""SIGKILL the agent, ``export`` and ``sync`` at many moments while the application writes: no
commit ever holds a file that is not a complete snapshot, and the next sync repairs whatever
git was left with (never "exit 6 for ever").

The moments are random (seeded), each run killed with its whole process group (git and the
hooks it runs die with it, as under a service manager) or alone (git goes on without it).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
from pathlib import Path

from bench.liveness import Plan, start_writer
from dbsync.edges.snapshot_files import verify_file
from tests.git_helpers import DBSYNC, Repo, real_records

RECORDS = real_records()
SNAPSHOT_FILE = re.compile(r"database_backup/[^./][^/]*\.jsonl")
KILLS = ["sync"] * 5 + ["export"] * 2 + ["agent"] * 2


def start(repo: Repo, what: str) -> subprocess.Popen[bytes]:
    args = {"agent": ["agent", "--every", "1s", "--port", "0"]}.get(what, [what])
    return subprocess.Popen(
        [DBSYNC, *args],
        cwd=repo.root,
        env=repo.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_at(process: subprocess.Popen[bytes], moment: float, whole_group: bool) -> None:
    """SIGKILL at ``moment`` seconds, unless the run ended before."""
    try:
        process.wait(timeout=moment)
        return
    except subprocess.TimeoutExpired:
        pass
    if whole_group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.wait()


def committed_files(repo: Path, env: dict[str, str]) -> dict[str, str]:
    """Every file under database_backup in every commit of ``repo``: path -> blob id."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
        ).stdout

    found = {}
    for commit in git("rev-list", "--all").split():
        for line in git("ls-tree", "-r", commit, "--", "database_backup").splitlines():
            meta, path = line.split("\t", 1)
            found[f"{commit[:10]}:{path}"] = meta.split()[2]
    return found


def not_complete_snapshots(repo: Path, env: dict[str, str], scratch: Path) -> list[str]:
    bad = []
    checked: dict[str, bool] = {}
    for where, blob in committed_files(repo, env).items():
        if not SNAPSHOT_FILE.fullmatch(where.split(":", 1)[1]):
            bad.append(f"{where}: not a snapshot file name")
            continue
        if blob not in checked:
            copy = scratch / f"{blob}.jsonl"
            data = subprocess.run(
                ["git", "cat-file", "blob", blob], cwd=repo, env=env, capture_output=True
            ).stdout
            copy.write_bytes(data)
            checked[blob] = verify_file(copy).ok
        if not checked[blob]:
            bad.append(f"{where}: not a complete snapshot")
    return bad


def test_killed_runs_never_commit_a_partial_file_and_the_next_sync_repairs(pair, tmp_path):
    a, b = pair
    a.import_records(RECORDS[:100])
    a.dbsync("sync", "-q")
    b.dbsync("sync", "-q")
    stop = tmp_path / "stop"
    writer = start_writer(a.root, Plan(write_pause=(0.01, 0.05)), stop, 0)
    rng = random.Random(25)
    kills = rng.sample(KILLS, len(KILLS))
    try:
        for number, what in enumerate(kills):
            if number % 4 == 0:  # another asset pushed meanwhile: a's sync has to merge
                b.import_records([{**RECORDS[100 + number], "_id": f"b-{number}"}])
                b.dbsync("sync", "-q")
            kill_at(start(a, what), rng.uniform(0.3, 3.0), whole_group=number % 2 == 0)
    finally:
        stop.touch()
        writer.wait(timeout=60)

    repaired = a.dbsync("sync", ok=False)
    assert repaired.code == 0, repaired.output
    b.dbsync("sync", "-q")
    assert a.snapshot() == b.snapshot()
    assert a.git("status", "--porcelain").out == ""
    scratch = tmp_path / "blobs"
    scratch.mkdir()
    for repo in (a.root, b.root, a.root.parent / "remote.git"):
        assert not_complete_snapshots(repo, a.env, scratch) == []
