"""The ``dbsync`` command line: options, help, output and exit codes — nothing else.

Each command reads its options, calls one service in ``dbsync.runs``, and renders the
result. Errors are ``DbsyncError`` subclasses, turned into exit codes in ``main`` only.
"""

import functools
import inspect
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table
from typer.core import TyperArgument, TyperOption

from dbsync import __version__, render
from dbsync import completion as completion_service
from dbsync.agent import schedule as agent_service
from dbsync.agent.api import require_key_for
from dbsync.config import Config, load_config
from dbsync.core.report import MergeReport
from dbsync.edges import git
from dbsync.edges.backups import list_backups
from dbsync.edges.state import HistoryEntry, reading_state
from dbsync.edges.store import Store
from dbsync.errors import DbsyncError, InvalidInput, UsageError
from dbsync.integration import diff_driver as diff_driver_service
from dbsync.integration import hook_runs as hook_service
from dbsync.integration import installer as hooks_service
from dbsync.integration import merge_driver as merge_driver_service
from dbsync.progress import NoProgress, Progress
from dbsync.runs import bring_back as bring_back_service
from dbsync.runs import conflicts as conflicts_service
from dbsync.runs import demo as demo_service
from dbsync.runs import diff as diff_service
from dbsync.runs import dump as dump_service
from dbsync.runs import export as export_service
from dbsync.runs import import_file as import_service
from dbsync.runs import init as init_service
from dbsync.runs import log as log_service
from dbsync.runs import merge as merge_service
from dbsync.runs import pending as pending_service
from dbsync.runs import pipeline as pipeline_service
from dbsync.runs import prune as prune_service
from dbsync.runs import restore as restore_service
from dbsync.runs import stats as stats_service
from dbsync.runs import status as status_service
from dbsync.runs import sync as sync_service
from dbsync.runs import verify as verify_service
from dbsync.runs.common import open_configured_store

# ---------------------------------------------------------------- help that reads like a man page


def _usage_name(self: TyperArgument) -> str:
    """``FILE`` when required, ``[FILE]`` when not: typer writes ``{FILE}`` for the first."""
    name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
    return name + ("..." if self.nargs != 1 else "")


def _no_type(self: TyperArgument, ctx: Any) -> str | None:
    """The metavar already says what an argument is; typer would add ``<str>`` after it."""
    return None


def _option_placeholder(self: TyperOption, ctx: Any) -> str | None:
    """An option without a metavar shows its name (``--limit LIMIT``), not ``<int>``."""
    return self.metavar or (self.name or "value").upper()


# typer >= 0.2x draws every parameter's Python type (``<bool>`` on flags, ``<list[str]>``);
# the plain (click) formatter with these overrides prints what man pages print.
if hasattr(TyperArgument, "_usage_display_name"):
    TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
TyperArgument.display_type_rich = _no_type  # type: ignore[method-assign, assignment]
TyperOption.display_type_rich = _option_placeholder  # type: ignore[method-assign]

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

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- global options


@dataclass(frozen=True)
class GlobalOptions:
    uri: str | None = None
    database: str | None = None
    config: Path | None = None
    quiet: bool = False
    verbose: bool = False


_GLOBAL_PARAMETERS = [
    inspect.Parameter(
        "uri",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--uri",
                metavar="URI",
                help="The database: mongodb://, mongodb+srv:// or embedded://PATH. "
                "Overrides DBSYNC_URI and the config files.",
                show_default=False,
            ),
        ],
    ),
    inspect.Parameter(
        "database",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--database",
                metavar="NAME",
                help="The database name. Overrides DBSYNC_DATABASE and the config files.",
            ),
        ],
    ),
    inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--config",
                metavar="FILE",
                help="The dbsync.toml to use (default: the nearest one upwards).",
            ),
        ],
    ),
    inspect.Parameter(
        "quiet",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool, typer.Option("--quiet", "-q", help="Print only errors and JSON.")
        ],
    ),
    inspect.Parameter(
        "verbose",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool,
            typer.Option("--verbose", "-v", help="Print more, with a traceback on a bug."),
        ],
    ),
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


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a command Ctrl-C stopped


def report_interrupt() -> None:
    """Ctrl-C: every write dbsync makes is atomic (a temporary file renamed into place) and every
    merge rolls back, so stopping leaves nothing half-written; say so and exit 130."""
    err.print("interrupted (Ctrl-C): nothing was left half-written", markup=False)
    raise typer.Exit(INTERRUPTED_EXIT_CODE)


_CONTEXT_PARAMETER = inspect.Parameter(
    "_dbsync_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
)


def command(
    target: typer.Typer = app, name: str | None = None, *, hidden: bool = False
) -> Callable[[F], F]:
    """Register a command that also accepts the global options (``dbsync export --uri X``).

    ``hidden``: called by git, not by people (drivers, hooks); left out of ``--help``.
    """

    def register(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            context = kwargs.pop(_CONTEXT_PARAMETER.name)
            given = {name: kwargs.pop(name) for name in _GLOBAL_NAMES}
            _CURRENT.append(_merged_options(context, given))
            try:
                return function(*args, **kwargs)
            except DbsyncError as error:
                report_error(error)
            except KeyboardInterrupt:
                report_interrupt()
            except (typer.Exit, typer.Abort):
                raise
            except Exception as error:  # a bug: say so briefly; -v shows the traceback
                if options().verbose:
                    raise
                err.print(f"unexpected error: {type(error).__name__}: {error}", markup=False)
                err.print("hint: run again with -v for the traceback", markup=False)
                raise typer.Exit(1) from None
            finally:
                _CURRENT.pop()

        parameters = [*signature.parameters.values(), *_GLOBAL_PARAMETERS, _CONTEXT_PARAMETER]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        target.command(name, hidden=hidden)(wrapper)
        return function

    return register


_CURRENT: list[GlobalOptions] = []


def options() -> GlobalOptions:
    return _CURRENT[-1] if _CURRENT else GlobalOptions()


def config() -> Config:
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
    """A command's changing run (``dbsync.runs.pipeline``), saying and warning on the terminal."""
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
    uri: Annotated[
        str | None,
        typer.Option(
            "--uri", metavar="URI", help="The database: mongodb://, mongodb+srv:// or embedded://."
        ),
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", metavar="NAME", help="The database name.")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", metavar="FILE", help="The dbsync.toml to use.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only errors and JSON.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print more, with a traceback on a bug.")
    ] = False,
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
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.buffer.flush()


class BarProgress:
    """A rich progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self) -> None:
        self._bar: RichProgress | None = None
        self._task: Any = None

    def start(self, label: str, total: int | None = None) -> None:
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),  # a long import or export says when it will be done
            TimeRemainingColumn(),
            console=err,
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


def fold_duplicates(configuration: Config, store: Store, wanted: list[str] | None) -> None:
    report = pipeline_service.fold_duplicates(configuration, store, wanted)
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
        Path.cwd(), uri=given.uri, database=given.database, asset=asset
    )
    if json:
        print_json({"created": result.created, "kept": result.kept, "notes": result.notes})
        return
    for name in result.created:
        say(f"created {name}")
    for name in result.kept:
        say(f"kept existing {name}")
    for note in result.notes:
        say(note)


@command()
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
    with changing(configuration, "export", collection) as (run, store):
        if dedupe:
            fold_duplicates(configuration, store, collection)
        results = export_service.export(
            configuration,
            store,
            collections=collection,
            output=output,
            progress=progress(),
            allow_deletes=allow_deletes,
        )
        for result in results:
            run.done(result.collection, result.records, result.digest)
    if json:
        print_json([render.exported_json(result) for result in results])
        return
    if not results:
        warn(render.nothing_exported(configuration.database))
    for result in results:
        for note in result.notes:
            warn(note)
        state = "changed" if result.changed else "unchanged"
        deleted = f", {result.deleted} deleted" if result.deleted else ""
        say(f"{result.collection}: {result.records} records → {result.path} ({state}{deleted})")


@command(name="import")
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
        import_service.ImportMode,
        typer.Option(
            "--mode",
            metavar="MODE",
            help="What to do with a document whose _id exists: insert refuses the file, "
            "upsert replaces the document.",
        ),
    ] = import_service.ImportMode.insert,
    json: JsonFlag = False,
) -> None:
    """Load an Extended JSON file into a collection.

    Reads mongoexport output (relaxed or canonical) or a JSON array. The whole file is checked
    before the first write.
    """
    configuration = config()
    with changing(configuration, "import", [collection]) as (run, store):
        result = import_service.import_file(store, file, collection, mode, progress())
        run.done(result.collection, result.documents)
    if json:
        print_json(render.imported_json(result))
    else:
        say(render.imported_line(result))
    for line in result.converted[:20]:  # the stores have no deprecated types: never silent
        warn(f"{result.collection}: {line} (BSON's deprecated type, not kept by the stores)")
    if len(result.converted) > 20:
        warn(f"{result.collection}: {len(result.converted) - 20} more deprecated values converted")


@command()
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
    with open_configured_store(configuration) as store:
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


@command()
def stats(
    *,
    json: JsonFlag = False,
) -> None:
    """Show per collection the documents, size, snapshot state, last export and merge."""
    configuration = config()
    with open_configured_store(configuration) as store:
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


@command()
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
    merge_options = merge_service.MergeOptions(
        base=base, dry_run=dry_run, collections=collection, allow_deletes=allow_deletes
    )
    path, merge_options = merge_service.resolve_resume(configuration, path, merge_options, resume)
    if base is None and not resume:  # a pull's merge that was pending stays three-way
        merge_options = pending_service.as_pending_pull(configuration, path, merge_options)
    with changing(configuration, "merge", collection, merging=path) as (run, store):
        if dedupe and not dry_run:
            fold_duplicates(configuration, store, collection)
        report = run.merge(store, path, merge_options, progress())
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
        configuration, lambda: open_configured_store(configuration), first, second
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
    found = list_backups(config().state_dir)
    if json:
        print_json(
            [{"id": b.id, "created": b.created, "collections": b.collections} for b in found]
        )
        return
    if not found:
        say("no backups yet")
    for info in found:
        out.print(f"{info.id}  {', '.join(info.collections)}  ({info.reason})", markup=False)


@command()
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
    say(
        f"restored {', '.join(result.restored)} from {result.backup}; "
        f"the state before is in backup {result.safety_backup}"
    )


@command()
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
    ] = prune_service.DEFAULT_KEEP,
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


@command()
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
    with reading_state(config().state_dir) as state:
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


class ConflictAction(str, Enum):
    show = "show"
    restore = "restore"


@command()
def conflicts(
    action: Annotated[
        ConflictAction | None,
        typer.Argument(
            help="What to do with losing version ID: show it against its winner, or restore it."
        ),
    ] = None,
    conflict_id: Annotated[
        int | None, typer.Argument(metavar="ID", help="A losing version's id.")
    ] = None,
    *,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Only this collection.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only those decided since: 2026-11-30, 2026-11-30T12:00, 7d."),
    ] = None,
    json: JsonFlag = False,
) -> None:
    """The losing versions of every conflict decided on this asset, newest first."""
    configuration = config()
    if action is None:
        found = conflicts_service.list_conflicts(configuration, collection, since)
        if json:
            print_json([conflicts_service.conflict_json(version) for version in found])
        elif not found:
            say("no losing versions recorded")
        for version in [] if json else found:
            out.print(conflicts_service.conflict_line(version), markup=False)
        return
    if conflict_id is None:
        raise UsageError(f"'dbsync conflicts {action.value}' needs the ID of a losing version")
    if action is ConflictAction.show:
        comparison = conflicts_service.compare(
            conflicts_service.find_conflict(configuration, conflict_id)
        )
        if json:
            changes = [change.to_json() for change in comparison.changes]
            print_json({**conflicts_service.conflict_json(comparison.version), "changes": changes})
            return
        for line in conflicts_service.comparison_text(comparison):
            out.print(line, markup=False)
        return
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

    The drivers stay configured: they run only when git merges or diffs a snapshot.
    """
    changes = hooks_service.uninstall_hooks(git.require_toplevel(Path.cwd()))
    if json:
        print_json(render.hook_changes_json(changes))
        return
    for change in changes:
        restored = f" ({change.legacy.name} put back)" if change.legacy else ""
        say(f"{change.name}: {change.action}{restored}")


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
    stdin = sys.stdin.read() if name in (hook_service.PRE_PUSH, hook_service.POST_REWRITE) else ""
    outcome = hook_service.run_hook(name, args or [], stdin, config())
    for line in outcome.lines:
        err.print(line, markup=False)
    raise typer.Exit(outcome.exit_code)


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
    result = merge_driver_service.merge_files(base, ours, theirs, path or str(ours))
    merge_driver_service.record_driver_merge(result, path or str(ours), Path.cwd())
    if not options().quiet or not result.merged:
        err.print(result.message, markup=False)
    for note in result.notes:
        warn(note)
    raise typer.Exit(0 if result.merged else 1)


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


PushRetryOption = Annotated[
    float,
    typer.Option(
        "--push-retry",
        metavar="SECONDS",
        min=0,
        envvar=sync_service.PUSH_RETRY_VARIABLE,
        help="How long to keep merging and pushing again while other assets push first "
        "(0: push once).",
    ),
]


@command()
def sync(
    *,
    json: JsonFlag = False,
    push_retry: PushRetryOption = sync_service.DEFAULT_PUSH_RETRY_SECONDS,
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


@command()
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
    push_retry: PushRetryOption = sync_service.DEFAULT_PUSH_RETRY_SECONDS,
) -> None:
    """Sync on a schedule, serve a status page and API, and alert when the status degrades.

    GET / is the status page, GET /metrics the Prometheus metrics; the JSON API is in README.
    """
    interval = agent_service.parse_interval(every)
    api_key = os.environ.get("DBSYNC_API_KEY") or None
    require_key_for(bind, api_key)
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
    """The console script. Usage errors exit 2 (typer's own handling); ``DbsyncError``s are
    mapped to their exit codes by ``report_error``, Ctrl-C to 130 by ``report_interrupt``;
    anything else is a bug and exits 1."""
    app()
