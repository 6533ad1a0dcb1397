"""Progress bars, through the real console script: drawn on a terminal only (stderr a real
pseudo-terminal here), named after what runs; never in a pipe, under ``-q``, nor in what a git
hook prints. A merge shows its walk and its writes as export and import show theirs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.git_helpers import Repo, real_records
from tests.project import DBSYNC, Project, clean_env, write_json_lines

EDITED = 40


@dataclass
class Seen:
    code: int
    stdout: str
    terminal: str
    """What the terminal (stderr) received, control sequences included."""


def at_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> Seen:
    """Run ``args`` with stderr on a pseudo-terminal (stdout a pipe), as a user's shell does
    when the output is redirected or piped."""
    controller, terminal = os.openpty()
    received: list[bytes] = []

    def drain() -> None:  # the terminal's buffer is small: read it while the command runs
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the command closed the terminal
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env={**env, "TERM": "xterm-256color", "COLUMNS": "160"},
            stdout=subprocess.PIPE,
            stderr=terminal,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    finally:
        os.close(terminal)
        reader.join(timeout=30)
        os.close(controller)
    return Seen(done.returncode, done.stdout.decode(), b"".join(received).decode(errors="replace"))


def other_asset(project: Project, tmp_path: Path) -> Path:
    """The snapshot folder of another asset holding the project's records, ``EDITED`` of
    them newer and edited, and 5 of its own."""
    other = Project(tmp_path / "other")
    shutil.copytree(project.root, other.root)
    records = real_records()
    edited = [
        {**record, "username": "@elsewhere", "timestamp": "2026-01-01T00:00:00"}
        for record in records[:EDITED]
    ]
    extra = [{"_id": f"new-{n}", "username": "@new"} for n in range(5)]
    source = write_json_lines(other.root / "newer.json", [*edited, *extra])
    other.run("import", str(source), "-c", "pnl", "--mode", "upsert")
    other.run("export")
    return other.snapshots


def test_a_merge_at_a_terminal_shows_its_walk_and_its_writes(
    pnl_project: Project, tmp_path: Path
) -> None:
    theirs = other_asset(pnl_project, tmp_path)
    seen = at_a_terminal([DBSYNC, "merge", str(theirs)], pnl_project.root, clean_env())
    assert seen.code == 0, seen
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.terminal)  # the text, not its colours
    walked = re.findall(r"merge pnl [━ ]*(\d+)/(\d+)", shown)
    assert walked[-1] == (str(EDITED + 5),) * 2, shown  # every changed record walked
    written = re.findall(r"merge pnl: write [━ ]*(\d+)/(\d+)", shown)
    assert written and written[-1][0] == written[-1][1] != "0", shown  # every write made


def test_a_merge_shows_no_progress_in_a_pipe_nor_quiet(
    pnl_project: Project, tmp_path: Path
) -> None:
    theirs = other_asset(pnl_project, tmp_path)
    piped = pnl_project.run("merge", str(theirs), "--dry-run")
    assert "merge pnl" not in piped.stdout + piped.stderr, piped
    quiet = at_a_terminal([DBSYNC, "-q", "merge", str(theirs)], pnl_project.root, clean_env())
    assert quiet.code == 0, quiet
    assert "merge pnl" not in quiet.terminal, quiet.terminal


def test_the_hook_s_merge_shows_no_progress_at_a_terminal(pair: tuple[Repo, Repo]) -> None:
    a, b = pair
    a.import_records(real_records()[:60])
    a.push_snapshot()
    seen = at_a_terminal(["git", "pull"], b.root, b.env)
    assert seen.code == 0, seen
    assert "merged database_backup into the database" in seen.terminal, seen.terminal
    assert "merge pnls" not in seen.terminal, seen.terminal
    assert len(b.dump()) == 60
