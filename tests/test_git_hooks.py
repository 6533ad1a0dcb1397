"""Installing the hooks: init, foreign hooks, worktrees, core.hooksPath, a missing dbsync."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dbsync.edges import installer as hooks
from tests.git_helpers import DBSYNC, Repo, Run, real_records, write_snapshot

RECORDS = real_records()
HOOKS = ("pre-push", "post-merge", "post-rewrite", "post-commit")
INSTALLING_PYTHON = Path(DBSYNC).read_text().splitlines()[0].removeprefix("#!")  # its shebang


def installed_package() -> str:
    """The folder of the dbsync that python imports, which the scripts look for: the
    installed one (``pip install .``), not this checkout, which the tests import."""
    found = subprocess.run(
        [INSTALLING_PYTHON, "-c", "import dbsync; print(dbsync.__file__)"],
        cwd="/",
        env={**os.environ, "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return str(Path(found.stdout.strip()).resolve().parent)


PACKAGE = installed_package()

# A foreign hook that logs its name, its arguments and its input; REFUSE=1 makes it fail.
FOREIGN = """#!/bin/sh
{ echo "$(basename "$0") $*"; cat; echo "--"; } >> "$(git rev-parse --show-toplevel)/../foreign.log"
[ -z "$REFUSE" ]
"""


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, git_env: dict[str, str]) -> None:
    """The same isolation for git run inside this process (the installer called directly)."""
    for name in ("HOME", "GIT_CONFIG_NOSYSTEM"):
        monkeypatch.setenv(name, git_env[name])


def hooks_dir(repo: Repo) -> Path:
    return repo.root / ".git" / "hooks"


def status(repo: Repo) -> dict[str, Any]:
    """``dbsync hooks status --json``, run for real."""
    result: dict[str, Any] = json.loads(repo.dbsync("hooks", "status", "--json").out)
    return result


def states(repo: Repo) -> dict[str, tuple[str, bool]]:
    """The same figures read in this process (a subprocess costs half a second)."""
    setup = hooks.git_setup(repo.root, repo.root / "database_backup")
    return {hook.name: (hook.state, hook.legacy) for hook in setup.hooks}


def test_init_sets_up_the_git_integration_idempotently(tmp_path: Path, git_env: dict) -> None:
    repo = Repo(tmp_path / "project", git_env)
    repo.root.mkdir()
    repo.git("init", "-q")
    first = repo.dbsync("init", "--database", "shop", "--asset", "a").out
    assert "created .gitattributes entry" in first
    attributes = (repo.root / ".gitattributes").read_text()
    assert attributes == "database_backup/*.jsonl -text merge=dbsync diff=dbsync\n"
    check = repo.git("check-attr", "merge", "diff", "--", "database_backup/pnls.jsonl").out
    assert "merge: dbsync" in check and "diff: dbsync" in check
    python = shlex.quote(INSTALLING_PYTHON)
    driver = repo.git("config", "--local", "merge.dbsync.driver").out.strip()
    assert driver == f"PYTHONSAFEPATH=1 {python} -m dbsync merge-driver %O %A %B %P"
    for name in HOOKS:
        script = (hooks_dir(repo) / name).read_text()
        assert hooks.MARKER in script
        assert f"DBSYNC_PYTHON={python}\n" in script
        assert f"DBSYNC_PACKAGE={shlex.quote(PACKAGE)}\n" in script
    second = repo.dbsync("init").out
    assert "already configured" in second and "created" not in second
    assert (repo.root / ".gitattributes").read_text() == attributes
    assert all(hook["state"] == "installed" for hook in status(repo)["hooks"].values())


def test_init_outside_git_still_works_and_says_git_was_skipped(
    tmp_path: Path, git_env: dict
) -> None:
    repo = Repo(tmp_path / "plain", git_env)
    repo.root.mkdir()
    result = repo.dbsync("init", "--database", "shop")
    assert "not a git repository: skipped .gitattributes" in result.out
    assert (repo.root / "dbsync.toml").is_file()
    assert not (repo.root / ".gitattributes").exists()


def test_drivers_run_through_a_python_path_with_spaces(
    pair: tuple[Repo, Repo], isolated: None
) -> None:
    """git runs driver commands through the shell: the baked path must survive quoting."""
    a, _ = pair
    spaced = a.root.parent / "my python" / "python"
    spaced.parent.mkdir()
    spaced.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    spaced.chmod(0o755)
    hooks.configure_drivers(a.root, str(spaced))
    a.import_records(RECORDS[:3])
    a.dbsync("export", "-q")
    a.git("add", "database_backup")
    diff = a.git("diff", "--cached").out
    assert diff.startswith("diff --dbsync a/database_backup/pnls.jsonl")
    assert "3 record(s) differ" in diff


def foreign_hooks(repo: Repo) -> None:
    """Replace dbsync's hooks by foreign pre-push and post-merge hooks."""
    hooks.uninstall_hooks(repo.root)
    for name in ("pre-push", "post-merge"):
        path = hooks_dir(repo) / name
        path.write_text(FOREIGN)
        path.chmod(0o755)


def merge_incoming_snapshot(repo: Repo) -> Run:
    """Merge a branch bringing another asset's snapshot (what a pull does, without a remote)."""
    repo.git("switch", "-q", "-c", "incoming")
    write_snapshot(repo.root / "database_backup" / "pnls.jsonl", RECORDS[:5])
    repo.git("add", "database_backup")
    repo.git("commit", "-q", "-m", "snapshot from elsewhere")
    repo.git("switch", "-q", "main")
    return repo.git("merge", "incoming")


def test_a_foreign_hook_is_kept_still_run_with_its_input_and_restored(
    pair: tuple[Repo, Repo], isolated: None
) -> None:
    _, b = pair
    foreign_hooks(b)
    installed = b.dbsync("hooks", "install").out
    assert "kept as pre-push.legacy and still runs" in installed
    assert (hooks_dir(b) / "pre-push.legacy").read_text() == FOREIGN
    assert states(b)["pre-push"] == ("installed", True)
    assert states(b)["post-rewrite"] == ("installed", False)

    merged = merge_incoming_snapshot(b)
    assert "merged database_backup into the database" in merged.err  # dbsync ran too
    log = b.root.parent / "foreign.log"
    assert log.read_text() == "post-merge.legacy 0\n--\n"

    b.import_records(RECORDS[5:8])
    assert b.git("push", ok=False).code == 1  # dbsync committed the snapshot
    refused = b.git("push", ok=False, REFUSE="1")  # the foreign hook refuses: dbsync never runs
    assert refused.code == 1 and "dbsync:" not in refused.err
    remote = str(b.root.parent / "remote.git")
    entry = log.read_text().splitlines()[-3:]
    assert entry[0] == f"pre-push.legacy origin {remote}"
    assert entry[1].startswith(f"refs/heads/main {b.head()} refs/heads/main ")
    b.push_snapshot()

    # A push that only deletes a branch: dbsync reads the same ref lines and exports nothing.
    b.git("push", "-q", "origin", "HEAD:refs/heads/topic")
    b.import_records(RECORDS[8:9])
    deleting = b.git("push", "origin", ":refs/heads/topic")
    assert "dbsync:" not in deleting.err
    assert " 0000000000000000000000000000000000000000 " in log.read_text().splitlines()[-2]

    removed = b.dbsync("hooks", "uninstall").out
    assert "pre-push: removed (pre-push.legacy put back)" in removed
    assert (hooks_dir(b) / "pre-push").read_text() == FOREIGN
    assert not (hooks_dir(b) / "pre-push.legacy").exists()
    assert not (hooks_dir(b) / "post-rewrite").exists()
    assert states(b) == {
        "pre-push": ("foreign", False),
        "post-merge": ("foreign", False),
        "post-rewrite": ("missing", False),
        "post-commit": ("missing", False),
    }


def test_install_refuses_rather_than_overwrite_a_legacy_hook(pair: tuple[Repo, Repo]) -> None:
    a, _ = pair
    (hooks_dir(a) / "pre-push.legacy").write_text(FOREIGN)
    (hooks_dir(a) / "pre-push").write_text("#!/bin/sh\necho another tool\n")
    refused = a.dbsync("hooks", "install", ok=False)
    assert refused.code == 5
    assert "pre-push.legacy already exists" in refused.err and "hint:" in refused.err
    assert (hooks_dir(a) / "pre-push").read_text() == "#!/bin/sh\necho another tool\n"


def test_a_linked_worktree_shares_the_hooks(pair: tuple[Repo, Repo]) -> None:
    a, _ = pair
    a.git("worktree", "add", "-q", "-b", "side", "../a-side")
    side = Repo(a.root.parent / "a-side", a.env)
    state = status(side)
    assert state["hooks_dir"] == str(hooks_dir(a).resolve()) and state["complete"]
    side.dbsync("init", "--asset", "side")  # this worktree's own database and local config
    side.import_records(RECORDS[:4])
    pushed = side.git("push", "-u", "origin", "side", ok=False)
    assert pushed.code == 1 and "push again" in pushed.err
    assert side.git("log", "-1", "--format=%s").out.strip() == "dbsync: side snapshot (4 records)"


def test_core_hooks_path_inside_the_work_tree_gets_shareable_scripts(
    pair: tuple[Repo, Repo],
) -> None:
    a, _ = pair
    a.git("config", "core.hooksPath", "hooks")
    installed = a.dbsync("hooks", "install").out
    assert "core.hooksPath is set" in installed and "shared through git" in installed
    shipped = hooks.scripts_dir()
    for name in HOOKS:  # no Python of this machine in a tracked folder: the shipped scripts
        assert (a.root / "hooks" / name).read_text() == (shipped / name).read_text()
    assert status(a)["hooks_dir"] == str(a.root / "hooks")
    a.import_records(RECORDS[:2])
    pushed = a.git("push", ok=False)  # the unbaked script runs the dbsync on PATH
    assert pushed.code == 1 and "push again" in pushed.err


def test_core_hooks_path_outside_the_work_tree_gets_the_baked_python(
    pair: tuple[Repo, Repo], tmp_path: Path, isolated: None
) -> None:
    a, _ = pair
    outside = tmp_path / "my-hooks"
    a.git("config", "core.hooksPath", str(outside))
    installed = hooks.install(a.root, "/opt/py/bin/python")
    assert installed.place.directory == outside and not installed.place.in_work_tree
    assert "DBSYNC_PYTHON=/opt/py/bin/python\n" in (outside / "pre-push").read_text()
    assert not (hooks_dir(a) / "pre-push").read_text() == (outside / "pre-push").read_text()


def test_hooks_without_dbsync_warn_once_and_never_block_git(
    pair: tuple[Repo, Repo], tmp_path: Path, isolated: None
) -> None:
    a, b = pair
    no_dbsync = tmp_path / "python-without-dbsync"
    no_dbsync.write_text("#!/bin/sh\necho \"No module named 'dbsync'\" >&2\nexit 1\n")
    no_dbsync.chmod(0o755)
    hooks.install(b.root, str(no_dbsync))
    a.import_records(RECORDS[:3])
    a.push_snapshot()
    bare_path = "/usr/bin:/bin"
    pulled = b.git("pull", PATH=bare_path)
    assert pulled.err.count("dbsync: not installed here") == 1
    b.git("commit", "-q", "--allow-empty", "-m", "work", PATH=bare_path)
    pushed = b.git("push", PATH=bare_path)
    assert pushed.err.count("dbsync: not installed here") == 1
    assert b.head() == b.git("rev-parse", "origin/main").out.strip()


def test_hooks_whose_package_moved_find_dbsync_by_importing_it(
    pair: tuple[Repo, Repo], isolated: None
) -> None:
    """The scripts see dbsync by a file test where the installing python had it (no python
    started for that); a package reinstalled elsewhere in that python is still found, by
    importing it, and the pull's merge still reaches the database."""
    a, b = pair
    for name in HOOKS:
        script = hooks_dir(b) / name
        baked = f"DBSYNC_PACKAGE={shlex.quote(PACKAGE)}\n"
        script.write_text(script.read_text().replace(baked, "DBSYNC_PACKAGE=/nowhere/dbsync\n"))
    a.import_records(RECORDS[:3])
    a.push_snapshot()
    pulled = b.git("pull", PATH="/usr/bin:/bin")
    assert "not installed here" not in pulled.err
    assert len(b.dump()) == 3


def test_a_hook_run_by_dbsync_itself_does_nothing(pair: tuple[Repo, Repo]) -> None:
    a, _ = pair
    a.import_records(RECORDS[:2])
    script = str(hooks_dir(a) / "pre-push")
    ran = a.run([script, "origin", "url"], stdin="", DBSYNC_HOOK="pre-push")
    assert ran.code == 0 and ran.err == ""
    assert a.git("status", "--porcelain").out == ""  # nothing exported
