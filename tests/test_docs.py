"""The help, the README's command table and the links of the docs, checked the way sqlite-utils
checks its docs.

Fails when a command or option has no help, when help shows Python types (``<bool>``,
``<list[str]>``) instead of man-page metavars, when the README's table and the CLI disagree, or
when a relative link in README.md or docs/ points to a file or a heading that is not there.
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
DOCS = README.parent / "docs"
README_MAX_LINES = 250
"""The README is a front door: the pitch, the quick start, "Using it", the table, links."""
FENCED = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
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


def prose(path: Path) -> str:
    """A markdown file without its code blocks: a ``# comment`` there is no heading."""
    return FENCED.sub("", path.read_text())


def anchors(path: Path) -> set[str]:
    """The ``#anchors`` of a markdown file's headings, made as GitHub makes them."""
    found: set[str] = set()
    for heading in HEADING.findall(prose(path)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in found:
            n += 1
            unique = f"{slug}-{n}"
        found.add(unique)
    return found


def relative_links(path: Path) -> list[str]:
    """Every link and image target of a markdown file that is not a URL."""
    targets = LINK.findall(CODE_SPAN.sub("", prose(path)))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        name, _, anchor = target.partition("#")
        file = (path.parent / name).resolve() if name else path
        if not file.is_file():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    return broken


MARKDOWN = [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("path", MARKDOWN, ids=[p.name for p in MARKDOWN])
def test_every_relative_link_points_to_a_file_and_a_heading_that_exist(path: Path) -> None:
    assert not broken_links(path), broken_links(path)


def test_the_link_check_sees_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Its `first` part, again\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n```bash\n# not a heading\n```\n\n"
        "[ok](other.md#its-first-part-again) [ok](#page) ![ok](other.md) [url](https://x.org/y)\n"
        "[gone](missing.md) [no heading](other.md#nope) [code block](#not-a-heading)\n"
        "`[in code](missing-too.md)`\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nope: no heading #nope in other.md",
        "#not-a-heading: no heading #not-a-heading in page.md",
    ]


def test_the_readme_is_a_front_door_that_links_into_the_docs() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    linked = {Path(t.partition("#")[0]).name for t in relative_links(README)}
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link: {pages - linked}"
