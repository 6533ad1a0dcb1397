"""The ``dbsync`` command line: options, help, output and exit codes — nothing else.

Each command reads its options, calls one service in ``dbsync.commands``, and renders the
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
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from dbsync import __version__, git
from dbsync import agent as agent_service
from dbsync import demo as demo_service
from dbsync import hooks as hooks_service
from dbsync import pipeline as pipeline_service
from dbsync.api import require_key_for
from dbsync.backups import list_backups
from dbsync.commands import diff as diff_service
from dbsync.commands import diff_driver as diff_driver_service
from dbsync.commands import dump as dump_service
from dbsync.commands import export as export_service
from dbsync.commands import hook as hook_service
from dbsync.commands import import_file as import_service
from dbsync.commands import init as init_service
from dbsync.commands import merge as merge_service
from dbsync.commands import merge_driver as merge_driver_service
from dbsync.commands import prune as prune_service
from dbsync.commands import restore as restore_service
from dbsync.commands import stats as stats_service
from dbsync.commands import status as status_service
from dbsync.commands import sync as sync_service
from dbsync.commands import verify as verify_service
from dbsync.commands.common import open_configured_store
from dbsync.config import Config, load_config
from dbsync.errors import DbsyncError, InvalidInput
from dbsync.progress import NoProgress, Progress
from dbsync.report import MergeReport
from dbsync.state import HistoryEntry, reading_state
from dbsync.store import Store

app = typer.Typer(
    name="dbsync",
    help="Keep the MongoDB databases of several machines identical through an ordinary git remote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
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
                help="MongoDB URI (mongodb://, mongodb+srv://) or embedded://PATH. "
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
            typer.Option("--database", help="Database name. Overrides DBSYNC_DATABASE."),
        ],
    ),
    inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option("--config", help="Path to dbsync.toml (default: found upwards)."),
        ],
    ),
    inspect.Parameter(
        "quiet",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")],
    ),
    inspect.Parameter(
        "verbose",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool, typer.Option("--verbose", "-v", help="Print more, tracebacks included.")
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
    """A command's changing run (``dbsync.pipeline``), saying and warning on the terminal."""
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
        str | None, typer.Option("--uri", help="MongoDB URI or embedded://PATH.")
    ] = None,
    database: Annotated[str | None, typer.Option("--database", help="Database name.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="Path to dbsync.toml.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print more.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Keep the MongoDB databases of several machines identical through an ordinary git remote.

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


# ---------------------------------------------------------------- commands

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
        str | None, typer.Option("--asset", help="Name of this machine (default: hostname).")
    ] = None,
) -> None:
    """Write dbsync.toml and dbsync.local.toml, and ignore the local state in .gitignore."""
    given = options()
    result = init_service.init_project(
        Path.cwd(), uri=given.uri, database=given.database, asset=asset
    )
    for name in result.created:
        say(f"created {name}")
    for name in result.kept:
        say(f"kept existing {name}")
    for note in result.notes:
        say(note)


@command()
def export(
    *,
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="Export only this collection (repeatable)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write every collection into this one file."),
    ] = None,
    allow_deletes: Annotated[
        bool,
        typer.Option(
            "--allow-deletes",
            help="Write a snapshot that drops more than 10 records and 20% of a collection.",
        ),
    ] = False,
    dedupe: DedupeFlag = False,
) -> None:
    """Write the database's collections to snapshot files (default: the snapshot directory)."""
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
    for result in results:
        for note in result.notes:
            warn(note)
        state = "changed" if result.changed else "unchanged"
        deleted = f", {result.deleted} deleted" if result.deleted else ""
        say(f"{result.collection}: {result.records} records → {result.path} ({state}{deleted})")


@command(name="import")
def import_(
    file: Annotated[
        Path, typer.Argument(help="Extended JSON: one document per line, or an array.")
    ],
    *,
    collection: Annotated[str, typer.Option("--collection", "-c", help="Target collection.")],
    mode: Annotated[
        import_service.ImportMode,
        typer.Option("--mode", help="insert refuses existing _ids; upsert replaces them."),
    ] = import_service.ImportMode.insert,
) -> None:
    """Load an Extended JSON file (mongoexport output, relaxed or canonical) into a collection."""
    configuration = config()
    with changing(configuration, "import", [collection]) as (run, store):
        result = import_service.import_file(store, file, collection, mode, progress())
        run.done(result.collection, result.documents)
    say(f"{result.collection}: {result.documents} documents imported ({result.mode.value})")


@command()
def dump(
    collection: Annotated[str, typer.Argument(help="The collection to print.")],
) -> None:
    """Print a collection as canonical Extended JSON, one document per line, sorted by key."""
    configuration = config()
    with open_configured_store(configuration) as store:
        for line in dump_service.dump_lines(configuration, store, collection):
            sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()


@command()
def verify(
    path: Annotated[Path, typer.Argument(help="A snapshot file or directory.")],
    *,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Check format, ordering and every record hash; name each bad line."""
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
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Per collection: documents, size, snapshot state, last export and merge."""
    configuration = config()
    with open_configured_store(configuration) as store:
        document = stats_service.collection_stats(configuration, store)
    if json:
        print_json(document)
        return
    table = Table(title=f"database {document['database']}")
    columns = ("collection", "documents", "size", "snapshot records", "snapshot", "last export")
    for column in (*columns, "last merge"):
        table.add_column(column)
    for name, row in document["collections"].items():
        snapshot = "-" if row["snapshot_records"] is None else str(row["snapshot_records"])
        last = [(row[k] or {}).get("time", "-") for k in ("last_export", "last_merge")]
        table.add_row(
            name, str(row["count"]), str(row["size_bytes"]), snapshot, row["snapshot"], *last
        )
    out.print(table)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
Collections = Annotated[
    list[str] | None,
    typer.Option("--collection", "-c", help="Only this collection (repeatable)."),
]


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
        Path, typer.Argument(help="A snapshot file, an --output bundle, or a directory.")
    ],
    *,
    base: Annotated[
        Path | None,
        typer.Option("--base", help="The common ancestor snapshot: makes the merge three-way."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the report and change nothing.")
    ] = False,
    collection: Collections = None,
    allow_deletes: Annotated[
        bool,
        typer.Option("--allow-deletes", help="Apply a merge that deletes many records at once."),
    ] = False,
    dedupe: DedupeFlag = False,
    json: JsonFlag = False,
) -> None:
    """Merge a snapshot into the database, with a backup first, a report, and rollback."""
    configuration = config()
    merge_options = merge_service.MergeOptions(
        base=base, dry_run=dry_run, collections=collection, allow_deletes=allow_deletes
    )
    with changing(configuration, "merge", collection, merging=path) as (run, store):
        if dedupe and not dry_run:
            fold_duplicates(configuration, store, collection)
        report = run.merge(store, path, merge_options, progress())
    if json:
        print_json(report.to_json())
    else:
        render_merge(report)


@command()
def diff(
    first: Annotated[str, typer.Argument(help="A snapshot file or directory, or 'db'.")],
    second: Annotated[str, typer.Argument(help="A snapshot file or directory, or 'db'.")],
    *,
    json: JsonFlag = False,
) -> None:
    """Show record-level differences between two snapshots ('db' is the live database)."""
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
        str, typer.Argument(metavar="ID", help="A backup id (see dbsync backups).")
    ],
    *,
    collection: Collections = None,
) -> None:
    """Put a backup back (the current state is backed up first, so this is reversible too)."""
    configuration = config()
    with changing(configuration, "restore", collection) as (run, store):
        result = restore_service.restore_backup(configuration, store, backup_id, collection)
        for name, records in result.records.items():
            run.done(name, records)
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
            "--keep", min=0, help="Backups and merge reports to keep (the newest backup always)."
        ),
    ] = prune_service.DEFAULT_KEEP,
    json: JsonFlag = False,
) -> None:
    """Remove old backups and merge reports, unfinished backups and leftover temporary files."""
    configuration = config()
    result = pipeline_service.prune_run(configuration, keep)
    if json:
        print_json(result.to_json())
        return
    removed = len(result.backups) + len(result.unfinished_backups)
    say(
        f"removed {removed} backup(s), {len(result.reports)} report file(s), "
        f"{len(result.temporary_files)} temporary file(s), {result.history_rows} history row(s); "
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
    """Health of this asset: HEALTHY, WARNING or DEGRADED, with what to run about each reason.

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
        int, typer.Option("--limit", "-n", min=1, help="Show at most this many rows.")
    ] = 20,
    json: JsonFlag = False,
) -> None:
    """The audit trail: every export, merge, import and restore, failures included, newest first."""
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


# ---------------------------------------------------------------- git integration

hooks_app = typer.Typer(
    help="Install, remove or inspect the git hooks (pre-push, post-merge, post-rewrite).",
    no_args_is_help=True,
)
app.add_typer(hooks_app, name="hooks")


@command(hooks_app, "install")
def hooks_install() -> None:
    """Install the hooks and configure the merge and diff drivers (a foreign hook still runs)."""
    installed = hooks_service.install(git.require_toplevel(Path.cwd()))
    for line in hooks_service.describe(installed):
        say(line)


@command(hooks_app, "uninstall")
def hooks_uninstall() -> None:
    """Remove dbsync's hooks and put back the ones they replaced; the drivers stay configured."""
    for change in hooks_service.uninstall_hooks(git.require_toplevel(Path.cwd())):
        restored = f" ({change.legacy.name} put back)" if change.legacy else ""
        say(f"{change.name}: {change.action}{restored}")


@command(hooks_app, "status")
def hooks_status(*, json: JsonFlag = False) -> None:
    """Each hook (installed, foreign or missing, legacy kept) and whether the drivers are set."""
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
    name: Annotated[str, typer.Argument(help="pre-push, post-merge or post-rewrite.")],
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
    if not options().quiet or not result.merged:
        err.print(result.message, markup=False)
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


@command()
def sync() -> None:
    """Pull (the hooks merge), export, commit and push: the whole cycle in one command."""
    result = sync_service.sync_run(config(), warn)
    for step in result.steps:
        say(step)


@command()
def agent(
    *,
    every: Annotated[
        str, typer.Option("--every", help="Time between syncs: 30s, 5m, 1h...")
    ] = "5m",
    port: Annotated[
        int, typer.Option("--port", help="Port of the HTTP API (0: any free one).")
    ] = 8765,
    bind: Annotated[
        str,
        typer.Option(
            "--bind", help="Address of the HTTP API; beyond 127.0.0.1 it needs DBSYNC_API_KEY."
        ),
    ] = "127.0.0.1",
) -> None:
    """Sync on a schedule, serve the HTTP status API, and alert when the status degrades."""
    interval = agent_service.parse_interval(every)
    api_key = os.environ.get("DBSYNC_API_KEY") or None
    require_key_for(bind, api_key)
    worker = agent_service.Agent(config, interval, lambda line: out.print(line, markup=False))
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: worker.stop())
    agent_service.run_agent(worker, bind=bind, port=port, api_key=api_key)


@command()
def demo(
    *,
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Run in this folder and keep it (default: a temporary one)."),
    ] = None,
) -> None:
    """Two assets, a bare git remote and real hooks in a temporary folder: the whole cycle."""
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
