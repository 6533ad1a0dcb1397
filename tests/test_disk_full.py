"""A full disk is an expected failure (issue 22, item 10): exit 5 with its own message (what
was written, what was not, how much space is needed), nothing half-written, and a status that
says it until a run of the same kind succeeds.

The disk is a real one, and really full: a tmpfs of a few megabytes, mounted in a user and mount
namespace (``unshare --user --map-root-user --mount``, which needs no root where the kernel
allows unprivileged user namespaces), holding a copy of the project, filled with a file until
the kernel says ENOSPC and then given back a little. Nothing in dbsync knows it is tested: the
errors are the kernel's. The test is skipped where such a namespace cannot be made.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from project import DBSYNC, Project, clean_env, write_json_lines

from tests.cli_helpers import DATA

FREE = "1M"
"""What the full disk gives back before dbsync runs: room for its state, not for a snapshot."""

FULL_DISK = r"""
set -u
mount -t tmpfs -o size=64m tmpfs "$DISK" || exit 97
cp -a "$PROJECT/." "$DISK/"
cd "$DISK"
run() {
    name=$1; shift
    "$DBSYNC" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; echo $? >"$OUT/$name.code"
}
dd if=/dev/zero of=filler bs=4096 2>/dev/null   # until the kernel says: no space left
[ "$FREE" = 0 ] || truncate -s -$FREE filler
cp database_backup/pnl.jsonl "$OUT/before.jsonl"
"""

SCRIPT = (
    FULL_DISK
    + r"""
run export export
cp database_backup/pnl.jsonl "$OUT/after.jsonl"
ls -a database_backup >"$OUT/listing"
run import import "$EDITS" -c pnl --mode upsert
run status status --json
run history history --json
rm filler
run again export
run healthy status --json
"""
)


def namespaces_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "mount",
        "-t",
        "tmpfs",
        "tmpfs",
        "/mnt",
    ]
    return subprocess.run(probe, capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    not namespaces_allowed(), reason="no user and mount namespaces here: no tiny disk to fill"
)


def on_a_full_disk(
    project: Project, edits: Path, out: Path, script: str = SCRIPT, free: str = FREE
) -> dict[str, str]:
    """Run ``script``; every command's output, error and exit code, by name."""
    disk = project.root.parent / "disk"
    disk.mkdir()
    out.mkdir()
    env = clean_env(
        DISK=str(disk),
        PROJECT=str(project.root),
        OUT=str(out),
        DBSYNC=DBSYNC,
        FREE=free,
        EDITS=str(edits),
    )
    command = ["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return {path.name: path.read_text() for path in out.iterdir() if path.is_file()}


@pytest.fixture
def big_project(pnl_project: Project, tmp_path: Path) -> tuple[Project, Path]:
    """The PNL project with every record grown to about 16 KB and changed since its export
    (so that an export has a 3 MB snapshot to write), and a file of edits to import."""
    records = json.loads(DATA.read_text())

    def upsert(letter: str, size: int) -> Path:
        notes = [{**record, "note": letter * size} for record in records]
        path = write_json_lines(tmp_path / f"{letter}.json", notes)
        pnl_project.run("import", str(path), "-c", "pnl", "--mode", "upsert")
        return path

    upsert("n", 16000)
    pnl_project.run("export")
    upsert("e", 16000)
    more = [{**record, "note": "m" * 32000} for record in records]
    return pnl_project, write_json_lines(tmp_path / "more.json", more)


def test_an_export_on_a_full_disk_says_so_writes_nothing_and_status_says_it(
    big_project: tuple[Project, Path], tmp_path: Path
) -> None:
    project, edits = big_project
    seen = on_a_full_disk(project, edits, tmp_path / "out")

    assert seen["export.code"].strip() == "5", seen["export.err"]
    said = seen["export.err"]
    assert "the disk is full" in said and "unexpected error" not in said
    assert "the snapshot files are as they were" in said  # what was (not) written
    assert "free" in said and "KiB" in said  # how much there is, and is needed
    assert seen["after.jsonl"] == seen["before.jsonl"]  # nothing half-written
    assert seen["listing"].split() == [".", "..", "pnl.jsonl"]  # no temporary file left

    assert seen["import.code"].strip() == "5", seen["import.err"]
    assert "the disk is full" in seen["import.err"]
    assert "cannot be read" not in seen["import.err"]  # not a damaged store: a full one

    status = json.loads(seen["status.out"])
    reasons = [r for r in status["reasons"] if r["check"] == "disk"]
    assert status["status"] == "DEGRADED", status
    assert sorted(r["message"].split()[1] for r in reasons) == ["export", "import"], reasons
    assert all("free" in r["fix"] and r["level"] == "DEGRADED" for r in reasons)
    history = json.loads(seen["history.out"])
    assert [row["status"] for row in history if row["operation"] == "export"][0] == "no space"
    assert not [row for row in history if row["status"] == "interrupted"]

    assert seen["again.code"].strip() == "0", seen["again.err"]  # space freed: it works
    healthy = json.loads(seen["healthy.out"])
    assert [r["message"].split()[1] for r in healthy["reasons"] if r["check"] == "disk"] == [
        "import"
    ]


NO_ROOM_AT_ALL = (
    FULL_DISK
    + r"""
run export export
cp database_backup/pnl.jsonl "$OUT/after.jsonl"
run status status --json
"""
)


def test_a_disk_with_no_room_at_all_is_still_a_full_disk_not_a_bug(
    big_project: tuple[Project, Path], tmp_path: Path
) -> None:
    """Not a byte free: SQLite cannot even grow its shared-memory file, and says "disk I/O
    error"; the state cannot record the run. Still exit 5, and status says the disk is full."""
    project, edits = big_project
    seen = on_a_full_disk(project, edits, tmp_path / "out", NO_ROOM_AT_ALL, free="0")
    assert seen["export.code"].strip() == "5", seen["export.err"]
    assert "the disk is full" in seen["export.err"]
    assert (
        "unexpected error" not in seen["export.err"] and "cannot be read" not in seen["export.err"]
    )
    assert seen["after.jsonl"] == seen["before.jsonl"]
    assert seen["status.code"].strip() in "012", seen["status.err"]
    status = json.loads(seen["status.out"])
    assert [reason["check"] for reason in status["reasons"] if reason["check"] == "space"]
    assert not [reason for reason in status["reasons"] if "killed" in reason["message"]]
    assert not [reason for reason in status["reasons"] if "move it away" in reason["fix"]]
