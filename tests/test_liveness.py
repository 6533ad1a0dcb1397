"""Five assets syncing at once while their applications write (issue 25), in a short form: the
full run is ``python -m bench`` (``bench.liveness``). Judged by counts only: every asset
succeeds at least once in every window of syncs, at least half the syncs succeed, and once
the applications stop and every asset has synced in turn (the others twice, the last once),
the databases and snapshots are identical and nothing any application wrote is lost."""

from __future__ import annotations

import pytest

from bench.liveness import Plan, measure

SHORT = Plan(assets=5, seconds=15.0, sync_pause=(0.0, 1.0))


@pytest.mark.liveness  # runs in CI: the short form of the benchmark's liveness run
def test_five_busy_assets_all_make_progress_and_converge(tmp_path):
    result = measure(tmp_path, SHORT)

    assert result.problems() == [], result.as_json()
    assert all(result.successes(asset) >= 1 for asset in result.assets)
    assert result.success_ratio() >= 0.5
    assert result.writes > 0 and not result.differences
