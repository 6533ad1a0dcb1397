"""The help and the README's command table, checked the way sqlite-utils checks its docs.

Fails when a command or option has no help, when help shows Python types (``<bool>``,
``<list[str]>``) instead of man-page metavars, or when the README's table and the CLI disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from dbsync.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
GLOBAL_OPTIONS = {
    "--uri",
    "--database",
    "--config",
    "--quiet",
    "-q",
    "--verbose",
    "-v",
    "--help",
    "-h",
}
ROOT_ONLY = {"--version", "--install-completion", "--show-completion"}
METAVAR = re.compile(r"[A-Z][A-Z_]*")
"""Placeholders as man pages write them: COLLECTION, PATH, FILE, ID, N..."""


def root() -> TyperGroup:
    command = typer.main.get_command(app)
    assert isinstance(command, TyperGroup)
    return command


def visible_commands(
    group: TyperGroup | None = None, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], typer.core.TyperCommand]]:
    group = group or root()
    context = typer.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        if command.hidden:
            continue
        yield (*prefix, name), command
        if isinstance(command, TyperGroup):
            yield from visible_commands(command, (*prefix, name))


COMMANDS = dict(visible_commands())
IDS = [" ".join(path) for path in COMMANDS]


def own_options(command: typer.core.TyperCommand) -> list[set[str]]:
    """Each option of the command itself (globals left out), as the set of its names."""
    found = []
    for parameter in command.params:
        if isinstance(parameter, TyperOption) and not parameter.hidden:
            names = set(parameter.opts) - GLOBAL_OPTIONS - ROOT_ONLY
            if names:
                found.append(names)
    return found


@pytest.mark.parametrize("path", COMMANDS, ids=IDS)
def test_every_command_has_a_sentence_of_help(path: tuple[str, ...]) -> None:
    command = COMMANDS[path]
    assert command.help, f"dbsync {' '.join(path)} has no help"
    first = command.help.strip().split("\n\n")[0]
    assert first.rstrip().endswith("."), f"dbsync {' '.join(path)}: {first!r}"


@pytest.mark.parametrize("path", COMMANDS, ids=IDS)
def test_every_parameter_has_a_sentence_of_help(path: tuple[str, ...]) -> None:
    for parameter in COMMANDS[path].params:
        if getattr(parameter, "hidden", False):
            continue
        text = getattr(parameter, "help", None)
        assert text, f"dbsync {' '.join(path)} {parameter.name}: no help"
        assert text[0].isupper() and text.rstrip().endswith("."), f"{parameter.name}: {text!r}"


@pytest.mark.parametrize("path", COMMANDS, ids=IDS)
def test_help_shows_metavars_not_python_types(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert not re.search(r"<(bool|str|int|path|list\[.*?\]|float)>", result.output), result.output
    assert "{" not in result.output.split("\n", 1)[0], result.output  # usage: FILE, not {FILE}
    for parameter in COMMANDS[path].params:
        if parameter.metavar is not None:
            assert METAVAR.fullmatch(parameter.metavar), f"{parameter.name}: {parameter.metavar}"


def readme_table() -> dict[tuple[str, ...], set[str]]:
    """The command table of "Using it": each `dbsync ...` cell → the options it names."""
    section = README.read_text().split("## Using it", 1)[1].split("\n## ", 1)[0]
    table: dict[tuple[str, ...], set[str]] = {}
    for row in section.splitlines():
        if not row.startswith("| `dbsync"):
            continue
        for usage in re.findall(r"`(dbsync [^`]+)`", row.split(" | ")[0]):
            words = usage.split()[1:]
            nested = len(words) > 1 and (words[0], words[1]) in COMMANDS
            path = tuple(words[:2]) if nested else (words[0],)
            table[path] = set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", usage))
    return table


def test_the_readme_table_lists_every_command_and_no_other() -> None:
    documented = set(readme_table())
    leaves = {path for path, command in COMMANDS.items() if not isinstance(command, TyperGroup)}
    assert leaves <= documented, f"in the CLI only: {leaves - documented}"
    assert documented <= set(COMMANDS), f"in README only: {documented - set(COMMANDS)}"


@pytest.mark.parametrize("path", sorted(readme_table()), ids=" ".join)
def test_the_readme_table_names_each_command_s_options(path: tuple[str, ...]) -> None:
    documented = readme_table()[path]
    options = own_options(COMMANDS[path])
    missing = [sorted(names) for names in options if not names & documented]
    unknown = documented - set().union(*options)
    assert not missing and not unknown, f"not in README: {missing}; not in the CLI: {unknown}"


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in result.output
    assert "--show-completion" in result.output
