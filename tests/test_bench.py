"""The benchmark at a tiny size: every phase runs and its results agree (no timing asserted)."""

from bench.cli import STEPS
from bench.report import render
from bench.run import measure

SIZE = 300


def test_the_bench_runs_end_to_end_and_its_results_are_consistent(tmp_path):
    run = measure((SIZE,), ("pnl", "mixed"), workdir=tmp_path, cli_max=SIZE)

    assert run.failed_checks() == []
    for kind in ("pnl", "mixed"):
        results = run.results[(SIZE, kind)]
        merge, plain, apply = results["merge"], results["plain"], results["apply"]
        assert results["compare"]["checks"] == {"merged record sets agree": True}
        assert merge["records"] == plain["records"] > 0
        assert merge["conflicts"] == plain["conflicts"] > 0
        # applying writes exactly the records the merge changed in ours, and nothing else
        assert apply["writes"] == merge["writes"] == plain["writes"] > 0
        assert apply["store"] == "embedded"
        assert apply["checks"]["store = merged snapshot"]
        assert results["export"]["checks"][
            "the same records, byte for byte, as the prepared snapshot"
        ]
        assert results["export"]["files"] == 1
        # the real CLI ran end to end, every command exiting 0
        cli = results["cli"]
        assert list(cli) == list(STEPS)
        assert all(step["code"] == 0 for step in cli.values()), cli
    text = render(run)
    assert "encode (per document, first 300)" in text
    assert "CLI `dbsync export` (export-same)" in text
    assert "re-export with nothing changed" in text
    assert "dbsync log KEY: 100 commits" in text and run.log is not None
