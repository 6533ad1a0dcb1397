"""A second machine, as the README says (issue 22, items 10-13): every flag ``init`` is given is
kept or refused with the reason; a plain ``git pull`` works on git's default configuration; a
clone that was never set up says so before it touches a store; a command refused with a usage
error writes nothing.

Real git repositories, the real console script, a HOME whose git config sets nothing about
pulls (``tests.git_helpers``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.git_helpers import Repo, init_pair, real_records

UNREACHABLE = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"


@pytest.fixture
def clone(tmp_path: Path, git_env: dict[str, str]) -> Repo:
    """A clone of a project whose tracked dbsync.toml names the database ``shop``; the clone
    itself was never set up (no ``dbsync init`` ran in it)."""
    _, clone = init_pair(tmp_path, git_env, set_up_clone=False)
    return clone


def local_toml(repo: Repo) -> str:
    return (repo.root / "dbsync.local.toml").read_text()


# ---------------------------------------------------------------- item 11: init keeps its flags


def test_init_database_on_a_clone_goes_to_the_local_config(clone: Repo) -> None:
    done = clone.dbsync("init", "--database", "other", "--asset", "b")
    assert 'database = "other"' in local_toml(clone)
    assert "dbsync.local.toml" in done.out and '"other"' in done.out
    assert json.loads(clone.dbsync("status", "--json").out)["database"] == "other"
    assert 'database = "shop"' in (clone.root / "dbsync.toml").read_text()  # shared: untouched


def test_init_with_the_shared_database_adds_nothing(clone: Repo) -> None:
    clone.dbsync("init", "--database", "shop", "--asset", "b")
    assert "database =" not in local_toml(clone)


def test_a_second_init_adds_a_new_flag_and_refuses_a_contradicting_one(clone: Repo) -> None:
    clone.dbsync("init", "--asset", "b")
    clone.dbsync("init", "--database", "other")
    assert 'asset = "b"' in local_toml(clone) and 'database = "other"' in local_toml(clone)
    before = local_toml(clone)
    refused = clone.dbsync("init", "--asset", "c", ok=False)
    assert refused.code == 2, refused.output
    assert 'dbsync.local.toml already sets asset = "b"' in refused.err
    assert "edit dbsync.local.toml" in refused.err
    again = clone.dbsync("init", "--uri", "embedded://elsewhere", ok=False)
    assert again.code == 2 and "uri" in again.err
    assert local_toml(clone) == before  # nothing written


def test_init_refuses_config_it_would_not_use(clone: Repo) -> None:
    refused = clone.dbsync("init", "--config", "other.toml", ok=False)
    assert refused.code == 2 and "--config" in refused.err
    assert not (clone.root / "dbsync.local.toml").exists()


# ---------------------------------------------------------------- item 13: a clone not set up


@pytest.mark.parametrize(
    "command",
    [
        ["merge", "database_backup"],
        ["export"],
        ["import", "records.json", "-c", "pnls"],
        ["stats"],
        ["dump", "pnls"],
        ["status"],
        ["sync"],
        ["prune"],
    ],
)
def test_a_clone_not_set_up_says_so_and_touches_nothing(clone: Repo, command: list[str]) -> None:
    (clone.root / "records.json").write_text(json.dumps(real_records()[:3]))
    refused = clone.dbsync(*command, ok=False)
    assert refused.code == 2, refused.output
    assert "this clone is not set up" in refused.err
    assert "dbsync init" in refused.err
    assert not (clone.root / "database_sync").exists()  # no store, no state, no lock


def test_a_clone_with_a_uri_given_needs_no_local_config(clone: Repo) -> None:
    given = clone.run(["dbsync", "stats", "--json"], DBSYNC_URI="embedded://database_sync/db")
    assert json.loads(given.out)["database"] == "shop"


def test_init_uri_warns_when_the_database_does_not_answer(clone: Repo) -> None:
    done = clone.dbsync("init", "--uri", UNREACHABLE, "--asset", "b")
    assert "does not answer" in done.err and "127.0.0.1:9" in done.err
    assert UNREACHABLE in local_toml(clone)  # kept: the server may simply be down now
    assert "post-merge" in done.out  # the rest of init ran


def test_init_refuses_a_uri_that_is_not_one(clone: Repo) -> None:
    refused = clone.dbsync("init", "--uri", "postgres://h/db", ok=False)
    assert refused.code == 2 and "unsupported database URI" in refused.err
    assert not (clone.root / "dbsync.local.toml").exists()


# ------------------------------------------------------------- item 10: usage errors write nothing


@pytest.mark.parametrize("command", [["sync"], ["export"], ["merge", "x"], ["prune"]])
def test_a_command_outside_a_project_writes_nothing(tmp_path: Path, git_env, command) -> None:
    folder = tmp_path / "not-a-project"
    folder.mkdir()
    Repo(folder, git_env).git("init", "-q")
    refused = Repo(folder, git_env).dbsync(*command, ok=False)
    assert refused.code == 2, refused.output
    assert "not a dbsync project" in refused.err or "does not exist" in refused.err
    assert sorted(path.name for path in folder.iterdir()) == [".git"]


# ---------------------------------------------------------------- item 12: a plain git pull


def test_a_plain_git_pull_merges_diverged_snapshots_on_git_s_defaults(clone: Repo) -> None:
    a = Repo(clone.root.parent / "a", clone.env)
    assert a.git("config", "--get", "pull.rebase", ok=False).out.strip() == "false"
    done = clone.dbsync("init", "--asset", "b")
    assert "pull.rebase false" in done.out
    assert clone.git("config", "--local", "--get", "pull.rebase").out.strip() == "false"
    records = real_records()
    a.import_records(records[:20])
    a.push_snapshot()
    clone.import_records(records[20:40])
    first = clone.git("push", ok=False)
    assert first.code == 1, first.output  # pre-push committed b's snapshot: the two diverge
    pulled = clone.git("pull")
    assert "divergent" not in pulled.output
    assert len(clone.dump()) == 40
    clone.git("push")
    a.git("pull")
    assert a.dump() == clone.dump()


def test_init_leaves_a_pull_setting_the_user_chose(clone: Repo) -> None:
    clone.git("config", "--local", "pull.ff", "only")
    done = clone.dbsync("init", "--asset", "b")
    assert clone.git("config", "--local", "--get", "pull.rebase", ok=False).code == 1
    assert "pull.rebase" not in done.out
    status = json.loads(clone.dbsync("status", "--json").out)
    (warning,) = [reason for reason in status["reasons"] if reason["check"] == "pull"]
    assert "pull.ff=only" in warning["message"] and "divergent" in warning["message"]


def test_hooks_uninstall_undoes_the_pull_setting_init_made(clone: Repo) -> None:
    clone.dbsync("init", "--asset", "b")
    undone = clone.dbsync("hooks", "uninstall")
    assert "pull.rebase" in undone.out
    assert clone.git("config", "--local", "--get", "pull.rebase", ok=False).code == 1
    clone.git("config", "--local", "pull.rebase", "true")  # the user's own, afterwards
    clone.dbsync("hooks", "install")
    clone.dbsync("hooks", "uninstall")
    assert clone.git("config", "--get", "pull.rebase").out.strip() == "true"  # not dbsync's


def test_status_warns_where_a_pull_would_stop_on_divergent_branches(clone: Repo) -> None:
    clone.dbsync("init", "--asset", "b")
    assert not [
        r
        for r in json.loads(clone.dbsync("status", "--json").out)["reasons"]
        if r["check"] == "pull"
    ]
    clone.git("config", "--local", "--unset", "pull.rebase")
    status = json.loads(clone.dbsync("status", "--json").out)
    (warning,) = [reason for reason in status["reasons"] if reason["check"] == "pull"]
    assert warning["level"] == "WARNING" and "divergent branches" in warning["message"]
    assert "git config pull.rebase false" in warning["fix"]
