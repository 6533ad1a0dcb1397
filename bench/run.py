"""``python -m bench``: prepare the data, run every phase in a fresh process, print the results.

dbsync's Python files are byte-compiled first (as installing it does): otherwise every ``dbsync``
process of the end-to-end rows would compile them again (this environment sets
``PYTHONDONTWRITEBYTECODE``). Then the start-up rows (``bench.pull``), and for each size and
kind of document: ``prepare`` (not measured), the phases of ``bench.phases``, each in its own
subprocess, and up to ``--cli-max`` the end-to-end rows (``bench.cli``) and the rows git drives
(``bench.pull``: the merge driver, a real pull, dbsync's share of it). Then the MongoDB rows
at ``--mongo-sizes`` (``bench.mongo``: a SecantusDB replica set the bench starts). The results
table and the targets go to the terminal, optionally to a JSON file and to
``docs/benchmark.md``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import liveness
from bench import log as log_bench
from bench import mongo as mongo_bench
from bench.data import KINDS
from bench.pull import START_RUNS as START_UP_RUNS
from bench.report import Run, render, write_docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmark.md"
FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
EMBEDDED_STORE_MAX = 10_000
CLI_MAX = 100_000
MONGO_SIZES = (20_000,)
MEASURED = ("encode", "export", "verify", "merge", "plain", "compare")


class PhaseFailed(RuntimeError):
    pass


def run_phase(phase: str, folder: Path, *args: str, clock: str = "wall") -> dict[str, Any]:
    """One phase in a fresh Python process; its figures come back as JSON on stdout."""
    command = [sys.executable, "-m", "bench.phases", phase, str(folder), *args]
    env = {**os.environ, "DBSYNC_BENCH_CLOCK": clock}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PhaseFailed(f"{' '.join(command)} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def run_size(
    folder: Path,
    kind: str,
    size: int,
    *,
    seed: int,
    store_max: int,
    clock: str,
    say: Callable[[str], None],
    cli_max: int = CLI_MAX,
) -> dict[str, dict[str, Any]]:
    """Every phase for one kind of document at one size."""
    results = {"prepare": run_phase("prepare", folder, kind, str(size), str(seed))}
    say(f"  {kind} {size:,}: prepared in {results['prepare']['seconds']:.1f} s")
    for phase in MEASURED:
        results[phase] = run_phase(phase, folder, clock=clock)
        say(f"  {kind} {size:,}: {phase} {results[phase]['seconds']:.2f} s")
    timing = run_phase("interleaved", folder, clock=clock)
    for phase in ("merge", "plain"):  # the times of one process; the memory of each alone
        results[phase]["alone_seconds"] = results[phase]["seconds"]
        results[phase]["seconds"] = timing[f"{phase}_seconds"]
    say(f"  {kind} {size:,}: merge and plain interleaved {timing['seconds']:.2f} s")
    store = "embedded" if size <= store_max else "none"
    results["apply"] = run_phase("apply", folder, store, clock=clock)
    say(f"  {kind} {size:,}: apply ({store}) {results['apply']['seconds']:.2f} s")
    if size <= cli_max:
        results["cli"] = run_module("bench.cli", str(folder))
        total = sum(step["seconds"] for step in results["cli"].values())
        say(f"  {kind} {size:,}: the CLI end to end {total:.1f} s")
        results["git"] = run_module("bench.pull", str(folder))
        say(f"  {kind} {size:,}: the merge driver and a git pull measured")
    return results


def run_module(module: str, *args: str) -> dict[str, Any]:
    """The end-to-end rows (``bench.cli``, ``bench.pull``): one process starting the commands,
    each measured alone; its figures come back as JSON on stdout."""
    command = [sys.executable, "-m", module, *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PhaseFailed(f"{' '.join(command)} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def mongo_sizes(text: str) -> tuple[int, ...]:
    return () if text.strip() in ("", "none") else tuple(int(size) for size in text.split(","))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--sizes",
        help="comma-separated numbers of documents (default 10000,100000,1000000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="sizes 10000,100000 only (about 2 minutes)"
    )
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="kinds of documents: pnl, mixed (default both)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic data")
    parser.add_argument(
        "--store-max",
        type=int,
        default=EMBEDDED_STORE_MAX,
        help="merge-apply writes into the embedded store up to this size; beyond it the writes "
        "are counted and not stored (default 10000)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time phases by the wall clock (default) or by the CPU time of their process, "
        "steadier on a machine busy with other work",
    )
    parser.add_argument(
        "--cli-max",
        type=int,
        default=CLI_MAX,
        help="run the real CLI end to end (import, export, status, merge, restore) up to this "
        "size (default 100000; 1000000 adds the 1M rows)",
    )
    parser.add_argument(
        "--liveness-seconds",
        type=float,
        default=liveness.Plan.seconds,
        help="how long five assets write and sync at once in the liveness run (default 180; "
        "0 skips it)",
    )
    parser.add_argument(
        "--mongo-sizes",
        default=",".join(str(size) for size in MONGO_SIZES),
        help="the MongoDB rows (a SecantusDB replica set the bench starts) at these sizes, "
        "comma-separated (default 20000; 'none': no MongoDB rows)",
    )
    parser.add_argument("--workdir", type=Path, help="where to put the data (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the data to profile phases")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--write-docs", action="store_true", help="write the results into docs/benchmark.md"
    )
    return parser.parse_args(argv)


def measure(
    sizes: tuple[int, ...],
    kinds: tuple[str, ...],
    *,
    seed: int = 1,
    store_max: int = EMBEDDED_STORE_MAX,
    cli_max: int = CLI_MAX,
    workdir: Path | None = None,
    keep: bool = False,
    clock: str = "wall",
    command: str = "python -m bench",
    say: Callable[[str], None] = lambda message: None,
    start_up_runs: int = START_UP_RUNS,
    liveness_seconds: float = 0.0,
    mongo_sizes: tuple[int, ...] = MONGO_SIZES,
) -> Run:
    """Run every phase for every size and kind, then (``liveness_seconds``) the liveness run;
    the data is deleted unless ``keep``."""
    root = workdir or Path(tempfile.mkdtemp(prefix="dbsync-bench-"))
    run = Run.start(sizes, kinds, command, clock)
    started = time.perf_counter()
    compileall.compile_dir(ROOT / "dbsync", quiet=1)  # as installing dbsync does
    compileall.compile_dir(ROOT / "bench", quiet=1)
    try:
        run.start_up = run_module("bench.pull", "--start-up", str(root), str(start_up_runs))
        say(f"  start-up: dbsync --version {run.start_up['version']['cpu_seconds']:.3f} s CPU")
        for size in sizes:
            for kind in kinds:
                folder = root / f"{kind}-{size}"
                run.results[(size, kind)] = run_size(
                    folder,
                    kind,
                    size,
                    seed=seed,
                    store_max=store_max,
                    clock=clock,
                    say=say,
                    cli_max=cli_max,
                )
                if not keep:
                    shutil.rmtree(folder, ignore_errors=True)
        measure_mongo(run, root, kinds, mongo_sizes, seed, say, keep)
        run.log = log_bench.measure_for(root / "log", sizes, say)
        if liveness_seconds > 0:
            plan = liveness.Plan(seconds=liveness_seconds, seed=seed)
            folder = root / "liveness"
            folder.mkdir(parents=True, exist_ok=True)
            run.liveness = liveness.measure(folder, plan, say).as_json()
    finally:
        if not keep and workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    run.seconds = time.perf_counter() - started
    return run


def measure_mongo(
    run: Run,
    root: Path,
    kinds: tuple[str, ...],
    sizes: tuple[int, ...],
    seed: int,
    say: Callable[[str], None],
    keep: bool,
) -> None:
    """The MongoDB rows (``bench.mongo``) at each size and kind; none, said so, without
    SecantusDB."""
    if not sizes:
        run.mongo_note = "no MongoDB size asked for"
        return
    if not mongo_bench.available():
        run.mongo_note = "SecantusDB is not installed: pip install -e '.[test]'"
        return
    for size in sizes:
        for kind in kinds:
            folder = root / f"mongo-{kind}-{size}"
            run_phase("prepare", folder, kind, str(size), str(seed))
            run.mongo[(size, kind)] = run_module("bench.mongo", str(folder))
            figures = run.mongo[(size, kind)]
            say(f"  MongoDB {kind} {size:,}: {sum(f['seconds'] for f in figures.values()):.1f} s")
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sizes:
        sizes = tuple(int(size) for size in args.sizes.split(","))
    else:
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        run = measure(
            sizes,
            tuple(args.kinds.split(",")),
            seed=args.seed,
            store_max=args.store_max,
            cli_max=args.cli_max,
            workdir=args.workdir,
            keep=args.keep,
            clock=args.clock,
            command=command,
            say=lambda message: print(message, file=sys.stderr, flush=True),
            liveness_seconds=args.liveness_seconds,
            mongo_sizes=mongo_sizes(args.mongo_sizes),
        )
    except PhaseFailed as error:
        print(error, file=sys.stderr)
        return 1
    print(render(run))
    if args.json:
        args.json.write_text(json.dumps(run.as_json(), indent=1))
    if args.write_docs:
        write_docs(DOCS, run)
        print(f"{DOCS.relative_to(ROOT)}: the results are updated", file=sys.stderr)
    return 0 if run.all_checks_pass() else 2
