import json
import os
import signal
import subprocess
import sys

import pytest
from project import DBSYNC, clean_env

from dbsync.edges.lock import POLL_SECONDS, TOKEN_VARIABLE, lock_path, read_holder, run_lock
from dbsync.errors import SafetyRefusal

HOLDER = """
import subprocess, sys, time
from pathlib import Path
from dbsync.edges.lock import run_lock
with run_lock(Path(sys.argv[1]), "merge database_backup"):
    print("ready", flush=True)
    if len(sys.argv) > 2:
        result = subprocess.run(sys.argv[2:], capture_output=True, text=True)
        print(result.returncode, result.stderr.replace("\\n", " "), flush=True)
    else:
        time.sleep(60)
"""


def start_holder(project, *child):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(project.state), *child],
        cwd=project.root,
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "ready\n"
    return holder


@pytest.fixture
def holder(pnl_project):
    process = start_holder(pnl_project)
    yield process
    process.kill()
    process.wait()


# ------------------------------------------------------------- in process


def test_the_lock_file_names_the_holder_and_is_cleared_on_release(tmp_path):
    environ = {}
    with run_lock(tmp_path, "export", environ=environ) as holder:
        on_disk = read_holder(tmp_path / "dbsync.lock")  # the file docs/status.md names
        assert on_disk == holder and lock_path(tmp_path) == tmp_path / "dbsync.lock"
        assert (holder.pid, holder.command) == (os.getpid(), "export")
        assert environ[TOKEN_VARIABLE] == holder.token
    assert environ == {}
    assert read_holder(lock_path(tmp_path)) is None


class FakeClock:
    """Time that passes only when the lock sleeps between two attempts."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_second_holder_gives_up_after_the_timeout_naming_the_first(tmp_path):
    clock = FakeClock()
    with run_lock(tmp_path, "merge x", environ={}) as first:
        with pytest.raises(SafetyRefusal) as refused:
            with run_lock(
                tmp_path, "export", timeout=0.3, environ={}, clock=clock, sleep=clock.sleep
            ):
                pass
    assert clock.sleeps == [POLL_SECONDS] * 6  # tried every poll until 0.3 s had passed
    assert clock.now == pytest.approx(0.3)
    assert refused.value.exit_code == 5
    assert f"pid {first.pid}" in refused.value.message and "dbsync merge x" in refused.value.message
    assert "waited 0.3 s" in refused.value.message
    assert f"kill {first.pid}" in refused.value.hint


def test_a_free_lock_is_taken_at_the_first_attempt(tmp_path):
    clock = FakeClock()
    with run_lock(tmp_path, "export", timeout=0, environ={}, clock=clock, sleep=clock.sleep):
        assert clock.sleeps == []


def test_a_run_carrying_the_holders_token_goes_on_without_the_lock(tmp_path):
    environ = {}
    with run_lock(tmp_path, "merge", environ=environ) as outer:
        with run_lock(tmp_path, "export", timeout=0, environ=dict(environ)) as inner:
            assert inner is None
        with pytest.raises(SafetyRefusal):
            with run_lock(tmp_path, "export", timeout=0, environ={TOKEN_VARIABLE: "forged"}):
                pass
        assert read_holder(lock_path(tmp_path)) == outer


# ------------------------------------------------------------- real processes


def test_a_second_dbsync_waits_then_exits_5_naming_the_holder(pnl_project, holder):
    result = pnl_project.run("export", expect=5, env=clean_env(DBSYNC_LOCK_TIMEOUT="1"))
    assert "waited 1 s" in result.stderr
    assert f"pid {holder.pid}" in result.stderr
    assert "dbsync merge database_backup" in result.stderr
    assert "wait for it to finish" in result.stderr
    assert pnl_project.history() == []  # refused before it started: nothing else happened


def test_the_lock_is_free_as_soon_as_the_holder_is_killed(pnl_project, holder):
    at_once = clean_env(DBSYNC_LOCK_TIMEOUT="0")
    refused = pnl_project.run("export", expect=5, env=at_once)  # held: the holder is alive
    assert f"pid {holder.pid}" in refused.stderr
    holder.send_signal(signal.SIGKILL)
    assert holder.wait() == -signal.SIGKILL
    pnl_project.run("export", env=at_once)  # free at the first try, no file to clean up
    (exported,) = pnl_project.history()
    assert (exported["operation"], exported["status"]) == ("export", "success")
    assert read_holder(lock_path(pnl_project.state)) is None  # released by the export itself


def test_a_dbsync_started_by_the_holder_does_not_deadlock(pnl_project):
    nested = start_holder(pnl_project, DBSYNC, "export")
    output, _ = nested.communicate(timeout=60)
    assert output.startswith("0 "), output
    assert pnl_project.history()[0]["status"] == "success"


def test_a_config_file_sets_the_lock_timeout(pnl_project, holder):
    with (pnl_project.root / "dbsync.toml").open("a") as config:
        config.write("lock_timeout = 0\n")
    result = pnl_project.run("export", expect=5)
    assert "waited 0 s" in result.stderr  # not the default 10 s


@pytest.mark.parametrize(
    "args",
    [
        ("import", "pnl.json", "-c", "other"),
        ("merge", "database_backup"),
        ("restore", "any-id"),
    ],
)
def test_commands_that_change_things_take_the_lock(pnl_project, holder, args):
    result = pnl_project.run(*args, expect=5, env=clean_env(DBSYNC_LOCK_TIMEOUT="0"))
    assert f"pid {holder.pid}" in result.stderr


def test_read_only_commands_do_not_wait_for_the_lock(pnl_project, holder):
    env = clean_env(DBSYNC_LOCK_TIMEOUT="0")
    for args in (
        ("status",),
        ("stats", "--json"),
        ("history",),
        ("dump", "pnl"),
        ("verify", "database_backup"),
        ("backups",),
        ("diff", "database_backup", "db"),
    ):
        pnl_project.run(*args, env=env)
    assert json.loads(lock_path(pnl_project.state).read_text())["pid"] == holder.pid
