"""Start-up: the CLI imports what a command needs when it runs (no timing here: the benchmark
measures it). Every git hook and driver starts the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dbsync import cli, launch
from dbsync.runs import import_file, prune, sync
from tests.git_helpers import DBSYNC

LOADED = "import sys, dbsync.cli; print(__import__('json').dumps(sorted(sys.modules)))"


def modules_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_the_cli_loads_no_store_output_or_server_library():
    loaded = modules_after(LOADED)
    heavy = {"pymongo", "montydb", "rich", "http.server", "bson", "sqlite3", "pydantic"}
    assert heavy & loaded == set()
    assert {name for name in loaded if name.startswith(("dbsync.runs", "dbsync.agent"))} == set()


def test_the_cli_copies_of_two_service_values_agree_with_the_services():
    """Typer reads them when it builds the command tree, before any service is imported."""
    assert [mode.value for mode in cli.ImportMode] == [m.value for m in import_file.ImportMode]
    assert cli.DEFAULT_KEEP == prune.DEFAULT_KEEP
    assert cli.PUSH_RETRY_SECONDS == sync.DEFAULT_PUSH_RETRY_SECONDS
    assert cli.PUSH_RETRY_VARIABLE == sync.PUSH_RETRY_VARIABLE


@pytest.mark.parametrize(
    ("arguments", "quick"),
    [
        (["--version"], True),
        (["hook", "post-merge", "0"], True),
        (["hook", "pre-push", "origin", "git@example.invalid:x.git"], True),
        (["merge-driver", "b", "o", "t"], True),
        (["merge-driver", "b", "o", "t", "x.jsonl"], True),
        (["hook"], False),
        (["-q", "hook", "post-merge", "0"], False),
        (["hook", "post-merge", "--uri", "embedded://x"], False),
        (["merge-driver", "b", "o"], False),
        (["merge-driver", "b", "o", "t", "p", "extra"], False),
        (["--version", "-q"], False),
        (["status"], False),
        ([], False),
    ],
)
def test_only_the_exact_calls_git_makes_skip_the_cli(arguments, quick):
    assert (launch.called_by_git(arguments) is not None) == quick


def run(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DBSYNC, *arguments], cwd=folder, capture_output=True, text=True, check=False
    )


def test_the_quick_calls_behave_as_through_typer(tmp_path):
    """The same output and exit code, whether typer parses the call or not (``-q`` sends the
    second through typer; a hook outside a dbsync project does nothing, quietly)."""
    assert run(tmp_path, "--version").stdout == run(tmp_path, "--version", "-q").stdout
    assert run(tmp_path, "--version").stdout == "dbsync 0.1.0\n"
    for hook in (["hook", "post-merge", "0"], ["hook", "post-commit"]):
        quick, typed = run(tmp_path, *hook), run(tmp_path, "-q", *hook)
        assert (quick.returncode, quick.stdout, quick.stderr) == (0, "", "")
        assert (typed.returncode, typed.stdout, typed.stderr) == (0, "", "")
    wrong = run(tmp_path, "hook", "pre-pull")
    assert wrong.returncode == 2 and "unknown hook 'pre-pull'" in wrong.stderr
    missing = run(tmp_path, "merge-driver", "no-base", "no-ours", "no-theirs")
    assert missing.returncode == 1 and "cannot merge no-ours record by record" in missing.stderr


HOOK_LOADED = """
import json, sys
sys.argv = ["dbsync", "hook", "post-merge", "0"]
import dbsync.launch
try:
    dbsync.launch.main()
except SystemExit as done:
    assert not done.code, done.code
print(json.dumps(sorted(sys.modules)))
"""


def test_a_hook_with_nothing_to_merge_loads_no_service_store_or_snapshot_code(pair):
    """A pull that brought code and no snapshot: the post-merge hook finds that out with git
    alone, importing no store, no snapshot format, no service, and not the CLI (typer)."""
    a, _ = pair
    a.import_records([{"_id": "one", "timestamp": "2025-01-01T00:00:00Z"}])
    a.push_snapshot()  # the snapshot committed: a hook with snapshot files to consider
    a.git("checkout", "-q", "-b", "code")
    (a.root / "code.txt").write_text("code\n")
    a.git("add", "code.txt")
    a.git("commit", "-q", "-m", "code")
    a.git("checkout", "-q", "main")
    a.git("merge", "-q", "--no-ff", "--no-edit", "code")  # ORIG_HEAD: main before the merge
    done = a.run([sys.executable, "-c", HOOK_LOADED], PYTHONSAFEPATH="1")
    loaded = set(json.loads(done.out.splitlines()[-1]))
    heavy = {"pymongo", "montydb", "rich", "bson", "sqlite3", "orjson", "xxhash", "pydantic"}
    assert heavy & loaded == set()
    assert {"typer", "click", "dbsync.cli", "socket", "secrets"} & loaded == set()
    services = (
        "dbsync.runs",
        "dbsync.agent",
        "dbsync.edges.store",
        "dbsync.edges.embedded",
        "dbsync.core.snapshot",
    )
    assert {name for name in loaded if name.startswith(services)} == set()
