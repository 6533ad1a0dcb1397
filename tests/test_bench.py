"""The benchmark at a tiny size: every phase runs and its results agree (no timing asserted)."""

import json
from pathlib import Path

from bench.cli import STEPS
from bench.report import DOCS_END, DOCS_START, render, run_from_json, write_docs
from bench.run import DOCS, measure

SIZE = 300
README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_bench_runs_end_to_end_and_its_results_are_consistent(tmp_path):
    run = measure(
        (SIZE,),
        ("pnl", "mixed"),
        workdir=tmp_path,
        cli_max=SIZE,
        start_up_runs=2,
        mongo_sizes=(SIZE,),
    )

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
        # the merge driver merged as dbsync's merge of files does; the real pull went through
        # the driver and the hook, three-way, and left the merged snapshot
        git = results["git"]
        assert set(git) == {"driver", "plain", "pull", "first-export", "pull-share"}
        assert all(git["driver"]["checks"].values()), git["driver"]
        assert all(git["pull"]["checks"].values()), git["pull"]["output"]
        assert all(git["pull-share"]["checks"].values()), git["pull-share"]["output"]
        # the MongoDB rows: every command exited 0; an unchanged re-export and status read
        # no document, the first export every one
        mongo = run.mongo[(SIZE, kind)]
        assert all(step["code"] == 0 for step in mongo.values()), mongo
        assert mongo["export"]["documents_read"] == mongo["export"]["documents"] > SIZE * 0.9
        assert mongo["export-same"]["documents_read"] == mongo["status"]["documents_read"] == 0
    assert {name: figures["code"] for name, figures in (run.start_up or {}).items()} == {
        "python": 0,
        "version": 0,
        "hook": 0,
        "hook-script": 0,
    }
    text = render(run)
    assert "encode (per document, first 300)" in text
    assert "CLI `dbsync export` (export-same)" in text
    assert "re-export with nothing changed" in text
    assert "dbsync log KEY: 100 commits" in text and run.log is not None
    assert "start-up: `dbsync --version` (median of 2)" in text
    assert "merge driver, three-way, as git runs it" in text
    assert "`git pull`: 1 % changed on each asset" in text
    assert "the merge driver (a process) ≥ 4x the plain merge" in text
    assert "dbsync's share of that pull" in text
    assert "MongoDB (SecantusDB replica set) CLI `dbsync export`" in text

    docs = tmp_path / "benchmark.md"
    docs.write_text(f"# Benchmark\n\nprose\n\n{DOCS_START}\nold\n{DOCS_END}\n\nmore prose\n")
    write_docs(docs, run)
    written = docs.read_text()
    assert written.startswith("# Benchmark\n\nprose\n\n") and written.endswith("\nmore prose\n")
    assert text in written and "\nold\n" not in written


def test_the_results_live_in_docs_and_the_readme_links_there():
    assert DOCS_START in DOCS.read_text() and DOCS_END in DOCS.read_text()
    readme = README.read_text()
    assert "](docs/benchmark.md)" in readme
    assert DOCS_START not in readme and "bench:start" not in readme


def test_a_saved_run_renders_as_the_run_itself_did():
    """``python -m bench.report RUN.json`` renders what the run wrote with ``--json``: every
    part of it, the liveness run and the MongoDB rows included."""
    saved = json.loads(
        json.dumps(
            {
                "date": "2026-12-07",
                "command": "python -m bench --quick --clock cpu",
                "clock": "cpu",
                "seconds": 1.0,
                "results": {},
                "liveness": {
                    "assets": {"asset0": {"longest_wait_seconds": 17.0}},
                    "success_ratio": 1.0,
                },
                "mongo": {"pnl-20000": {"status": {"documents_read": 0}}},
            }
        )
    )
    run = run_from_json(saved)
    assert run.liveness == saved["liveness"]
    assert run.mongo == {(20000, "pnl"): saved["mongo"]["pnl-20000"]}
    assert run.as_json()["liveness"] == saved["liveness"]
