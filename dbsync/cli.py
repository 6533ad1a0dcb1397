"""The ``dbsync`` command line: options, help, output and exit codes — nothing else.

Each command reads its options, calls one service in ``dbsync.runs``, and renders the
result. Errors are ``DbsyncError`` subclasses, turned into exit codes in ``main`` only.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from dbsync import __version__
from dbsync.errors import INTERRUPTED_EXIT_CODE, INTERRUPTED_MESSAGE, DbsyncError, InvalidInput
from dbsync.progress import NoProgress, Progress

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress

    from dbsync import completion as completion_service
    from dbsync import crash_log, render
    from dbsync.agent import api as agent_api
    from dbsync.agent import schedule as agent_service
    from dbsync.config import Config
    from dbsync.core.report import MergeReport
    from dbsync.edges import backups as backups_store
    from dbsync.edges import git
    from dbsync.edges import installer as hooks_service
    from dbsync.edges import state as state_store
    from dbsync.edges.state import HistoryEntry
    from dbsync.edges.store import Store
    from dbsync.integration import diff_driver as diff_driver_service
    from dbsync.integration import hook_runs as hook_service
    from dbsync.integration import merge_driver as merge_driver_service
    from dbsync.runs import bring_back as bring_back_service
    from dbsync.runs import common as common_service
    from dbsync.runs import conflicts as conflicts_service
    from dbsync.runs import demo as demo_service
    from dbsync.runs import diff as diff_service
    from dbsync.runs import dump as dump_service
    from dbsync.runs import export as export_service
    from dbsync.runs import import_file as import_service
    from dbsync.runs import init as init_service
    from dbsync.runs import log as log_service
    from dbsync.runs import merge as merge_service
    from dbsync.runs import pipeline as pipeline_service
    from dbsync.runs import publish as publish_service
    from dbsync.runs import recording as recording_service
    from dbsync.runs import restore as restore_service
    from dbsync.runs import stats as stats_service
    from dbsync.runs import status as status_service
    from dbsync.runs import sync as sync_service
    from dbsync.runs import verify as verify_service
else:

    class _Later:
        """A module imported when a command first uses it: every git hook and driver starts
        the CLI, which so imports only what the command it runs needs."""

        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attribute: str) -> Any:
            return getattr(importlib.import_module(self._name), attribute)

    completion_service = _Later("dbsync.completion")
    crash_log = _Later("dbsync.crash_log")
    render = _Later("dbsync.render")
    agent_api = _Later("dbsync.agent.api")
    agent_service = _Later("dbsync.agent.schedule")
    backups_store = _Later("dbsync.edges.backups")
    git = _Later("dbsync.edges.git")
    state_store = _Later("dbsync.edges.state")
    diff_driver_service = _Later("dbsync.integration.diff_driver")
    hook_service = _Later("dbsync.integration.hook_runs")
    merge_driver_service = _Later("dbsync.integration.merge_driver")
    hooks_service = _Later("dbsync.edges.installer")
    bring_back_service = _Later("dbsync.runs.bring_back")
    common_service = _Later("dbsync.runs.common")
    conflicts_service = _Later("dbsync.runs.conflicts")
    demo_service = _Later("dbsync.runs.demo")
    diff_service = _Later("dbsync.runs.diff")
    dump_service = _Later("dbsync.runs.dump")
    export_service = _Later("dbsync.runs.export")
    import_service = _Later("dbsync.runs.import_file")
    init_service = _Later("dbsync.runs.init")
    log_service = _Later("dbsync.runs.log")
    merge_service = _Later("dbsync.runs.merge")
    pipeline_service = _Later("dbsync.runs.pipeline")
    publish_service = _Later("dbsync.runs.publish")
    recording_service = _Later("dbsync.runs.recording")
    restore_service = _Later("dbsync.runs.restore")
    stats_service = _Later("dbsync.runs.stats")
    status_service = _Later("dbsync.runs.status")
    sync_service = _Later("dbsync.runs.sync")
    verify_service = _Later("dbsync.runs.verify")

# ---------------------------------------------------------------- help that reads like a man page


def _argument_name(argument: TyperArgument) -> str:
    """Its metavar, else its name in capitals, as a man page writes a placeholder."""
    return argument.metavar or (argument.name or "value").upper()


def _usage_name(argument: TyperArgument) -> str:
    """``FILE`` when required, ``[FILE]`` when not: typer writes ``{FILE}`` for the first."""
    name = _argument_name(argument)
    name = name if argument.required else f"[{name}]"
    return name + ("..." if argument.nargs != 1 else "")


class ManPageCommand(TyperCommand):
    """A command whose help reads like a man page: ``FILE`` and ``[FILE]`` in the usage line,
    ``--limit LIMIT`` for an option, no Python type anywhere (typer >= 0.2x draws ``<int>``,
    ``<list[str]>``, ``{FILE}``). Only the formatting hooks every command class has are
    overridden; typer's own classes are left as they are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for parameter in self.params:  # an option without a metavar shows its name, not <int>
            if isinstance(parameter, TyperOption) and not (parameter.is_flag or parameter.count):
                parameter.metavar = parameter.metavar or (parameter.name or "value").upper()

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        arguments = (p for p in self.get_params(ctx) if isinstance(p, TyperArgument))
        return pieces + [_usage_name(argument) for argument in arguments]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """Arguments by their metavar alone (the metavar says what one is), then options."""
        arguments, options = [], []
        for parameter in self.get_params(ctx):
            record = parameter.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(parameter, TyperArgument):
                arguments.append((_argument_name(parameter), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


HELP_SETTINGS: dict[str, Any] = {
    "no_args_is_help": True,
    "rich_markup_mode": None,
    "pretty_exceptions_enable": False,
    "context_settings": {"help_option_names": ["-h", "--help"], "max_content_width": 100},
}

app = typer.Typer(
    name="dbsync",
    help="Keep the MongoDB databases of several machines identical through an ordinary git remote.",
    add_completion=True,
    **HELP_SETTINGS,
)


class _Console:
    """A rich ``Console`` made when first used: rich is imported only by a command that prints."""

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._console: Console | None = None

    def _made(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=True, **self._settings)
        return self._console

    def print(self, *objects: Any, **settings: Any) -> None:
        self._made().print(*objects, **settings)

    @property
    def is_terminal(self) -> bool:
        return self._made().is_terminal

    @property
    def console(self) -> Console:
        return self._made()


out = _Console()
err = _Console(stderr=True)


# ---------------------------------------------------------------- global options

UriOption = Annotated[
    str | None,
    typer.Option(
        "--uri",
        metavar="URI",
        help="The database: mongodb://, mongodb+srv:// or embedded://PATH. "
        "Overrides DBSYNC_URI and the config files.",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        metavar="NAME",
        help="The database name. Overrides DBSYNC_DATABASE and the config files.",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="The dbsync.toml to use (default: the nearest one upwards).",
    ),
]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and JSON.")]
VerboseFlag = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Print more, with the traceback of a bug on stderr."),
]
"""The global options, declared once: ``main_callback`` takes them before the command, and
``command`` gives every command the same ones, so that they are accepted after it too."""


@dataclass(frozen=True)
class GlobalOptions:
    uri: str | None = None
    database: str | None = None
    config: Path | None = None
    quiet: bool = False
    verbose: bool = False


_GLOBAL_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=option)
    for name, option, default in (
        ("uri", UriOption, None),
        ("database", DatabaseOption, None),
        ("config", ConfigOption, None),
        ("quiet", QuietFlag, False),
        ("verbose", VerboseFlag, False),
    )
]
_GLOBAL_NAMES = [parameter.name for parameter in _GLOBAL_PARAMETERS]

F = TypeVar("F", bound=Callable[..., Any])


def _merged_options(context: typer.Context, given: dict[str, Any]) -> GlobalOptions:
    """Options given after the subcommand win over the same options given before it."""
    parent = context.find_object(GlobalOptions) or GlobalOptions()
    changes = {k: v for k, v in given.items() if v not in (None, False)}
    return replace(parent, **changes)


def report_error(error: DbsyncError) -> None:
    """The one place where an expected error becomes a message and an exit code."""
    err.print(f"error: {error.message}", markup=False)
    if error.hint:
        err.print(f"hint: {error.hint}", markup=False)
    raise typer.Exit(error.exit_code)


def report_interrupt() -> None:
    """Ctrl-C: every write dbsync makes is atomic (a temporary file renamed into place) and every
    merge rolls back, so stopping leaves nothing half-written; say so and exit 130."""
    err.print(INTERRUPTED_MESSAGE, markup=False)
    raise typer.Exit(INTERRUPTED_EXIT_CODE)


def _project_root() -> Path | None:
    given = options().config
    if given is not None and given.is_file():
        return given.resolve().parent
    from dbsync.config import find_root

    return find_root(Path.cwd())


def _uris_in_use() -> list[str]:
    """The URIs whose passwords must not reach a log: given, in the environment, configured."""
    uris = [options().uri or "", os.environ.get("DBSYNC_URI", "")]
    try:
        uris.append(config().uri or "")
    except Exception:  # the configuration may be what is broken: scrub what is known
        pass
    return [uri for uri in uris if uri]


def report_bug(error: Exception) -> None:
    """A bug (exit 1, and nothing else exits 1): its traceback goes to a log file the message
    names (``dbsync.crash_log``), so that whoever met it, a git hook or the agent too, can
    report it; ``-v`` prints it on stderr as well."""
    uris = _uris_in_use()
    report = crash_log.crash_report(error, sys.argv, uris)
    path = crash_log.write_crash_log(report, _project_root())
    summary = crash_log.scrubbed(f"{type(error).__name__}: {error}", uris)
    err.print(f"unexpected error: {summary}", markup=False)
    if options().verbose or path is None:
        err.print(report, markup=False, end="")
    where = f"its traceback is in {path}" if path else "no log file could be written"
    err.print(f"this is a bug in dbsync: {where}; please include it in a bug report", markup=False)
    raise typer.Exit(1)


def report_unexpected(error: Exception, command_name: str) -> None:
    """An error no service turned into a ``DbsyncError``: a full disk met outside a changing
    run (which turns its own, ``runs.recording.disk_full``) is expected (exit 5); anything
    else is a bug."""
    try:
        full = recording_service.disk_full(error, config(), command_name)
    except Exception:  # the configuration may be what is broken: then it is a bug to report
        full = None
    if full is not None:
        report_error(full)
    report_bug(error)


def exit_code_of_unexpected(error: Exception, command_name: str) -> int:
    """``report_unexpected`` for a call git made that did not go through typer (``launch``)."""
    try:
        report_unexpected(error, command_name)
    except typer.Exit as done:
        return done.exit_code
    return 1


_CONTEXT_PARAMETER = inspect.Parameter(
    "_dbsync_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
)


def _with_global_options(
    add: Callable[[Callable[..., Any]], Any], *, set_up: bool = False
) -> Callable[[F], F]:
    """Register a function with ``add`` so that it also accepts the global options
    (``dbsync export --uri X``), and so that its errors end in their exit codes.

    ``set_up``: the command touches a store, so it first refuses a folder that is not a
    project, or a clone never set up, before it opens or writes anything.
    """

    def register(function: F) -> F:
        signature = inspect.signature(function, eval_str=True)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            context = kwargs.pop(_CONTEXT_PARAMETER.name)
            given = {name: kwargs.pop(name) for name in _GLOBAL_NAMES}
            merged = _merged_options(context, given)
            if context.invoked_subcommand is not None:  # a group's: its sub-command runs next
                context.obj = merged
                return None
            name = context.info_name or "command"
            return run_command(function, merged, args, kwargs, set_up=set_up, name=name)

        parameters = [*signature.parameters.values(), *_GLOBAL_PARAMETERS, _CONTEXT_PARAMETER]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        add(wrapper)
        return function

    return register


def command(
    target: typer.Typer = app,
    name: str | None = None,
    *,
    hidden: bool = False,
    set_up: bool = False,
) -> Callable[[F], F]:
    """Register a command (see ``_with_global_options``).

    ``hidden``: called by git, not by people (drivers, hooks); left out of ``--help``.
    """
    add = target.command(name, hidden=hidden, cls=ManPageCommand)
    return _with_global_options(add, set_up=set_up)


def group_callback(target: typer.Typer) -> Callable[[F], F]:
    """Register what a command group does without a sub-command (``dbsync conflicts``)."""
    return _with_global_options(target.callback(invoke_without_command=True))


_CURRENT: list[GlobalOptions] = []


def run_command(
    function: Callable[..., Any],
    given: GlobalOptions,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    set_up: bool = False,
    name: str = "command",
) -> Any:
    """Run a command under the options it was given: the one place its errors become exit
    codes (``typer.Exit``). ``set_up``: the command touches a store, so a folder that is not
    a project, or a clone never set up, is refused first."""
    _CURRENT.append(given)
    try:
        if set_up:
            config().require_set_up()
        return function(*args, **(kwargs or {}))
    except DbsyncError as error:
        report_error(error)
    except KeyboardInterrupt:
        report_interrupt()
    except (typer.Exit, typer.Abort):
        raise
    except Exception as error:
        report_unexpected(error, name)
    finally:
        _CURRENT.pop()


def options() -> GlobalOptions:
    return _CURRENT[-1] if _CURRENT else GlobalOptions()


def config() -> Config:
    from dbsync.config import load_config

    given = options()
    flags = {"uri": given.uri, "database": given.database}
    return load_config(config_file=given.config, flags=flags)


def warn(message: str) -> None:
    err.print(f"warning: {message}", markup=False)


def changing(
    configuration: Config,
    operation: str,
    collections: list[str] | None,
    *,
    merging: Path | None = None,
) -> AbstractContextManager[tuple[pipeline_service.ChangingRun, Store]]:
    """A command's changing run (``dbsync.runs.pipeline``), saying and warning on the terminal;
    refused before the lock when this folder cannot run one (``Config.require_set_up``)."""
    configuration.require_set_up()
    return pipeline_service.changing_store_run(
        configuration,
        operation,
        say=say,
        warn=warn,
        collections=collections or [],
        merging=merging,
    )


@app.callback(invoke_without_command=True)
def main_callback(
    context: typer.Context,
    uri: UriOption = None,
    database: DatabaseOption = None,
    config_file: ConfigOption = None,
    quiet: QuietFlag = False,
    verbose: VerboseFlag = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Keep the MongoDB databases of several machines identical through an ordinary git remote.

    Global options are accepted before or after the command. Every command that reports takes
    --json and then prints one JSON document on stdout.

    Exit codes: 0 success, 1 unexpected failure, 2 usage error, 3 database unreachable,
    4 invalid or corrupt input, 5 refused by a safety guard, 6 git failed, 130 interrupted.
    """
    if version:
        out.print(f"dbsync {__version__}")
        raise typer.Exit(0)
    if context.invoked_subcommand is None:
        out.print(context.get_help())
        raise typer.Exit(2)
    context.obj = GlobalOptions(uri, database, config_file, quiet, verbose)


# ---------------------------------------------------------------- rendering helpers


def say(message: str) -> None:
    if not options().quiet:
        out.print(message)


def print_json(value: Any) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.buffer.flush()


class BarProgress:
    """A rich progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self) -> None:
        self._bar: RichProgress | None = None
        self._task: Any = None

    def start(self, label: str, total: int | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),  # a long import or export says when it will be done
            TimeRemainingColumn(),
            console=err.console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total)

    def advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, count)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def progress() -> Progress:
    if options().quiet or not err.is_terminal:
        return NoProgress()
    return BarProgress()


# ---------------------------------------------------------------- shell completion


def _completion_config() -> Config | None:
    from dbsync.config import load_config

    try:
        return load_config(flags={})
    except DbsyncError:
        return None  # no project here, or a broken one: offer nothing rather than fail a Tab


def complete_collections(incomplete: str) -> list[str]:
    found = _completion_config()
    return completion_service.collection_names(found, incomplete) if found else []


def complete_backup_ids(incomplete: str) -> list[str]:
    found = _completion_config()
    return completion_service.backup_ids(found, incomplete) if found else []


# ---------------------------------------------------------------- commands


class ImportMode(str, Enum):
    """``import --mode``: ``runs.import_file.ImportMode``'s choices, here because typer reads
    them when it builds the command tree, and that module imports the stores."""

    insert = "insert"
    upsert = "upsert"


DEFAULT_KEEP = 10
"""``prune --keep``'s default: ``runs.prune.DEFAULT_KEEP`` (that module imports the state store)."""

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
Collections = Annotated[
    list[str] | None,
    typer.Option(
        "--collection",
        "-c",
        metavar="COLLECTION",
        help="Only this collection (repeatable).",
        autocompletion=complete_collections,
    ),
]

DedupeFlag = Annotated[
    bool,
    typer.Option(
        "--dedupe",
        help="Fold records that share a key by the conflict rules (backed up and reported) "
        "instead of refusing.",
    ),
]


def render_folded(report: MergeReport | None) -> None:
    """What ``--dedupe`` folded."""
    if report is None:
        say("--dedupe: no records share a key")
        return
    for note in report.notes:
        warn(note)
    for name, counts in report.collections.items():
        say(
            f"--dedupe {name}: folded {counts.conflicts_resolved} duplicate(s), deleted "
            f"{counts.deleted} (losers kept in the report); "
            f"'dbsync restore {report.backup}' undoes it"
        )


@command()
def init(
    *,
    asset: Annotated[
        str | None,
        typer.Option(
            "--asset",
            metavar="NAME",
            help="The name of this machine in commits and reports "
            "(default: the hostname and the folder's name).",
        ),
    ] = None,
    json: JsonFlag = False,
) -> None:
    """Set up dbsync in this project: configuration, git drivers and hooks.

    Writes dbsync.toml (shared: the database and the collections' rules) and dbsync.local.toml
    (this machine: URI and asset name), and ignores database_sync/ and dbsync.local.toml in
    .gitignore. In a git repository it also writes .gitattributes (the snapshot files' merge and
    diff drivers), configures both drivers in .git/config and installs the pre-push,
    post-merge and post-rewrite hooks. Never overwrites a file; running it again changes
    nothing. Run it on every machine, after the clone.
    """
    given = options()
    result = init_service.init_project(
        Path.cwd(), uri=given.uri, database=given.database, asset=asset, config_file=given.config
    )
    for line in result.warnings:
        warn(line)
    if json:
        print_json(
            {
                "created": result.created,
                "kept": result.kept,
                "notes": result.notes,
                "warnings": result.warnings,
            }
        )
        return
    for name in result.created:
        say(f"created {name}")
    for name in result.kept:
        say(f"kept existing {name}")
    for note in result.notes:
        say(note)


@command(set_up=True)
def export(
    *,
    collection: Collections = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write every collection into this one file."
        ),
    ] = None,
    allow_deletes: Annotated[
        bool,
        typer.Option(
            "--allow-deletes",
            help="Write a snapshot even if it drops more than 10 records and 20% of a collection.",
        ),
    ] = False,
    dedupe: DedupeFlag = False,
    json: JsonFlag = False,
) -> None:
    """Write the database's collections to snapshot files.

    One file per collection in the snapshot directory (database_backup/ by default), or every
    collection in one --output file.
    """
    configuration = config()
    configuration.require_set_up()
    exported = publish_service.export_run(
        configuration,
        say=say,
        warn=warn,
        collections=collection,
        output=output,
        allow_deletes=allow_deletes,
        dedupe=dedupe,
        progress=progress(),
    )
    if dedupe:
        render_folded(exported.folded)
    if json:
        print_json([render.exported_json(result) for result in exported.collections])
        return
    if not exported.collections:
        warn(render.nothing_exported(configuration.database))
    for note in exported.skipped:
        warn(note)
    for result in exported.collections:
        for note in render.export_notes(result):
            warn(note)
        say(render.exported_line(result))


@command(name="import", set_up=True)
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="Extended JSON: one document per line, or a JSON array."
        ),
    ],
    *,
    collection: Annotated[
        str,
        typer.Option(
            "--collection",
            "-c",
            metavar="COLLECTION",
            help="The collection to load the documents into.",
            autocompletion=complete_collections,
        ),
    ],
    mode: Annotated[
        ImportMode,
        typer.Option(
            "--mode",
            metavar="MODE",
            help="What to do with a document whose _id exists: insert refuses the file, "
            "upsert replaces the document.",
        ),
    ] = ImportMode.insert,
    json: JsonFlag = False,
) -> None:
    """Load an Extended JSON file into a collection.

    Reads mongoexport output (relaxed or canonical) or a JSON array. The whole file is checked
    before the first write.
    """
    configuration = config()
    with changing(configuration, "import", [collection]) as (run, store):
        wanted = import_service.ImportMode(mode.value)
        result = import_service.import_file(
            configuration, store, file, collection, wanted, progress()
        )
        run.done(result.collection, result.documents)
    if json:
        print_json(render.imported_json(result))
    else:
        say(render.imported_line(result))
    for line in result.converted[:20]:  # the stores have no deprecated types: never silent
        warn(f"{result.collection}: {line} (BSON's deprecated type, not kept by the stores)")
    if len(result.converted) > 20:
        warn(f"{result.collection}: {len(result.converted) - 20} more deprecated values converted")


@command(set_up=True)
def dump(
    collection: Annotated[
        str,
        typer.Argument(
            metavar="COLLECTION",
            help="The collection to print.",
            autocompletion=complete_collections,
        ),
    ],
) -> None:
    """Print a collection as canonical Extended JSON, one document per line.

    Documents are sorted by the collection's key, so two dumps compare with diff.
    """
    configuration = config()
    with common_service.open_configured_store(configuration) as store:
        for line in dump_service.dump_lines(configuration, store, collection):
            sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()


@command()
def verify(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="A snapshot file or directory.")],
    *,
    json: JsonFlag = False,
) -> None:
    """Check a snapshot's format, order, types and every hash.

    Names the file and line of each problem; exits 4 when there is one.
    """
    report = verify_service.verify_path(path)
    if json:
        print_json(
            {
                "ok": report.ok,
                "files": report.files,
                "records": report.records,
                "problems": [
                    {"file": p.path, "line": p.line, "problem": p.message} for p in report.problems
                ],
            }
        )
    else:
        for problem in report.problems:
            err.print(str(problem), markup=False)
        if report.ok:
            say(f"ok: {report.files} file(s), {report.records} records verified")
    if not report.ok:
        raise InvalidInput(f"{len(report.problems)} problem(s) in {path}")


@command(set_up=True)
def stats(
    *,
    json: JsonFlag = False,
) -> None:
    """Show per collection the documents, size, snapshot state, last export and merge."""
    configuration = config()
    with common_service.open_configured_store(configuration) as store:
        document = stats_service.collection_stats(configuration, store)
    if json:
        print_json(document)
        return
    columns = ("collection", "documents", "size", "snapshot records", "snapshot", "last export")
    rows = []
    for name, row in document["collections"].items():
        snapshot = "-" if row["snapshot_records"] is None else str(row["snapshot_records"])
        last = [(row[k] or {}).get("time", "-") for k in ("last_export", "last_merge")]
        rows.append(
            [name, str(row["count"]), str(row["size_bytes"]), snapshot, row["snapshot"], *last]
        )
    print_table(f"database {document['database']}", [*columns, "last merge"], rows)


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A table on a terminal; tab-separated lines when piped, so no cell is ever cut."""
    if not out.is_terminal:
        sys.stdout.write(render.table_text(columns, rows) + "\n")
        sys.stdout.flush()
        return
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def render_merge(report: MergeReport) -> None:
    for note in report.notes:
        warn(note)
    for name, counts in report.collections.items():
        say(
            f"{name}: {counts.total} records ({counts.local_only} local only, "
            f"{counts.remote_only} remote only, {counts.common} common, "
            f"{counts.updated} updated, {counts.conflicts_resolved} conflicts, "
            f"{counts.deleted} deleted); {counts.writes} documents written"
        )
    if report.status == "dry-run":
        say(f"dry run ({report.mode}): nothing was changed")
    else:
        say(f"merged ({report.mode}); 'dbsync restore {report.backup}' undoes it")


@command(set_up=True)
def merge(
    path: Annotated[
        Path | None,
        typer.Argument(
            metavar="PATH",
            help="A snapshot file, an --output bundle, or a snapshot directory "
            "(none with --resume).",
        ),
    ] = None,
    *,
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            metavar="PATH",
            help="The common ancestor snapshot, which makes the merge three-way.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the report and change nothing.")
    ] = False,
    collection: Collections = None,
    allow_deletes: Annotated[
        bool,
        typer.Option(
            "--allow-deletes",
            help="Apply a merge even if it deletes more than 10 records and 20% of a collection.",
        ),
    ] = False,
    dedupe: DedupeFlag = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Finish the merge that was interrupted (killed, crashed)."),
    ] = False,
    json: JsonFlag = False,
) -> None:
    """Merge a snapshot into the database.

    Verifies the whole input before writing anything, backs up what it will change (the records'
    previous versions and the ids it inserts), writes each record only if the application has not
    changed it meanwhile (compare-and-set), writes a report, and rolls back if anything fails
    part-way.
    """
    configuration = config()
    configuration.require_set_up()
    merge_options = merge_service.MergeOptions(
        base=base, dry_run=dry_run, collections=collection, allow_deletes=allow_deletes
    )
    report, folded = pipeline_service.merge_run(
        configuration,
        path,
        merge_options,
        say=say,
        warn=warn,
        resume=resume,
        dedupe=dedupe,
        progress=progress(),
    )
    if dedupe and not dry_run:
        render_folded(folded)
    if json:  # streamed: a merge's conflicts may not fit in memory
        sys.stdout.buffer.writelines(report.json_chunks())
        sys.stdout.buffer.flush()
    else:
        render_merge(report)


@command()
def diff(
    first: Annotated[
        str, typer.Argument(metavar="A", help="A snapshot file or directory, or 'db'.")
    ],
    second: Annotated[
        str, typer.Argument(metavar="B", help="A snapshot file or directory, or 'db'.")
    ],
    *,
    json: JsonFlag = False,
) -> None:
    """Show the records that differ between two snapshots.

    Either side may be 'db', the live database.
    """
    configuration = config()
    changes = diff_service.diff(
        configuration, lambda: common_service.open_configured_store(configuration), first, second
    )
    if json:
        print_json([diff_service.change_json(change) for change in changes])
        return
    count = 0
    for change in changes:
        count += 1
        out.print(diff_service.change_text(change), markup=False)
    say(f"{count} record(s) differ")


@command()
def backups(*, json: JsonFlag = False) -> None:
    """List the backups taken before merges and restores, newest first."""
    found = backups_store.list_backups(config().state_dir)
    if json:
        print_json(
            [{"id": b.id, "created": b.created, "collections": b.collections} for b in found]
        )
        return
    if not found:
        say("no backups yet")
    for info in found:
        out.print(f"{info.id}  {', '.join(info.collections)}  ({info.reason})", markup=False)


@command(set_up=True)
def restore(
    backup_id: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="The backup to put back, as 'dbsync backups' lists it.",
            autocompletion=complete_backup_ids,
        ),
    ],
    *,
    collection: Collections = None,
    json: JsonFlag = False,
) -> None:
    """Put a backup back into the database.

    The current state is backed up first, so a restore is reversible too.
    """
    configuration = config()
    with changing(configuration, "restore", collection) as (run, store):
        result = restore_service.restore_backup(configuration, store, backup_id, collection)
        for name, records in result.records.items():
            run.done(name, records)
    if json:
        print_json(render.restored_json(result))
        return
    for name, counts in result.kept.items():
        if counts.left:
            warn(
                f"{name}: {counts.left} record(s) the application changed since were kept as "
                f"it wrote them{merge_service.kept_ids(counts)}"
            )
    say(
        f"restored {', '.join(result.restored)} from {result.backup}; "
        f"the state before is in backup {result.safety_backup}"
    )


@command(set_up=True)
def prune(
    *,
    keep: Annotated[
        int,
        typer.Option(
            "--keep",
            min=0,
            metavar="N",
            help="How many backups and merge reports to keep (never fewer than one backup).",
        ),
    ] = DEFAULT_KEEP,
    conflicts_older_than: Annotated[
        int | None,
        typer.Option(
            "--conflicts-older-than",
            min=0,
            metavar="DAYS",
            help="Also remove the losing versions of conflicts recorded more than DAYS days ago "
            "(kept forever by default; pruning reports never removes them).",
        ),
    ] = None,
    json: JsonFlag = False,
) -> None:
    """Remove old backups and merge reports.

    Also removes unfinished backups, temporary files left by a killed write, and history rows
    past the newest 10,000.
    """
    configuration = config()
    result = pipeline_service.prune_run(configuration, keep, conflicts_older_than)
    if json:
        print_json(result.to_json())
        return
    removed = len(result.backups) + len(result.unfinished_backups)
    say(
        f"removed {removed} backup(s), {len(result.reports)} report file(s), "
        f"{len(result.temporary_files)} temporary file(s), {result.history_rows} history row(s), "
        f"{result.losing_versions} losing version(s); "
        f"kept {result.kept_backups} backup(s) and {result.kept_reports} report(s)"
    )


@command(set_up=True)
def status(
    *,
    json: JsonFlag = False,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Compare every record of the database with the snapshot, as an export would "
            "(slow on large collections); without it, status uses what the last export recorded.",
        ),
    ] = False,
) -> None:
    """Say whether this asset is HEALTHY, WARNING or DEGRADED, and what to run about it.

    Read-only: takes no lock, retries nothing, gives the database about a second to answer,
    and reads no collection in full (unless --deep).
    """
    document = status_service.health(config(), deep=deep)
    if json:
        print_json(document)
        return
    out.print(f"status: {document['status']}", markup=False)
    for reason in document["reasons"]:
        out.print(f"- {reason['level']}: {reason['message']}", markup=False)
        out.print(f"  → {reason['fix']}", markup=False)


@command()
def history(
    *,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=1, metavar="N", help="Show at most N runs."),
    ] = 20,
    json: JsonFlag = False,
) -> None:
    """Show every export, merge, import and restore, failures included, newest first."""
    with state_store.reading_state(config().state_dir) as state:
        entries = state.history(limit) if state is not None else []
    if json:
        print_json([entry.to_json() for entry in entries])
        return
    if not entries:
        say("no runs recorded yet")
        return
    for entry in entries:
        out.print(history_line(entry), markup=False)


def history_line(entry: HistoryEntry) -> str:
    """One run per line, so that ``grep`` and ``less`` work on the output."""
    records = "" if entry.records is None else f" {entry.records} records"
    duration = "" if entry.duration_ms is None else f" in {entry.duration_ms} ms"
    error = f": {entry.error}" if entry.error else ""
    where = entry.collection or "-"
    return f"{entry.time}  {entry.operation} {where} {entry.status}{records}{duration}{error}"


# ---------------------------------------------------------------- record history and conflicts


@command()
def log(
    key: Annotated[
        str | None,
        typer.Argument(
            help="The record's key: an _id as plain text, a number, ObjectId(...), or JSON."
        ),
    ] = None,
    *,
    collection: Annotated[
        str | None,
        typer.Option("--collection", "-c", help="The collection (default: the only one)."),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option("--field", help="NAME=VALUE for each field of a natural key (repeatable)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Show at most this many versions.")
    ] = None,
    restore: Annotated[
        str | None,
        typer.Option(
            "--restore",
            metavar="COMMIT",
            help="Bring back the version this commit holds (or the one it deleted).",
        ),
    ] = None,
    json: JsonFlag = False,
) -> None:
    """Every version of one record through the snapshot's git history, newest first."""
    configuration = config()
    request = log_service.LogRequest(collection, key, tuple(field or ()), limit)
    if restore is not None:
        name, source, document = log_service.version_to_restore(configuration, request, restore)
        with changing(configuration, "restore", [name]) as (run, store):
            result = bring_back_service.bring_back(
                configuration, store, name, document, f"commit {source[:12]}"
            )
            run_done(run, result)
        render_brought_back(result, f"the version of commit {source[:12]}", json)
        return
    found = log_service.record_log(configuration, request)
    for note in found.notes:
        warn(note)
    if json:
        print_json(found.to_json())
        return
    for line in log_service.log_text(found):
        out.print(line, markup=False)


def run_done(run: pipeline_service.ChangingRun, result: bring_back_service.BroughtBack) -> None:
    for name, counts in result.report.collections.items():
        run.done(name, counts.total)


def render_brought_back(result: bring_back_service.BroughtBack, what: str, json: bool) -> None:
    if json:
        print_json({**result.report.to_json(), "restored": result.document})
        return
    report = result.report
    say(f"{result.collection} {result.key}: {what} is the current version again")
    say(f"backed up first: 'dbsync restore {report.backup}' undoes it; merge report written")
    note = bring_back_service.spreading_note(result)
    if result.timestamp_field is None:
        warn(note)
    else:
        say(note)


conflicts_app = typer.Typer(
    subcommand_metavar="[show ID | restore ID]", **{**HELP_SETTINGS, "no_args_is_help": False}
)
app.add_typer(conflicts_app, name="conflicts")
ConflictId = Annotated[
    int, typer.Argument(metavar="ID", help="A losing version's id, as 'dbsync conflicts' lists it.")
]


@group_callback(conflicts_app)
def conflicts(
    *,
    collection: Annotated[
        str | None,
        typer.Option("--collection", "-c", metavar="COLLECTION", help="Only this collection."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Only those decided since: 2026-11-30, 2026-11-30T12:00, 7d.",
        ),
    ] = None,
    json: JsonFlag = False,
) -> None:
    """The losing versions of every conflict decided on this asset, newest first.

    'dbsync conflicts show ID' compares one with the version that won; 'dbsync conflicts
    restore ID' makes it the current version again.
    """
    found = conflicts_service.list_conflicts(config(), collection, since)
    if json:
        print_json([conflicts_service.conflict_json(version) for version in found])
        return
    if not found:
        say("no losing versions recorded")
    for version in found:
        out.print(conflicts_service.conflict_line(version), markup=False)


@command(conflicts_app, "show")
def conflicts_show(conflict_id: ConflictId, *, json: JsonFlag = False) -> None:
    """Show a losing version against the version that won, field by field."""
    version = conflicts_service.find_conflict(config(), conflict_id)
    comparison = conflicts_service.compare(version)
    if json:
        changes = [change.to_json() for change in comparison.changes]
        print_json({**conflicts_service.conflict_json(version), "changes": changes})
        return
    for line in conflicts_service.comparison_text(comparison):
        out.print(line, markup=False)


@command(conflicts_app, "restore")
def conflicts_restore(conflict_id: ConflictId, *, json: JsonFlag = False) -> None:
    """Make a losing version the current version again, with its timestamp set to now.

    Backed up first and merged like any merge, so 'dbsync restore ID' undoes it.
    """
    configuration = config()
    name = conflicts_service.find_conflict(configuration, conflict_id).collection
    with changing(configuration, "restore", [name]) as (run, store):
        result = conflicts_service.restore_conflict(configuration, store, conflict_id)
        run_done(run, result)
    render_brought_back(result, f"losing version {conflict_id}", json)


# ---------------------------------------------------------------- git integration

hooks_app = typer.Typer(
    help="Install, remove or inspect the git hooks and drivers.\n\n"
    "The hooks are pre-push (export), post-merge and post-rewrite (merge what a pull "
    "brought) and post-commit (merge what a cherry-pick brought); the drivers merge and "
    "diff snapshot files record by record. "
    "'dbsync hooks status --json' prints the same as one JSON document.",
    **HELP_SETTINGS,
)
app.add_typer(hooks_app, name="hooks")


@command(hooks_app, "install")
def hooks_install(*, json: JsonFlag = False) -> None:
    """Install the hooks and configure the merge and diff drivers.

    A hook that was already there is kept as HOOK.legacy and still runs first.
    """
    installed = hooks_service.install(git.require_toplevel(Path.cwd()))
    if json:
        print_json(render.hook_changes_json(installed.hooks))
        return
    for line in hooks_service.describe(installed):
        say(line)


@command(hooks_app, "uninstall")
def hooks_uninstall(*, json: JsonFlag = False) -> None:
    """Remove dbsync's hooks and put back the ones they replaced.

    The drivers stay configured: they run only when git merges or diffs a snapshot. The
    pull.rebase that 'dbsync init' set is removed too (not one set or changed by anyone else).
    """
    root = git.require_toplevel(Path.cwd())
    changes = hooks_service.uninstall_hooks(root)
    pull_setting = hooks_service.undo_pull_setting(root)
    if json:
        print_json(render.hook_changes_json(changes))
        return
    for change in changes:
        restored = f" ({change.legacy.name} put back)" if change.legacy else ""
        say(f"{change.name}: {change.action}{restored}")
    if pull_setting is not None:
        say(pull_setting)


@command(hooks_app, "status")
def hooks_status(*, json: JsonFlag = False) -> None:
    """Show whether the hooks, drivers and .gitattributes are in place.

    A hook is installed, foreign or missing, and may have a legacy hook kept.
    """
    setup = hooks_service.git_setup(git.require_toplevel(Path.cwd()), config().snapshot_dir)
    if json:
        print_json(hooks_service.setup_json(setup))
        return
    out.print(f"hooks folder: {setup.place.directory}", markup=False)
    for hook in setup.hooks:
        legacy = f", {hook.name}.legacy kept and run" if hook.legacy else ""
        out.print(f"{hook.name}: {hook.state}{legacy}", markup=False)
    for label, done in (
        ("merge driver", setup.merge_driver),
        ("diff driver", setup.diff_driver),
        (".gitattributes", setup.attributes),
    ):
        out.print(f"{label}: {'configured' if done else 'missing'}", markup=False)
    if not setup.complete:
        out.print("run 'dbsync hooks install' (or 'dbsync init') to complete it", markup=False)


@command(hidden=True)
def hook(
    name: Annotated[str, typer.Argument(help="pre-push, post-merge, post-rewrite or post-commit.")],
    args: Annotated[
        list[str] | None, typer.Argument(help="The arguments git gave the hook.")
    ] = None,
) -> None:
    """Run what a git hook does (the hook scripts call this)."""
    raise typer.Exit(hook_service.hook_call(name, args or [], config(), _to_stderr))


def _to_stderr(line: str) -> None:
    err.print(line, markup=False)


@command(name="merge-driver", hidden=True)
def merge_driver(
    base: Annotated[Path, typer.Argument(help="The common ancestor (%O); empty when none.")],
    ours: Annotated[Path, typer.Argument(help="Our version (%A); receives the result.")],
    theirs: Annotated[Path, typer.Argument(help="Their version (%B).")],
    path: Annotated[
        str | None, typer.Argument(help="The file's path in the repository (%P).")
    ] = None,
) -> None:
    """Git's merge driver for snapshot files: exit 0 merged, 1 conflict left for the user."""
    files = (base, ours, theirs)
    quiet = options().quiet
    exit_code = merge_driver_service.driver_call(files, path, quiet=quiet, write=_to_stderr)
    raise typer.Exit(exit_code)


@command(name="diff-driver", hidden=True)
def diff_driver(
    args: Annotated[list[str], typer.Argument(help="What git passes to a diff driver.")],
    *,
    textconv: Annotated[
        bool, typer.Option("--textconv", help="Print FILE as one line per record.")
    ] = False,
) -> None:
    """Git's diff driver for snapshot files: record-level changes."""
    if textconv:
        for chunk in diff_driver_service.textconv(Path(args[0])):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    for line in diff_driver_service.external_diff(args):
        sys.stdout.write(line + "\n")  # verbatim: rich would read ':name:' in data as an emoji
    sys.stdout.flush()


PUSH_RETRY_SECONDS = 120.0
"""``--push-retry``'s default: ``runs.sync.DEFAULT_PUSH_RETRY_SECONDS`` (typer reads it when it
builds the command tree, before any service is imported)."""
PUSH_RETRY_VARIABLE = "DBSYNC_PUSH_RETRY_SECONDS"  # runs.sync.PUSH_RETRY_VARIABLE
PushRetryOption = Annotated[
    float,
    typer.Option(
        "--push-retry",
        metavar="SECONDS",
        min=0,
        envvar=PUSH_RETRY_VARIABLE,
        help="How long to keep merging and pushing again while other assets push first "
        "(0: push once).",
    ),
]


@command(set_up=True)
def sync(
    *,
    json: JsonFlag = False,
    push_retry: PushRetryOption = PUSH_RETRY_SECONDS,
) -> None:
    """Pull, export, commit and push: the whole cycle in one command.

    The pull's hooks merge what it brought (their summary is shown); the export is committed
    only when the snapshot changed. A push refused because another asset pushed first is
    merged and pushed again, without exporting again.
    """
    retry = sync_service.PushRetry(push_retry)
    result = sync_service.sync_run(config(), warn, say=tell, retry=retry)
    for message in result.warnings:
        warn(message)
    if json:
        print_json(result.to_json())
        return
    for step in result.steps:
        say(step)


def tell(message: str) -> None:
    """What a command is doing while it waits (on stderr: stdout may be --json)."""
    if not options().quiet:
        err.print(message, markup=False)


@command(set_up=True)
def agent(
    *,
    every: Annotated[
        str,
        typer.Option("--every", metavar="INTERVAL", help="The time between syncs: 30s, 5m, 1h..."),
    ] = "5m",
    port: Annotated[
        int,
        typer.Option(
            "--port", metavar="PORT", help="The port of the HTTP API and status page (0: any)."
        ),
    ] = 8765,
    bind: Annotated[
        str,
        typer.Option(
            "--bind",
            metavar="ADDR",
            help="The address to serve on; beyond 127.0.0.1 it needs DBSYNC_API_KEY.",
        ),
    ] = "127.0.0.1",
    push_retry: PushRetryOption = PUSH_RETRY_SECONDS,
) -> None:
    """Sync on a schedule, serve a status page and API, and alert when the status degrades.

    GET / is the status page, GET /metrics the Prometheus metrics; the JSON API is in docs/agent.md.
    """
    interval = agent_service.parse_interval(every)
    api_key = os.environ.get("DBSYNC_API_KEY") or None
    agent_api.require_key_for(bind, api_key)
    cycle = functools.partial(agent_service.sync_cycle, retry=sync_service.PushRetry(push_retry))
    worker = agent_service.Agent(
        config, interval, lambda line: out.print(line, markup=False), cycle_runner=cycle
    )
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, worker.stop_from_signal)
    agent_service.run_agent(worker, bind=bind, port=port, api_key=api_key)


@command()
def demo(
    *,
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            metavar="PATH",
            help="Run in this folder and keep it (default: a temporary folder).",
        ),
    ] = None,
) -> None:
    """Show two assets converging through a bare git remote and the real hooks.

    Runs in a temporary folder and exits 1 if the assets do not converge.
    """
    converged = demo_service.run_demo(say, keep=keep)
    if not converged:
        err.print("the assets did not converge", markup=False)
        raise typer.Exit(1)
    say("converged: both assets hold the same records and the same snapshot")


# ---------------------------------------------------------------- entry point


def main() -> None:
    """The CLI: every call but the few git makes, which the console script (``launch.main``)
    runs without it. Usage errors exit 2 (typer's own handling); ``DbsyncError``s are mapped to
    their exit codes by ``report_error``, Ctrl-C to 130 by ``report_interrupt``; anything else
    is a bug and exits 1."""
    app()
