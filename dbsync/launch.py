"""The ``dbsync`` console script and ``python -m dbsync``.

Git starts dbsync on every pull, push and commit: the hook scripts run ``dbsync hook NAME
ARGS...`` and the driver setting ``dbsync merge-driver %O %A %B %P``. Those exact calls (and
``--version``) run here without importing the CLI, typer or rich: a hook that finds nothing to
do costs the interpreter and one git call. Any other form (an option, a wrong count of
arguments, every other command) goes to the CLI, which parses it as always.

The commands ``dbsync hook`` and ``dbsync merge-driver`` in the CLI run the same two functions
(``hook_runs.hook_call``, ``merge_driver.driver_call``), so that what git sees does not depend on
which way the call came in. The exit codes are the
CLI's (PRODUCT.md §1): a ``DbsyncError`` its own, Ctrl-C 130, and anything else is a bug,
reported by the CLI's crash log (exit 1).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dbsync import __version__
from dbsync.errors import INTERRUPTED_EXIT_CODE, INTERRUPTED_MESSAGE, DbsyncError

if TYPE_CHECKING:
    from dbsync.config import Config


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")


def _default_config() -> Config:
    from dbsync.config import load_config

    return load_config(flags={"uri": None, "database": None})


def called_by_git(arguments: list[str]) -> Callable[[], int] | None:
    """The calls git makes, exactly as the hook scripts and the driver setting write them,
    and ``--version``: each as a function that returns the exit code. None for any other form,
    which the CLI parses."""
    if arguments == ["--version"]:
        return lambda: print(f"dbsync {__version__}") or 0
    if not arguments or any(argument.startswith("-") for argument in arguments):
        return None
    name, *rest = arguments
    if name == "hook" and rest:
        return lambda: _hook_call(rest[0], rest[1:])
    if name == "merge-driver" and len(rest) in (3, 4):
        files = (Path(rest[0]), Path(rest[1]), Path(rest[2]))
        path = rest[3] if len(rest) == 4 else None
        return lambda: _driver_call(files, path)
    return None


def _hook_call(name: str, args: list[str]) -> int:
    from dbsync.integration.hook_runs import hook_call

    return hook_call(name, args, _default_config(), _stderr)


def _driver_call(files: tuple[Path, Path, Path], path: str | None) -> int:
    from dbsync.integration.merge_driver import driver_call

    return driver_call(files, path, quiet=False, write=_stderr)


def _guarded(name: str, call: Callable[[], int]) -> int:
    """The CLI's exit codes for a call that did not go through it."""
    try:
        return call()
    except DbsyncError as error:
        _stderr(f"error: {error}")
        return error.exit_code
    except KeyboardInterrupt:
        _stderr(INTERRUPTED_MESSAGE)
        return INTERRUPTED_EXIT_CODE
    except Exception as error:  # a bug, or a full disk: the CLI's crash log tells which
        from dbsync import cli

        return cli.exit_code_of_unexpected(error, name)


def main() -> None:
    """The console script."""
    arguments = sys.argv[1:]
    call = called_by_git(arguments)
    if call is None:
        from dbsync import cli

        cli.main()
        return
    sys.exit(_guarded(arguments[0], call))
