"""The CLI's face: global options declared once, typer left unpatched, ``conflicts`` as real
sub-commands, and a bug's traceback written to a log file the message names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer.main
from typer.core import TyperArgument, TyperGroup, TyperOption

import dbsync.cli
from tests.cli_helpers import DBSYNC, Project, new_project

GLOBALS = ("--uri", "--database", "--config", "--quiet", "--verbose")


def _options(command: typer.core.TyperCommand) -> dict[str, str | None]:
    return {
        option.opts[0] if option.opts[0].startswith("--") else option.opts[-1]: option.help
        for option in command.params
        if isinstance(option, TyperOption)
    }


def _commands(group: TyperGroup, prefix: str = "") -> dict[str, typer.core.TyperCommand]:
    found: dict[str, typer.core.TyperCommand] = {}
    context = typer.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        found[prefix + name] = command
        if isinstance(command, TyperGroup):
            found.update(_commands(command, f"{prefix}{name} "))
    return found


def test_every_command_takes_the_global_options_with_the_root_s_help() -> None:
    root = typer.main.get_command(dbsync.cli.app)
    assert isinstance(root, TyperGroup)
    expected = {name: help for name, help in _options(root).items() if name in GLOBALS}
    assert sorted(expected) == sorted(GLOBALS)
    for path, command in _commands(root).items():
        if isinstance(command, TyperGroup) and not command.invoke_without_command:
            continue  # a group that only routes (hooks): its commands carry the options
        given = {name: help for name, help in _options(command).items() if name in GLOBALS}
        assert given == expected, f"dbsync {path}"


def test_typer_s_own_classes_are_left_as_they_are() -> None:
    for cls, method in (
        (TyperArgument, "display_type_rich"),
        (TyperArgument, "_usage_display_name"),
        (TyperOption, "display_type_rich"),
    ):
        function = getattr(cls, method, None)
        if function is not None:
            assert function.__module__ == "typer.core", f"{cls.__name__}.{method} is patched"


def test_conflicts_show_and_restore_are_sub_commands_with_their_own_help(tmp_path: Path) -> None:
    project = Project(tmp_path)
    show = project.run("conflicts", "show", "--help")
    assert show.code == 0, show.output
    assert show.out.startswith("Usage: dbsync conflicts show [OPTIONS] ID")
    assert "against the version that won" in show.out and "--since" not in show.out
    restore = project.run("conflicts", "restore", "--help")
    assert restore.out.startswith("Usage: dbsync conflicts restore [OPTIONS] ID")
    assert "timestamp set to now" in restore.out
    listing = project.run("conflicts", "--help")
    assert "--since DATE" in listing.out and "show" in listing.out and "restore" in listing.out


def test_a_wrong_conflicts_action_names_it_and_exits_2(tmp_path: Path) -> None:
    wrong = Project(tmp_path).run("conflicts", "bogus")
    assert wrong.code == 2
    assert "No such command 'bogus'" in wrong.err and "Value error" not in wrong.err
    missing = Project(tmp_path).run("conflicts", "restore")
    assert missing.code == 2 and "Missing argument 'ID'" in missing.err


BUGGY_STATS = """
import sys
from dbsync import cli
from dbsync.runs import stats

def broken(configuration, store):
    raise RuntimeError("a bug, near mongodb://dbsync:s3cret@127.0.0.1:9/")

stats.collection_stats = broken  # a bug in a service, as a user would meet one
sys.argv = ["dbsync", *sys.argv[1:]]
cli.main()
"""


def run_buggy_stats(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``main`` in a real process, one service replaced by a failing one."""
    env = {"PATH": str(Path(DBSYNC).parent), "DBSYNC_URI": "mongodb://dbsync:s3cret@127.0.0.1:9/"}
    return subprocess.run(
        [sys.executable, "-c", BUGGY_STATS, "stats", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bug_exits_1_and_writes_its_traceback_to_the_project_s_log(tmp_path: Path) -> None:
    project = new_project(tmp_path / "p")
    done = run_buggy_stats(project.root)
    log = project.root / "database_sync" / "dbsync.log"
    assert done.returncode == 1, done.stderr
    assert "unexpected error: RuntimeError: a bug" in done.stderr
    assert f"its traceback is in {log}" in done.stderr
    assert "Traceback" not in done.stderr  # the log holds it; -v prints it too
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert "command: " in text and " stats" in text
    assert "s3cret" not in text + done.stderr  # the URI's password is scrubbed everywhere
    again = run_buggy_stats(project.root, "-v")
    assert "Traceback (most recent call last)" in again.stderr
    assert log.read_text().count("Traceback (most recent call last)") == 2  # appended


BUGGY_HOOK = """
import sys
from dbsync import launch
from dbsync.integration import hook_runs

def broken(name, args, stdin, configuration):
    raise RuntimeError("a bug in a hook, near mongodb://dbsync:s3cret@127.0.0.1:9/")

hook_runs.run_hook = broken
sys.argv = ["dbsync", "hook", "post-merge", "0"]
launch.main()
"""


def test_a_bug_in_a_call_git_makes_is_reported_as_through_the_cli(tmp_path: Path) -> None:
    """``dbsync hook`` and ``merge-driver`` skip the CLI's parsing (``launch``): a bug there
    still exits 1 with its traceback in the project's log, the password scrubbed."""
    project = new_project(tmp_path / "p")
    env = {"PATH": str(Path(DBSYNC).parent), "DBSYNC_URI": "mongodb://dbsync:s3cret@127.0.0.1:9/"}
    done = subprocess.run(
        [sys.executable, "-c", BUGGY_HOOK],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = project.root / "database_sync" / "dbsync.log"
    assert done.returncode == 1, done.stderr
    assert "unexpected error: RuntimeError: a bug in a hook" in done.stderr
    assert f"its traceback is in {log}" in done.stderr
    text = log.read_text()
    assert "in broken" in text and " hook post-merge 0" in text
    assert "s3cret" not in text + done.stderr


def test_a_bug_outside_a_project_writes_a_temporary_log_and_names_it(tmp_path: Path) -> None:
    done = run_buggy_stats(tmp_path, "--database", "shop")
    assert done.returncode == 1, done.stderr
    named = done.stderr.split("its traceback is in ", 1)[1].split(";", 1)[0]
    log = Path(named)
    try:
        assert log.name.startswith("dbsync-bug-") and log.parent != tmp_path
        assert "RuntimeError: a bug" in log.read_text()
    finally:
        log.unlink(missing_ok=True)
    assert not (tmp_path / "database_sync").exists()


def test_a_config_file_that_is_not_utf8_is_invalid_input_not_a_bug(tmp_path: Path) -> None:
    project = new_project(tmp_path / "p")
    (project.root / "dbsync.toml").write_bytes(b'database = "caf\xe9"\n')  # Latin-1, not UTF-8
    result = project.run("stats")
    assert result.code == 4, result.output
    assert "dbsync.toml: not valid TOML" in result.err and "unexpected error" not in result.err
    assert not (project.root / "database_sync" / "dbsync.log").exists()
