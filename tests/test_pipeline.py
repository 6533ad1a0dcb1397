"""Every changing run, from each entry point, goes through the one pipeline (dbsync.runs.pipeline):
recorded in the history, pending merges retried first, pruned after a merge.

Each test starts from the same asset ``b``: twelve old backups (more than prune keeps) and a
pending merge of a folder another asset mailed, then runs one entry point through the real
console script and real git.
"""

import json

import pytest

from dbsync.config import load_config
from dbsync.edges import backups
from dbsync.edges.state import reading_state
from dbsync.runs.pending import queue_pending
from dbsync.runs.prune import DEFAULT_KEEP
from tests.git_helpers import Repo, real_records, write_snapshot
from tests.test_agent import RunningAgent

RECORDS = real_records()
MAILED = RECORDS[150:155]  # records only the pending merge brings
PUSHED = RECORDS[:20]  # records asset a pushes


@pytest.fixture
def assets(pair: tuple[Repo, Repo]) -> tuple[Repo, Repo]:
    a, b = pair
    config = load_config(cwd=b.root, environ={})
    for number in range(DEFAULT_KEEP + 2):
        stamp = f"20200101T0000{number:02d}000Z-old{number:02d}"
        folder = backups.backup_folder(config.state_dir, stamp)
        folder.mkdir(parents=True)
        (folder / "pnls.jsonl").write_text("old\n")
        info = backups.BackupInfo(stamp, "2020-01-01T00:00:00+00:00", ["pnls"], "test")
        backups.write_meta(folder, info)
    write_snapshot(b.root / "mailed" / "pnls.jsonl", MAILED)
    queue_pending(config, b.root / "mailed", None, "the database was down")
    a.import_records(PUSHED)
    a.push_snapshot()
    return a, b


def history(repo: Repo) -> list[tuple[str, str]]:
    entries = json.loads(repo.dbsync("history", "--json", "--limit", "50").out)
    return [(entry["operation"], entry["status"]) for entry in entries]


def assert_went_through_the_pipeline(repo: Repo, operation: str) -> None:
    """Recorded, the pending merge retried (its records are in, nothing waits), pruned."""
    config = load_config(cwd=repo.root, environ={})
    with reading_state(config.state_dir) as state:
        assert state is not None and state.list_pending() == []
    ids = {json.loads(line)["_id"] for line in repo.dump()}
    assert {record["_id"] for record in MAILED} <= ids
    assert (operation, "success") in history(repo)
    assert len(backups.list_backups(config.state_dir)) <= DEFAULT_KEEP


def test_a_command(assets: tuple[Repo, Repo]) -> None:
    _, b = assets
    exported = b.dbsync("export")
    assert exported.out.index("retrying the pending merge of mailed") < exported.out.index("pnls:")
    assert_went_through_the_pipeline(b, "export")


def test_a_retried_pending_merge_is_recorded_as_a_merge(assets: tuple[Repo, Repo]) -> None:
    """The retry goes through the merge every run makes: one history row per collection."""
    _, b = assets

    def merges() -> list[tuple[str, str, int]]:
        entries = json.loads(b.dbsync("history", "--json", "--limit", "50").out)
        return [
            (e["collection"], e["status"], e["records"])
            for e in entries
            if e["operation"] == "merge"
        ]

    before = merges()
    b.dbsync("export")
    assert merges() == [("pnls", "success", len(MAILED)), *before]


def test_the_post_merge_hook(assets: tuple[Repo, Repo]) -> None:
    _, b = assets
    pulled = b.git("pull")
    retried = pulled.err.index("retrying the pending merge of mailed")
    assert retried < pulled.err.index("dbsync: merged")
    assert_went_through_the_pipeline(b, "merge")
    assert len(b.dump()) == len(PUSHED) + len(MAILED)


def test_sync(assets: tuple[Repo, Repo]) -> None:
    _, b = assets
    synced = b.dbsync("sync")
    assert "retrying the pending merge of mailed" in synced.err  # before its steps print
    assert_went_through_the_pipeline(b, "sync")
    assert ("merge", "success") in history(b)  # the post-merge hook's, inside the sync's run
    assert len(b.dump()) == len(PUSHED) + len(MAILED)


def test_the_agent(assets: tuple[Repo, Repo]) -> None:
    _, b = assets
    agent = RunningAgent(b)
    try:
        agent.wait_for(r"cycle 1: success")
    finally:
        assert agent.stop() == 0
    assert_went_through_the_pipeline(b, "sync")
    assert len(b.dump()) == len(PUSHED) + len(MAILED)


def export_rows(repo: Repo) -> list[tuple[str, str, int]]:
    entries = json.loads(repo.dbsync("history", "--json", "--limit", "50").out)
    return [
        (entry["collection"], entry["status"], entry["records"])
        for entry in entries
        if entry["operation"] == "export"
    ]


@pytest.mark.parametrize("entry_point", ["command", "pre-push hook", "sync"])
def test_every_entry_point_records_its_export_per_collection(
    pair: tuple[Repo, Repo], entry_point: str
) -> None:
    """The same history row for an export, whoever started it; ``stats`` reads it back."""
    a, _ = pair
    a.import_records(PUSHED)
    if entry_point == "command":
        a.dbsync("export")
    elif entry_point == "pre-push hook":
        a.push_snapshot()
    else:
        a.dbsync("sync")
    assert export_rows(a)[0] == ("pnls", "success", len(PUSHED))
    stats = json.loads(a.dbsync("stats", "--json").out)
    assert stats["collections"]["pnls"]["last_export"] is not None
