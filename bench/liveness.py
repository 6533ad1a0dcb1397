"""Several assets syncing at once while their applications write: does every asset progress?

The setting of issue 25, run with the real ``dbsync`` command: a bare git remote and
``assets`` clones with embedded stores and dbsync's hooks, sharing ``records`` records. On
each asset an application (a separate process, montydb's own client) inserts records and edits
shared ones every ``write_pause`` seconds, and ``dbsync sync`` runs again and again, a random
``sync_pause`` apart, for ``seconds``. Then the applications stop and every asset syncs in
turn, then all but the last once more, after which every database and snapshot must be
identical and nothing any application wrote lost: every inserted record is there, and every
shared record holds a version with the newest timestamp any application gave it (the
conflict rule).

Reported per asset: sync runs, successes, the longest stretch (in syncs finished by any asset,
and in seconds) without a success of its own. ``python -m bench`` runs it in full; the test
suite in a short form, judging it by counts only (``Liveness.problems``).

``python -m bench.liveness [--seconds N] [--assets N]`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DBSYNC = str(Path(sys.executable).with_name("dbsync"))
DATABASE, COLLECTION = "shop", "pnls"
RULES = f'\n[collections.{COLLECTION}]\ntimestamp = "timestamp"\n'
SYNC_TIMEOUT = 600.0
WINDOW_PER_ASSET = 3
"""A window is ``WINDOW_PER_ASSET * assets`` consecutive syncs finished by any asset: every
asset must succeed at least once in each (it gets a fair share of about three of them)."""
MIN_SUCCESS_RATIO = 0.5

WRITER = r"""
import datetime, json, random, sys, time
from pathlib import Path
import montydb

store, asset, stop, log, seed, low, high, shared = sys.argv[1:]
rng = random.Random(int(seed))
collection = montydb.MontyClient(store)["shop"]["pnls"]
written = []

def attempt(write):
    for _ in range(200):  # montydb waits 5 s on a locked file, then raises: try again
        try:
            return write()
        except Exception as error:
            if "locked" not in str(error):
                raise
    raise RuntimeError("the store stayed locked")

epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
number = 0
while not Path(stop).exists():
    now = datetime.datetime.now(datetime.timezone.utc)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # a BSON date: milliseconds
    stamp = (now - epoch) // datetime.timedelta(milliseconds=1)
    value = f"{asset}-{number}"
    if rng.random() < 0.4:
        key = f"{asset}-new-{number}"
        attempt(lambda: collection.insert_one({"_id": key, "value": value, "timestamp": now}))
        written.append(["insert", key, value, stamp])
    else:
        key = f"shared-{rng.randrange(int(shared))}"
        change = {"$set": {"value": value, "timestamp": now, "by": asset}}
        attempt(lambda: collection.update_one({"_id": key}, change))
        written.append(["edit", key, value, stamp])
    number += 1
    time.sleep(rng.uniform(float(low), float(high)))
Path(log).write_text(json.dumps(written))
"""


@dataclass(frozen=True)
class Plan:
    assets: int = 5
    seconds: float = 180.0
    records: int = 200
    write_pause: tuple[float, float] = (0.05, 0.3)
    sync_pause: tuple[float, float] = (0.0, 3.0)
    seed: int = 1


@dataclass(frozen=True)
class SyncRun:
    asset: str
    started: float
    ended: float
    """Seconds since the run began."""
    code: int
    said: str
    """The last line of its output when it failed."""
    pushes: int = 0
    """The pushes it tried (``push_attempts``): more than one when others pushed first."""


@dataclass
class Liveness:
    plan: Plan
    runs: list[SyncRun] = field(default_factory=list)
    writes: int = 0
    final_syncs_failed: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    """Convergence after the writers stopped: databases or snapshots that differ, and every
    write that is not there."""

    @property
    def assets(self) -> list[str]:
        return asset_names(self.plan.assets)

    def finished(self) -> list[SyncRun]:
        return sorted(self.runs, key=lambda run: run.ended)

    def successes(self, asset: str) -> int:
        return sum(1 for run in self.runs if run.asset == asset and run.code == 0)

    def successes_all(self) -> int:
        return sum(run.code == 0 for run in self.runs)

    def success_ratio(self) -> float:
        return self.successes_all() / len(self.runs) if self.runs else 0.0

    def longest_streak(self, asset: str) -> int:
        """The most syncs finished in a row (by any asset) without a success of ``asset``,
        counting from the start of the run and up to its end."""
        longest = streak = 0
        for run in self.finished():
            success = run.asset == asset and run.code == 0
            streak = 0 if success else streak + 1
            longest = max(longest, streak)
        return longest

    def longest_wait(self, asset: str) -> float:
        """The longest time without a success of ``asset`` (for the report, never judged)."""
        moments = [0.0, *(r.ended for r in self.finished() if r.asset == asset and r.code == 0)]
        end = max((run.ended for run in self.runs), default=self.plan.seconds)
        moments.append(max(end, self.plan.seconds))
        return max(later - earlier for earlier, later in zip(moments, moments[1:], strict=False))

    def window(self) -> int:
        return WINDOW_PER_ASSET * self.plan.assets

    def problems(self) -> list[str]:
        """What failed the liveness targets, judged by counts only."""
        found = [
            f"{asset}: {self.longest_streak(asset)} syncs finished in a row without one of its "
            f"own succeeding (a window is {self.window()})"
            for asset in self.assets
            if self.successes(asset) == 0 or self.longest_streak(asset) >= self.window()
        ]
        if self.success_ratio() < MIN_SUCCESS_RATIO:
            found.append(f"only {self.success_ratio():.0%} of the sync runs succeeded")
        found += [f"final sync failed: {said}" for said in self.final_syncs_failed]
        return found + self.differences

    def as_json(self) -> dict[str, Any]:
        return {
            "plan": asdict(self.plan),
            "writes": self.writes,
            "runs": len(self.runs),
            "success_ratio": self.success_ratio(),
            "pushes_per_success": round(
                sum(run.pushes for run in self.runs) / max(self.successes_all(), 1), 2
            ),
            "mean_sync_seconds": round(
                sum(run.ended - run.started for run in self.runs) / max(len(self.runs), 1), 1
            ),
            "assets": {
                asset: {
                    "syncs": sum(1 for run in self.runs if run.asset == asset),
                    "successes": self.successes(asset),
                    "longest_streak": self.longest_streak(asset),
                    "longest_wait_seconds": round(self.longest_wait(asset), 1),
                }
                for asset in self.assets
            },
            "failures": [run.said for run in self.runs if run.code != 0][:20],
            "problems": self.problems(),
        }


def asset_names(count: int) -> list[str]:
    return [f"asset{number}" for number in range(count)]


# ---------------------------------------------------------------- the assets


def environment(home: Path) -> dict[str, str]:
    """A temporary HOME (the user's git config stays out), a pinned identity, no DBSYNC_*."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text("[init]\n    defaultBranch = main\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DBSYNC_"))}
    for role in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{role}_NAME"], env[f"GIT_{role}_EMAIL"] = "bench", "bench@dbsync.invalid"
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1")
    env["PATH"] = str(Path(DBSYNC).parent) + os.pathsep + env.get("PATH", "")
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} in {cwd} exited {done.returncode}:\n{done.stderr}")
    return done


def seed_records(count: int) -> list[dict[str, Any]]:
    return [
        {"_id": f"shared-{n}", "value": "seed", "timestamp": {"$date": "2020-01-01T00:00:00Z"}}
        for n in range(count)
    ]


def make_assets(folder: Path, plan: Plan, env: dict[str, str]) -> list[Path]:
    """The remote and the clones: the first made with ``dbsync init``, holding the shared
    records, synced; each other one a clone set up as the README says (``dbsync init``, then
    ``dbsync merge database_backup``)."""
    run(["git", "init", "-q", "--bare", "remote.git"], folder, env)
    names = asset_names(plan.assets)
    first = folder / names[0]
    run(["git", "clone", "-q", "remote.git", names[0]], folder, env)
    run([DBSYNC, "init", "--database", DATABASE, "--asset", names[0]], first, env)
    with (first / "dbsync.toml").open("a") as config:
        config.write(RULES)
    run(["git", "add", "-A"], first, env)
    run(["git", "commit", "-q", "-m", "dbsync init"], first, env)
    run(["git", "push", "-q", "-u", "origin", "main"], first, env)
    seed = folder / "seed.json"
    seed.write_text("\n".join(json.dumps(record) for record in seed_records(plan.records)))
    run([DBSYNC, "import", str(seed), "--collection", COLLECTION, "-q"], first, env)
    run([DBSYNC, "sync", "-q"], first, env)
    for name in names[1:]:
        run(["git", "clone", "-q", "remote.git", name], folder, env)
        run([DBSYNC, "init", "--asset", name], folder / name, env)
        run([DBSYNC, "merge", "database_backup", "-q"], folder / name, env)
    return [folder / name for name in names]


def start_writer(asset: Path, plan: Plan, stop: Path, number: int) -> subprocess.Popen[bytes]:
    store = asset / "database_sync" / "db"
    args = [
        str(store),
        asset.name,
        str(stop),
        str(asset.parent / f"{asset.name}-writes.json"),
        str(plan.seed * 100 + number),
        *map(str, plan.write_pause),
        str(plan.records),
    ]
    return subprocess.Popen([sys.executable, "-c", WRITER, *args], cwd=asset)


# ---------------------------------------------------------------- the run


def sync_loop(
    asset: Path, env: dict[str, str], plan: Plan, began: float, runs: list[SyncRun], seed: int
) -> None:
    """``dbsync sync`` a random pause apart until the run's time is up."""
    rng = random.Random(seed)
    while time.monotonic() - began < plan.seconds:
        time.sleep(rng.uniform(*plan.sync_pause))
        started = time.monotonic() - began
        done = subprocess.run(
            [DBSYNC, "sync", "--json"],
            cwd=asset,
            env=env,
            capture_output=True,
            text=True,
            timeout=SYNC_TIMEOUT,
            check=False,
        )
        ended = time.monotonic() - began
        if done.returncode == 0:
            pushes = int(json.loads(done.stdout)["push_attempts"])
            runs.append(SyncRun(asset.name, started, ended, 0, "", pushes))
        else:
            said = " ".join(done.stderr.strip().splitlines()[-2:])
            runs.append(SyncRun(asset.name, started, ended, done.returncode, said))


def measure(folder: Path, plan: Plan, say: Any = lambda message: None) -> Liveness:
    """Set up, run, stop the writers, converge, check (see the module docstring)."""
    env = environment(folder / "home")
    assets = make_assets(folder, plan, env)
    say(f"  liveness: {plan.assets} assets ready; writing and syncing for {plan.seconds:g} s")
    stop = folder / "stop-writing"
    writers = [start_writer(asset, plan, stop, n) for n, asset in enumerate(assets)]
    result = Liveness(plan)
    began = time.monotonic()
    loops = [
        threading.Thread(
            target=sync_loop, args=(asset, env, plan, began, result.runs, plan.seed * 1000 + n)
        )
        for n, asset in enumerate(assets)
    ]
    try:
        for loop in loops:
            loop.start()
        for loop in loops:
            loop.join()
    finally:
        stop.touch()
        for writer in writers:
            writer.wait(timeout=120)
    say(f"  liveness: {result.success_ratio():.0%} of {len(result.runs)} syncs succeeded")
    converge(assets, env, result)
    check_nothing_lost(assets, result)
    return result


def converge(assets: list[Path], env: dict[str, str], result: Liveness) -> None:
    """Every asset syncs in turn, then all but the last again: then each holds everything."""
    for asset in [*assets, *assets[:-1]]:
        done = subprocess.run(
            [DBSYNC, "sync", "-q"], cwd=asset, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            result.final_syncs_failed.append(f"{asset.name}: {done.stderr.strip()}")
    dumps = [dump(asset, env) for asset in assets]
    snapshots = [snapshot(asset) for asset in assets]
    for asset, other, theirs in zip(assets[1:], dumps[1:], snapshots[1:], strict=True):
        if other != dumps[0]:
            result.differences.append(f"{asset.name}'s database differs from {assets[0].name}'s")
        if theirs != snapshots[0]:
            result.differences.append(f"{asset.name}'s snapshot differs from {assets[0].name}'s")


def snapshot(asset: Path) -> bytes:
    return (asset / "database_backup" / f"{COLLECTION}.jsonl").read_bytes()


def dump(asset: Path, env: dict[str, str]) -> list[str]:
    return run([DBSYNC, "dump", COLLECTION], asset, env).stdout.splitlines()


def check_nothing_lost(assets: list[Path], result: Liveness) -> None:
    """Every insert is there, and every record holds a version with its newest timestamp."""
    documents = {}
    for line in dump(assets[0], environment(assets[0].parent / "home")):
        document = json.loads(line)
        documents[document["_id"]] = document
    newest: dict[str, int] = {}
    for asset in assets:
        log = asset.parent / f"{asset.name}-writes.json"
        for kind, key, _value, stamp in json.loads(log.read_text()):
            result.writes += 1
            newest[key] = max(stamp, newest.get(key, stamp))
            if kind == "insert" and key not in documents:
                result.differences.append(f"lost: the insert of {key} on {asset.name}")
    for key, stamp in newest.items():
        held = documents.get(key, {}).get("timestamp", {}).get("$date", {}).get("$numberLong")
        if held is None or int(held) != stamp:
            result.differences.append(f"lost: {key} holds {held}, the newest edit is {stamp}")


# ---------------------------------------------------------------- report


def rows(figures: dict[str, Any] | None) -> list[list[str]]:
    """Per asset: syncs, successes, longest stretch without one (syncs and seconds)."""
    if not figures:
        return []
    return [
        [
            asset,
            str(seen["syncs"]),
            str(seen["successes"]),
            f"{seen['longest_streak']} syncs, {seen['longest_wait_seconds']:.0f} s",
        ]
        for asset, seen in figures["assets"].items()
    ]


TARGET_WAIT_SECONDS = 120.0


def targets(figures: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """Issue 25's targets, as ``bench.report`` lists them (name, figure, met)."""
    names = (
        f"liveness: every asset completes a sync at least once every {TARGET_WAIT_SECONDS:g} s",
        f"liveness: at least {MIN_SUCCESS_RATIO:.0%} of the sync runs succeed",
    )
    if not figures:
        return [(name, "not measured", None) for name in names]
    wait = max(seen["longest_wait_seconds"] for seen in figures["assets"].values())
    ratio = figures["success_ratio"]
    return [
        (names[0], f"longest wait {wait:.0f} s", wait <= TARGET_WAIT_SECONDS),
        (names[1], f"{ratio:.0%}", ratio >= MIN_SUCCESS_RATIO),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.liveness", description=__doc__)
    parser.add_argument("--seconds", type=float, default=Plan.seconds)
    parser.add_argument("--assets", type=int, default=Plan.assets)
    parser.add_argument("--seed", type=int, default=Plan.seed)
    args = parser.parse_args(argv)
    plan = Plan(assets=args.assets, seconds=args.seconds, seed=args.seed)
    folder = Path(tempfile.mkdtemp(prefix="dbsync-liveness-"))
    try:
        result = measure(folder, plan, lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result.as_json(), indent=1))
    return 0 if not result.problems() else 2


if __name__ == "__main__":
    raise SystemExit(main())
