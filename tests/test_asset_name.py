"""Asset names: a default that differs between two clones, and a warning when two share one."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from dbsync.config import load_config
from dbsync.core.asset_names import Commit, namesakes
from tests.git_helpers import Repo, real_records

SUBJECT = "dbsync: laptop snapshot (190 records)"


def test_two_clones_on_one_machine_default_to_different_names(tmp_path: Path) -> None:
    for name in ("bot", "bot-staging"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dbsync.toml").write_text('database = "shop"\n')
    names = {load_config(cwd=tmp_path / name).asset for name in ("bot", "bot-staging")}
    host = socket.gethostname()
    assert names == {f"{host}-bot", f"{host}-bot-staging"}


def test_a_commit_naming_this_asset_that_never_was_head_here_is_a_namesake() -> None:
    reflog = [
        ("rebased", 2_500, "rebase (pick): " + SUBJECT),
        ("theirs", 2_100, "pull: Fast-forward"),
        ("own", 2_000, "commit: " + SUBJECT),
        ("clone", 1_000, "clone: from /srv/bot.git"),
    ]
    theirs = Commit("theirs", 1_500, SUBJECT)
    commits = [
        Commit("rebased", 2_500, SUBJECT),
        Commit("own", 2_000, SUBJECT),
        theirs,
        Commit("x", 1_600, "fix a typo"),
    ]
    assert namesakes("laptop", commits, reflog) == [theirs]
    assert namesakes("server", commits, reflog) == []


def test_commits_older_than_the_clone_or_without_a_reflog_are_not_judged() -> None:
    before = Commit("old", 500, SUBJECT)
    assert namesakes("laptop", [before], [("clone", 1_000, "clone: from x")]) == []
    assert namesakes("laptop", [Commit("new", 1_500, SUBJECT)], []) == []


def rename(repo: Repo, asset: str) -> None:
    local = repo.root / "dbsync.local.toml"
    lines = [
        f'asset = "{asset}"' if line.startswith("asset =") else line
        for line in local.read_text().splitlines()
    ]
    local.write_text("\n".join(lines) + "\n")


def asset_reasons(repo: Repo) -> list[dict[str, str]]:
    document = json.loads(repo.dbsync("status", "--json").out)
    return [reason for reason in document["reasons"] if reason["check"] == "asset"]


def test_status_warns_when_another_clone_signs_with_this_name(pair: tuple[Repo, Repo]) -> None:
    a, b = pair
    rename(a, "same")
    rename(b, "same")
    a.import_records(real_records()[:5])
    a.push_snapshot()
    b.git("pull", "-q")
    assert asset_reasons(a) == []  # its own commit
    warned = asset_reasons(b)
    assert len(warned) == 1 and "'same'" in warned[0]["message"]
    rename(b, "b")
    assert asset_reasons(b) == []
