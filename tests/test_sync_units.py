"""The pure parts of sync's contention handling and of git state, on literal data: which push
refusals are another asset's push, the jittered backoff, the losing streak, git's output."""

from __future__ import annotations

import subprocess

from dbsync.edges import git
from dbsync.edges.sync_log import SyncCycle, losing_streak
from dbsync.runs.sync import (
    MAX_BACKOFF_SECONDS,
    PushRetry,
    SyncResult,
    another_asset_pushed_first,
    heard_from_hooks,
    lost_push_race,
)

LOST_RACE = (
    "To /tmp/race/r.git\n!\tHEAD:refs/heads/main\t[remote rejected] (failed to update ref)\nDone\n",
    "remote: error: cannot lock ref 'refs/heads/main': is at 8ce711dc but expected f484dbdc\n"
    "error: failed to push some refs to '/tmp/race/r.git'\n",
)
GITHUB_RACE = "!\trefs/heads/main:refs/heads/main\t[remote rejected] (cannot lock ref 'refs/heads/main': is at 1 but expected 2)\n"  # noqa: E501
HOOK_DECLINED = (
    "!\trefs/heads/main:refs/heads/main\t[remote rejected] (pre-receive hook declined)\n"
)
BEHIND = "To /r.git\n!\tHEAD:refs/heads/main\t[rejected] (fetch first)\nDone\n"


def test_a_ref_another_push_updated_meanwhile_counts_as_another_asset_first():
    assert lost_push_race(*LOST_RACE) and another_asset_pushed_first(*LOST_RACE)
    assert lost_push_race(GITHUB_RACE)
    assert another_asset_pushed_first(BEHIND, "")
    assert not another_asset_pushed_first(HOOK_DECLINED, "remote: frozen for maintenance\n")
    assert not another_asset_pushed_first("", "fatal: unable to access the remote\n")


def test_the_backoff_is_a_random_share_of_a_doubling_capped_wait():
    full = PushRetry(draw=lambda: 1.0)
    assert [full.pause(n) for n in range(5)] == [0.05, 0.1, 0.2, 0.4, 0.5]
    assert full.pause(1000) == MAX_BACKOFF_SECONDS
    assert PushRetry(draw=lambda: 0.0).pause(5) == 0.0
    assert PushRetry(draw=lambda: 0.5).pause(2) == 0.1


def cycles(*pairs: tuple[int, int]) -> list[SyncCycle]:
    return [SyncCycle("t", "success", conflicts=d, own_lost=lost) for d, lost in pairs]


def test_own_edits_keep_losing_only_when_they_lose_most_of_several_conflicts():
    assert losing_streak(cycles((3, 3))) is not None
    assert losing_streak(cycles((1, 1), (1, 1), (0, 0), (1, 1))).lost == 3
    assert losing_streak(cycles((2, 2))) is None  # two are not a pattern
    assert losing_streak(cycles((4, 3), (2, 1))) is None  # 4 of 6: even odds, nearly
    assert losing_streak(cycles(*([(0, 0)] * 10), (5, 5))) is None  # older than the window
    streak = losing_streak(cycles((5, 4)))
    assert streak is not None and "lost 4 of the 5 conflicts" in streak.describe()


def test_what_the_hooks_said_is_split_into_merges_and_warnings():
    result = SyncResult()
    heard_from_hooks(
        "Updating 1..2\n"
        "dbsync: merged database_backup/pnls.jsonl record by record (three-way): 1 change(s)\n"
        "dbsync: warning: items: 1 conflict(s) decided by larger content hash\n"
        "dbsync: warning: the merge of database_backup into the database is pending (down)\n"
        "hint: start the database\n"
        "Fast-forward\n",
        result,
    )
    assert result.merges == [
        "merged database_backup/pnls.jsonl record by record (three-way): 1 change(s)"
    ]
    assert result.warnings == [
        "items: 1 conflict(s) decided by larger content hash",
        "the merge of database_backup into the database is pending (down) (hint: start the "
        "database)",
    ]
    assert result.steps == [f"merge: {result.merges[0]}"]


def test_git_status_paths_skip_a_renames_source():
    listed = " M database_backup/a.jsonl\0R  new.txt\0old.txt\0?? b.jsonl\0"
    assert git.parse_status(listed) == ["database_backup/a.jsonl", "new.txt", "b.jsonl"]


def test_a_lock_is_stale_only_while_no_git_runs_in_the_repository(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    lock = tmp_path / ".git" / "index.lock"
    lock.touch()
    waiting = subprocess.Popen(["git", "cat-file", "--batch"], cwd=tmp_path, stdin=subprocess.PIPE)
    try:
        seen = next(
            (found for _ in range(1000) if (found := git.git_processes(tmp_path))), None
        )  # once the child has become git (a fork runs Python for a moment)
        assert seen == [waiting.pid]
        assert git.stale_locks(tmp_path) == []
    finally:
        waiting.communicate(b"")
    assert git.stale_locks(tmp_path) == [lock]


def test_the_agents_page_names_the_last_cycles_error():
    import datetime

    from dbsync.agent.status_page import PageInput, render_page

    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    failing = {
        "cycles": 5,
        "consecutive_failures": 5,
        "last_cycle": {"time": now.isoformat(), "outcome": "failed", "error": "git pull <failed>"},
    }
    status = {"status": "DEGRADED", "reasons": [], "collections": {}, "pending_merges": []}
    page = render_page(PageInput(status, [], [], now, failing))
    assert "last error" in page and "git pull &lt;failed&gt;" in page
    working = {**failing, "last_cycle": {"time": now.isoformat(), "outcome": "success"}}
    assert "last error" not in render_page(PageInput(status, [], [], now, working))


def test_an_asset_that_just_won_a_race_lets_the_others_go_first():
    import datetime

    from dbsync.runs.sync import COURTESY_SECONDS, JUST_WON_SECONDS

    moment = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.timezone.utc)
    retry = PushRetry(draw=lambda: 0.5, now=lambda: moment)

    def cycle(seconds_ago: float, outcome: str = "success", pushes: int = 2) -> SyncCycle:
        when = (moment - datetime.timedelta(seconds=seconds_ago)).isoformat()
        return SyncCycle(when, outcome, pushes=pushes)

    assert retry.courtesy([cycle(1)]) == COURTESY_SECONDS * 1.5
    assert retry.courtesy([cycle(1, pushes=1)]) == 0.0  # no race: nobody to let go first
    assert retry.courtesy([cycle(JUST_WON_SECONDS + 1)]) == 0.0  # not lately
    assert retry.courtesy([cycle(1, outcome="failed")]) == 0.0
    assert retry.courtesy([]) == 0.0
