"""Assets pushing at once: a push refused because another asset pushed first is merged and
pushed again, without exporting again; a busy application never stops its own asset's sync.

Real processes throughout: the ``dbsync`` console script, git, a bare remote whose hooks make
the race happen at a chosen moment, and an application writing through montydb's own client.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.liveness import Plan, start_writer
from tests.git_helpers import Repo, real_records

RECORDS = real_records()
CLEAN_GIT = (
    "env -u GIT_DIR -u GIT_INDEX_FILE -u GIT_WORK_TREE -u GIT_PREFIX -u GIT_QUARANTINE_PATH "
    "-u GIT_OBJECT_DIRECTORY -u GIT_ALTERNATE_OBJECT_DIRECTORIES"
)


def hook(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def operations(repo: Repo) -> list[str]:
    """Every run in the history, newest first."""
    runs = json.loads(repo.dbsync("history", "--limit", "1000", "--json").out)
    return [entry["operation"] for entry in runs]


def runs_inside_the_last_sync(repo: Repo) -> list[str]:
    """The runs the last sync's git commands started (its hooks, its merge driver): they
    started after it, so the history lists them before it."""
    runs = operations(repo)
    return runs[: runs.index("sync")]


def staged_commit_of(b: Repo) -> str:
    """b's own snapshot commit, pushed beside the branch (``staged``), not onto it."""
    b.import_records(RECORDS[100:120])
    b.dbsync("export", "-q")
    b.git("add", "-A", "database_backup")
    b.git("commit", "-q", "-m", "b's snapshot")
    b.git("push", "-q", "--no-verify", "origin", "HEAD:refs/heads/staged")
    return b.head()


def race_on_receive(remote: Path, *, every_time: bool) -> None:
    """The remote lets another push land while it receives ours: git's "cannot lock ref
    'refs/heads/main': is at X but expected Y". The first time the branch moves to b's staged
    commit; with ``every_time``, every later push meets a new commit on top of it."""
    again = (
        'new=$(git commit-tree -p refs/heads/main -m race "refs/heads/main^{tree}")\n'
        f'    {CLEAN_GIT} git update-ref refs/heads/main "$new"\n'
        if every_time
        else ":\n"
    )
    hook(
        remote / "hooks" / "pre-receive",
        f'cat >/dev/null\nif [ ! -e "$0.done" ]; then\n    touch "$0.done"\n'
        f"    {CLEAN_GIT} git update-ref refs/heads/main refs/heads/staged\n"
        f"else\n    {again}fi\nexit 0\n",
    )


def push_first_after_commit(a: Repo, b: Repo) -> None:
    """b pushes its commit right after a's sync committed its snapshot, before a pushes: a's
    push is then behind the remote ("fetch first")."""
    hook(
        a.root / ".git" / "hooks" / "reference-transaction",
        f'[ "$1" = committed ] || exit 0\ngrep -q " refs/heads/main$" || exit 0\n'
        f'[ -e "$0.done" ] && exit 0\ntouch "$0.done"\n'
        f'{CLEAN_GIT} git -C "{b.root}" push -q --no-verify origin HEAD:refs/heads/main\n',
    )


@pytest.mark.parametrize("race", ["fetch first", "cannot lock ref"])
def test_a_push_that_another_asset_beat_is_merged_and_pushed_without_exporting_again(
    pair: tuple[Repo, Repo], race: str
) -> None:
    a, b = pair
    theirs = staged_commit_of(b)
    if race == "fetch first":
        push_first_after_commit(a, b)
    else:
        race_on_receive(a.root.parent / "remote.git", every_time=False)
    a.import_records(RECORDS[:30])

    done = a.dbsync("sync", "--json")

    result = json.loads(done.out)
    assert result["pushed"] and result["push_attempts"] == 2, done.output
    assert "push: done after 1 retries" in result["steps"]
    assert "another asset pushed first" in done.err
    assert runs_inside_the_last_sync(a).count("export") == 1  # sync's own: the pre-push hook
    # let sync's push go without exporting again
    remote_main = a.git("rev-parse", "origin/main").out.strip()
    assert a.head() == remote_main
    assert a.git("merge-base", "--is-ancestor", theirs, remote_main, ok=False).code == 0
    assert len(a.dump()) == 50  # b's records, merged into a's database after the push
    assert a.git("status", "--porcelain").out == ""


def test_when_the_push_retries_run_out_the_asset_is_merged_and_says_so(
    pair: tuple[Repo, Repo],
) -> None:
    a, b = pair
    staged_commit_of(b)
    remote = a.root.parent / "remote.git"
    race_on_receive(remote, every_time=True)
    a.import_records(RECORDS[:30])

    refused = a.run(["dbsync", "sync"], ok=False, DBSYNC_PUSH_RETRY_SECONDS="0")

    assert refused.code == 6, refused.output
    assert "other assets kept pushing first" in refused.err
    assert "the database and the snapshot agree" in refused.err
    assert "it is not pushed yet" in refused.err and "dbsync sync again" in refused.err
    assert len(a.dump()) == 50  # what b pushed is merged, a's own records kept
    assert a.git("status", "--porcelain").out == ""
    status = json.loads(a.dbsync("status", "--json").out)
    said = [r["message"] for r in status["reasons"] if r["check"] == "sync"]
    assert len(said) == 1 and "not pushed yet" in said[0], status
    (remote / "hooks" / "pre-receive").unlink()
    assert "push: done" in a.dbsync("sync").out
    assert a.git("rev-parse", "origin/main").out.strip() == a.head()


def test_a_busy_application_never_stops_its_own_assets_sync(
    pair: tuple[Repo, Repo], tmp_path: Path
) -> None:
    """The application writes every few milliseconds: sync's push carries the snapshot sync
    exported; the pre-push hook does not export the newer writes and stop the push."""
    a, _ = pair
    a.import_records(RECORDS[:50])
    stop = tmp_path / "stop"
    writer = start_writer(a.root, Plan(write_pause=(0.005, 0.02)), stop, 0)
    try:
        wait_for_writes(a)
        results = [a.dbsync("sync", ok=False) for _ in range(2)]
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert [result.code for result in results] == [0, 0], results[-1].output
    # each sync's own export, recorded as a run of its own; no pre-push export among them
    assert operations(a)[:4] == ["export", "sync", "export", "sync"]
    assert a.git("rev-parse", "origin/main").out.strip() == a.head()


def wait_for_writes(repo: Repo, attempts: int = 600) -> None:
    """Until the application's first writes are in the database (each look is one dbsync run)."""
    for _ in range(attempts):
        if len(repo.dump()) > 50:
            return
    raise AssertionError("the application wrote nothing")


def test_sync_pushes_on_a_stock_git_with_the_hook_script_of_an_older_dbsync(
    pair: tuple[Repo, Repo],
) -> None:
    """A clone whose pre-push script predates SYNC_EXPORTED still runs dbsync's pre-push,
    which lets sync's own push go."""
    a, _ = pair
    script = a.root / ".git" / "hooks" / "pre-push"
    text = script.read_text().replace('[ -z "${DBSYNC_SYNC_EXPORTED:-}" ] || exit 0\n', "")
    script.write_text(text)
    a.import_records(RECORDS[:5])
    assert "push: done" in a.dbsync("sync").out
    assert runs_inside_the_last_sync(a) == ["export"]  # sync's own; the pre-push's, none
