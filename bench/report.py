"""The results of a bench run: the table, the targets met or not, and ``docs/benchmark.md``."""

from __future__ import annotations

import datetime
import os
import platform
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import liveness
from bench import log as log_bench

DOCS_START = "<!-- bench:start (written by python -m bench --write-docs) -->"
DOCS_END = "<!-- bench:end -->"
MILLION = 1_000_000
GIB = 1024  # MiB

Figures = dict[str, Any]


@dataclass
class Run:
    sizes: tuple[int, ...]
    kinds: tuple[str, ...]
    command: str
    date: str
    clock: str
    results: dict[tuple[int, str], dict[str, Figures]] = field(default_factory=dict)
    seconds: float = 0.0
    log: Figures | None = None
    """``dbsync log`` on a long history (``bench.log``)."""
    start_up: Figures | None = None
    """The start-up rows (``bench.pull.start_up``)."""
    liveness: Figures | None = None
    """Five assets writing and syncing at once (``bench.liveness``)."""
    mongo: dict[tuple[int, str], dict[str, Figures]] = field(default_factory=dict)
    """The MongoDB rows (``bench.mongo``), by size and kind of document."""
    mongo_note: str | None = None
    """Why there are no MongoDB rows, if there are none."""

    @classmethod
    def start(
        cls, sizes: tuple[int, ...], kinds: tuple[str, ...], command: str, clock: str = "wall"
    ) -> Run:
        today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        return cls(sizes, kinds, command, today, clock)

    def failed_checks(self) -> list[str]:
        driven = [
            (f"{kind} {size:,} {row}", figures)
            for (size, kind), phases in self.results.items()
            for row, figures in phases.get("git", {}).items()
        ]
        return (
            [
                f"{kind} {size:,} {phase}: {name}"
                for (size, kind), phases in self.results.items()
                for phase, figures in phases.items()
                for name, ok in figures.get("checks", {}).items()
                if not ok
            ]
            + [f"{row}: {name}" for row, f in driven for name, ok in f["checks"].items() if not ok]
            + [f"log: {name}" for name, ok in (self.log or {}).get("checks", {}).items() if not ok]
            + [
                f"MongoDB {kind} {size:,} {step}: exit {figures['code']}"
                for (size, kind), steps in self.mongo.items()
                for step, figures in steps.items()
                if figures["code"] != 0
            ]
            + [
                f"start-up {name}: exit {figures['code']}"
                for name, figures in (self.start_up or {}).items()
                if figures["code"] != 0
            ]
            + [f"liveness: {problem}" for problem in (self.liveness or {}).get("problems", [])]
        )

    def all_checks_pass(self) -> bool:
        return not self.failed_checks()

    def as_json(self) -> dict[str, Any]:
        return {
            "machine": machine(),
            "date": self.date,
            "command": self.command,
            "clock": self.clock,
            "seconds": self.seconds,
            "results": {f"{kind}-{size}": r for (size, kind), r in self.results.items()},
            "log": self.log,
            "start_up": self.start_up,
            "liveness": self.liveness,
            "mongo": {f"{kind}-{size}": r for (size, kind), r in self.mongo.items()},
        }


def run_from_json(data: dict[str, Any]) -> Run:
    """A run as ``as_json`` wrote it (``--json``), to render or write into the docs again."""

    def keyed(found: dict[str, Any]) -> dict[tuple[int, str], Any]:
        return {(int(key.rsplit("-", 1)[1]), key.rsplit("-", 1)[0]): v for key, v in found.items()}

    results = keyed(data["results"])
    run = Run(
        tuple(sorted({size for size, _ in results})),
        tuple(dict.fromkeys(kind for _, kind in results)),
        data["command"],
        data["date"],
        data.get("clock", "cpu" if "--clock cpu" in data["command"] else "wall"),
        results,
        data["seconds"],
        log=data.get("log"),
        start_up=data.get("start_up"),
        liveness=data.get("liveness"),
        mongo=keyed(data.get("mongo") or {}),
    )
    if not run.mongo:
        run.mongo_note = "no MongoDB run"
    return run


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {name: metadata.version(name) for name in ("orjson", "xxhash", "pymongo")}
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.system(),
        "libraries": versions,
    }


# ---------------------------------------------------------------- formatting


def rate(count: float, seconds: float) -> str:
    if seconds <= 0:
        return "—"
    per_second = count / seconds
    if per_second >= MILLION:
        return f"{per_second / MILLION:.2f} M/s"
    return f"{per_second / 1000:.0f} k/s"


def duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def memory(mib: float | None) -> str:
    if mib is None:
        return "—"
    return f"{mib / GIB:.2f} GiB" if mib >= GIB else f"{mib:.0f} MiB"


def _checks(figures: Figures) -> str:
    failed = [name for name, ok in figures.get("checks", {}).items() if not ok]
    return "ok" if not failed else "FAILED: " + "; ".join(failed)


def rows(run: Run) -> list[list[str]]:
    table = []
    for (size, kind), r in run.results.items():
        docs = f"{size:,}"
        enc, exp, ver, mer, pla, app = (
            r[p] for p in ("encode", "export", "verify", "merge", "plain", "apply")
        )
        table += [
            [
                docs,
                kind,
                f"encode (per document, first {min(size, 100_000):,})",
                f"{rate(enc['documents'], enc['seconds'])}; "
                f"with hash and sort key {rate(enc['documents'], enc['record_seconds'])}",
                "json_util " + rate(enc["documents"], enc["baseline_seconds"]),
                f"{enc['baseline_seconds'] / enc['seconds']:.1f}x; "
                f"{enc['baseline_seconds'] / enc['record_seconds']:.1f}x",
                memory(enc["peak_rss_mb"]),
                "(same process)",
                _checks(enc),
            ],
            [
                docs,
                kind,
                "export (encode, sort, write; split past 50 MB)",
                f"{rate(exp['documents'], exp['seconds'])} ({duration(exp['seconds'])}); "
                f"{_files(exp)}",
                "",
                "",
                memory(exp["peak_rss_mb"]),
                "",
                _checks(exp),
            ],
            [
                docs,
                kind,
                "verify",
                f"{rate(ver['documents'], ver['seconds'])} ({duration(ver['seconds'])})",
                "",
                "",
                memory(ver["peak_rss_mb"]),
                "",
                _checks(ver),
            ],
            [
                docs,
                kind,
                "three-way merge of files",
                f"{duration(mer['seconds'])} ({rate(mer['documents'], mer['seconds'])})",
                f"plain {duration(pla['seconds'])} ({rate(pla['documents'], pla['seconds'])})",
                f"{pla['seconds'] / mer['seconds']:.1f}x",
                memory(mer["peak_rss_mb"]),
                memory(pla["peak_rss_mb"]),
                _checks(mer) + (" / " + _checks(r["compare"]) if r["compare"] else ""),
            ],
            [
                docs,
                kind,
                f"merge-apply ({_store_name(app['store'])})",
                f"{duration(app['seconds'])}, {app['writes']:,} writes",
                "",
                "",
                memory(app["peak_rss_mb"]),
                "",
                _checks(app),
            ],
        ]
        table += cli_rows(docs, kind, r.get("cli", {}))
        table += git_rows(docs, kind, r.get("git"))
    return start_up_rows(run.start_up) + table + mongo_rows(run) + log_bench.rows(run.log)


START_UP = {
    "version": "`dbsync --version`",
    "hook": "`python -m dbsync hook post-merge 0`, nothing to merge (what the hook script runs)",
    "hook-script": "the post-merge hook script as git runs it, nothing to merge",
}


def start_up_rows(start_up: Figures | None) -> list[list[str]]:
    """Start-up: each command's median CPU time, next to ``python -c pass``'s."""
    if not start_up:
        return []
    python = start_up["python"]
    return [
        [
            "—",
            "—",
            f"start-up: {label} (median of {figures['runs']})",
            f"{figures['cpu_seconds']:.3f} s CPU ({figures['cpu_spread'][0]:.3f}–"
            f"{figures['cpu_spread'][1]:.3f}), {figures['seconds']:.3f} s wall",
            f"`python -c pass` {python['cpu_seconds']:.3f} s CPU",
            f"{figures['cpu_seconds'] / python['cpu_seconds']:.1f}x",
            memory(figures["peak_rss_mb"]),
            memory(python["peak_rss_mb"]),
            "ok" if figures["code"] == 0 else f"FAILED: exit {figures['code']}",
        ]
        for name, label in START_UP.items()
        if (figures := start_up.get(name))
    ]


def git_rows(docs: str, kind: str, git: dict[str, Figures] | None) -> list[list[str]]:
    """The merge driver next to the plain merge (processes), and the pull next to the first
    export (``bench.pull``), with dbsync's share of it."""
    if not git:
        return []
    driver, plain, pulled, export = (git[n] for n in ("driver", "plain", "pull", "first-export"))
    return _git_rows(docs, kind, driver, plain, pulled, export) + share_rows(docs, kind, git)


def share_rows(docs: str, kind: str, git: dict[str, Figures]) -> list[list[str]]:
    share, pulled, export = git.get("pull-share"), git["pull"], git["first-export"]
    if share is None:
        return []
    mine = share["driver_cpu_seconds"] + share["hook_cpu_seconds"]
    return [
        [
            docs,
            kind,
            "`git pull`, dbsync's share: the merge driver and the post-merge hook as git runs "
            "them (the same pull again, each timed by `bench/child_cpu.py`)",
            f"{mine:.2f} s CPU: driver {share['driver_cpu_seconds']:.2f} s "
            f"({share['driver_runs']} file(s)), hook {share['hook_cpu_seconds']:.2f} s; git's "
            f"own {max(0.0, pulled['cpu_seconds'] - mine):.2f} s of the pull{_remote(share)}",
            f"first `dbsync export` {export['cpu_seconds']:.2f} s CPU",
            f"{mine / export['cpu_seconds']:.2f}x",
            "",
            "",
            _checks(share),
        ]
    ]


def _remote(share: Figures) -> str:
    """What of git's own work the remote did (a local bare remote runs on this machine)."""
    if "remote_cpu_seconds" not in share:  # a run saved before it was measured
        return ""
    return (
        f", of which the remote's upload-pack {share['remote_cpu_seconds']:.2f} s (a real "
        "remote runs it on its server)"
    )


def _git_rows(
    docs: str, kind: str, driver: Figures, plain: Figures, pulled: Figures, export: Figures
) -> list[list[str]]:
    return [
        [
            docs,
            kind,
            "merge driver, three-way, as git runs it (a process, its report written)",
            f"{driver['cpu_seconds']:.2f} s CPU, {duration(driver['seconds'])} wall",
            f"plain merge, a process {plain['cpu_seconds']:.2f} s CPU",
            f"{plain['cpu_seconds'] / driver['cpu_seconds']:.1f}x",
            memory(driver["peak_rss_mb"]),
            memory(plain["peak_rss_mb"]),
            _checks(driver),
        ],
        [
            docs,
            kind,
            "`git pull`: 1 % changed on each asset (merge driver + post-merge hook's merge)",
            f"{pulled['cpu_seconds']:.2f} s CPU, {duration(pulled['seconds'])} wall",
            f"first `dbsync export` {export['cpu_seconds']:.2f} s CPU",
            f"{pulled['cpu_seconds'] / export['cpu_seconds']:.2f}x",
            memory(pulled["peak_rss_mb"]),
            memory(export["peak_rss_mb"]),
            _checks(pulled),
        ],
    ]


CLI_BASELINES = {"merge-0%": "verify", "merge-0%-live": "verify-live", "merge-1%": "verify-1%"}
"""The end-to-end steps measured against a baseline: a merge against verifying its input."""


def _cli_outcome(step: Figures) -> str:
    if step.get("timed_out"):
        return f"KILLED after {duration(step['seconds'])}"
    return "ok" if step["code"] == 0 else f"FAILED: exit {step['code']}"


def cli_rows(docs: str, kind: str, cli: dict[str, Figures]) -> list[list[str]]:
    """One row per ``dbsync`` command of the end-to-end run (``bench.cli``)."""
    table = []
    for name, step in cli.items():
        baseline = cli.get(CLI_BASELINES.get(name, ""))
        table.append(
            [
                docs,
                kind,
                f"CLI `{step['command'].split(' /')[0]}` ({name})",
                f"{duration(step['seconds'])} wall, {step['cpu_seconds']:.2f} s CPU",
                f"{baseline['command'].split(' /')[0]} {baseline['cpu_seconds']:.2f} s CPU"
                if baseline
                else "",
                f"{step['cpu_seconds'] / baseline['cpu_seconds']:.2f}x" if baseline else "",
                memory(step["peak_rss_mb"]),
                memory(baseline["peak_rss_mb"]) if baseline else "",
                _cli_outcome(step),
            ]
        )
    return table


def _files(export: Figures) -> str:
    count, largest = export.get("files", 1), export.get("largest_file_bytes", 0)
    return f"{count} file(s), largest {largest / 1e6:.1f} MB"


def _store_name(store: str) -> str:
    return "embedded store" if store == "embedded" else "writes counted, no store"


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    name: str
    figure: str
    met: bool | None  # None: not measured in this run


def targets(run: Run) -> list[Target]:
    found: list[Target] = []
    largest = max(run.sizes)
    for kind in run.kinds:
        enc = run.results[(largest, kind)]["encode"]
        ratio = enc["baseline_seconds"] / enc["seconds"]
        record_ratio = enc["baseline_seconds"] / enc["record_seconds"]
        found.append(
            Target(
                f"{kind}: the record line ≥ 5x json_util canonical (JSON, xxhash, line, sort "
                "key; json_util: the JSON alone)",
                f"{record_ratio:.2f}x (the JSON alone: {ratio:.2f}x)",
                record_ratio >= 5,
            )
        )
    found += start_up_targets(run.start_up)
    for kind in run.kinds:
        found += cli_targets(run, kind)
        found += git_targets(run, kind)
    for kind in run.kinds:
        found += _million_targets(run, kind)
    largest = max(r["export"].get("largest_file_bytes", 0) for r in run.results.values())
    found.append(
        Target(
            "no snapshot file over 50 MB (a large collection is split into parts)",
            f"largest {largest / 1e6:.1f} MB",
            largest <= 50_000_000,
        )
    )
    writes_ok = all(
        r["apply"]["checks"] and all(r["apply"]["checks"].values()) for r in run.results.values()
    )
    found.append(
        Target(
            "merge-apply writes only the changed documents (every size)",
            "writes = changed records" if writes_ok else "more writes than changes",
            writes_ok,
        )
    )
    found.append(Target(*log_bench.target(run.log)))
    found += [Target(*target) for target in liveness.targets(run.liveness)]
    return found + mongo_targets(run)


def liveness_section(figures: Figures | None) -> list[str]:
    """The liveness run's table: per asset, its syncs, successes and longest wait."""
    if not figures:
        return []
    plan = figures["plan"]
    intro = (
        f"Liveness: {plan['assets']} assets, each application writing every "
        f"{plan['write_pause'][0]}–{plan['write_pause'][1]} s and `dbsync sync` every "
        f"{plan['sync_pause'][0]}–{plan['sync_pause'][1]} s, for {plan['seconds']:g} s: "
        f"{figures['runs']} syncs, {figures['success_ratio']:.0%} succeeded, "
        f"{figures['pushes_per_success']} pushes per success, a sync took "
        f"{figures['mean_sync_seconds']} s on average; {figures['writes']:,} writes. "
        + (
            "Problems: " + "; ".join(figures["problems"]) + "."
            if figures["problems"]
            else "Every target met; once the writers stopped and every asset synced in turn "
            "(the last once, the others twice), identical databases and snapshots, nothing lost."
        )
    )
    header = ["asset", "syncs", "succeeded", "longest stretch without a success"]
    return [intro, markdown_table(header, liveness.rows(figures))]


CLI_RATIOS = (
    ("re-export with nothing changed ≤ 0.1x the first export", "export-same", "export", 0.1),
    ("re-export with 1 % changed ≤ 0.5x the first export", "export-1%", "export", 0.5),
    ("`dbsync status` ≤ 0.2x an export", "status", "export", 0.2),
    ("merge of 1 % changed ≤ 3x `dbsync verify` of that snapshot", "merge-1%", "verify-1%", 3.0),
    ("merge with nothing to apply ≤ 1.5x `dbsync verify`", "merge-0%", "verify", 1.5),
    (
        "merge with nothing to apply, the database written since its export, ≤ 1.5x "
        "`dbsync verify`",
        "merge-0%-live",
        "verify-live",
        1.5,
    ),
)
CLI_GROWTH = ("import", "export", "merge-1%", "restore")
"""Commands whose per-record CPU cost and peak RSS may grow ≤ 1.5x from 10k to 100k."""


def _cpu(cli: dict[str, Figures], step: str) -> float | None:
    found = cli.get(step)
    if found is None or found["code"] != 0:
        return None
    return float(found["cpu_seconds"])


def cli_targets(run: Run, kind: str) -> list[Target]:
    """The targets of the end-to-end rows, as CPU-time ratios in one run (steadier than wall
    time on a shared machine): at the largest size run end to end, and 10k → 100k."""
    sized = sorted(size for (size, k), r in run.results.items() if k == kind and r.get("cli"))
    if not sized:
        return []
    largest = sized[-1]
    cli = run.results[(largest, kind)]["cli"]
    found = []
    for name, step, baseline, limit in CLI_RATIOS:
        mine, theirs = _cpu(cli, step), _cpu(cli, baseline)
        label = f"{kind} {largest:,}: {name}"
        if mine is None or theirs is None:
            found.append(Target(label, "not measured (a step failed)", None))
            continue
        found.append(Target(label, f"{mine / theirs:.2f}x", mine / theirs <= limit))
    small, big = (run.results.get((size, kind), {}).get("cli") for size in (10_000, 100_000))
    for step in CLI_GROWTH:
        label = f"{kind}: `{step}` per-record CPU and peak RSS 10k → 100k grow ≤ 1.5x"
        if not small or not big or _cpu(small, step) is None or _cpu(big, step) is None:
            found.append(Target(label, "not measured (no 10k and 100k end-to-end run)", None))
            continue
        cost = (_cpu(big, step) or 0) / 10 / (_cpu(small, step) or 1)
        rss = big[step]["peak_rss_mb"] / small[step]["peak_rss_mb"]
        found.append(Target(label, f"cost {cost:.2f}x, RSS {rss:.2f}x", cost <= 1.5 and rss <= 1.5))
    return found


START_UP_LIMIT = 0.1  # CPU seconds


def start_up_targets(start_up: Figures | None) -> list[Target]:
    found = []
    for name in ("version", "hook"):
        label = f"start-up: {START_UP[name]} ≤ {START_UP_LIMIT} s CPU"
        figures = (start_up or {}).get(name)
        if figures is None:
            found.append(Target(label, "not measured", None))
            continue
        cpu = figures["cpu_seconds"]
        found.append(Target(label, f"{cpu:.3f} s", cpu <= START_UP_LIMIT))
    return found


def git_targets(run: Run, kind: str) -> list[Target]:
    """The merge driver ≥ 4x the plain merge, and a pull ≤ 0.3x a first export, at the
    largest size the rows git drives were run."""
    sized = sorted(size for (size, k), r in run.results.items() if k == kind and r.get("git"))
    if not sized:
        return []
    git = run.results[(sized[-1], kind)]["git"]
    driver = git["plain"]["cpu_seconds"] / git["driver"]["cpu_seconds"]
    pulled = git["pull"]["cpu_seconds"] / git["first-export"]["cpu_seconds"]
    where = f"{kind} {sized[-1]:,}"
    found = [
        Target(
            f"{where}: the merge driver (a process) ≥ 4x the plain merge (a process), CPU",
            f"{driver:.1f}x",
            driver >= 4,
        ),
        Target(
            f"{where}: `git pull` of 1 % each side (driver + hook) ≤ 0.3x a first export, CPU",
            f"{pulled:.2f}x",
            pulled <= 0.3,
        ),
    ]
    share = git.get("pull-share")
    if share is not None:
        mine = (share["driver_cpu_seconds"] + share["hook_cpu_seconds"]) / (
            git["first-export"]["cpu_seconds"]
        )
        found.append(
            Target(
                f"{where}: dbsync's share of that pull (the driver and the hook, without git's "
                "own work) ≤ 0.3x a first export, CPU",
                f"{mine:.2f}x",
                mine <= 0.3,
            )
        )
    return found


MONGO_STEPS = {
    "export": "export (the first: every document read)",
    "export-same": "export again, nothing changed",
    "export-1%": "export after 1 % changed",
    "status": "status",
    "merge-0%": "merge of the snapshot folder, nothing to apply",
    "merge-1%": "merge of the other asset's snapshot (its 1 %)",
}
MONGO_READS = (("export-same", 0.10), ("status", 0.01))
"""Documents read from the server at most, as a share of the collection (issue 21)."""


def mongo_rows(run: Run) -> list[list[str]]:
    """The MongoDB rows: CPU of dbsync's process and of the server's, documents read."""
    table = []
    for (size, kind), steps in run.mongo.items():
        first = steps.get("export")
        for name, step in steps.items():
            read, held = step.get("documents_read"), step.get("documents") or size
            share = "—" if read is None else f"{read:,} of {held:,} ({read / held:.1%})"
            server = step.get("server_cpu_seconds")
            baseline = first if name.startswith("export-") and first else None
            table.append(
                [
                    f"{size:,}",
                    kind,
                    f"MongoDB (SecantusDB replica set) CLI `{step['command'].split(' /')[0]}`: "
                    f"{MONGO_STEPS.get(name, name)}",
                    f"{duration(step['seconds'])} wall, {step['cpu_seconds']:.2f} s CPU; "
                    f"documents read {share}, change events {step.get('events_read', '—')}; "
                    f"server {'—' if server is None else f'{server:.2f} s'} CPU",
                    f"first export {baseline['cpu_seconds']:.2f} s CPU" if baseline else "",
                    f"{step['cpu_seconds'] / baseline['cpu_seconds']:.2f}x" if baseline else "",
                    memory(step.get("peak_rss_mb")),
                    "",
                    _cli_outcome(step),
                ]
            )
    return table


def mongo_targets(run: Run) -> list[Target]:
    if not run.mongo:
        note = run.mongo_note or "no MongoDB run"
        return [
            Target(
                f"MongoDB: {name} reads ≤ {limit:.0%} of the documents",
                f"not measured ({note})",
                None,
            )
            for name, limit in MONGO_READS
        ]
    found = []
    for (size, kind), steps in run.mongo.items():
        for name, limit in MONGO_READS:
            label = f"MongoDB {kind} {size:,}: `{name}` reads ≤ {limit:.0%} of the documents"
            read = steps.get(name, {}).get("documents_read")
            held = steps.get(name, {}).get("documents") or size
            if read is None:
                found.append(Target(label, "not measured (the step failed)", None))
                continue
            found.append(Target(label, f"{read:,} ({read / held:.1%})", read <= limit * held))
    return found


def _million_targets(run: Run, kind: str) -> list[Target]:
    names = [
        f"{kind}: three-way merge of 1M ≥ 5x plain",
        f"{kind}: three-way merge of 1M within 10 s",
        f"{kind}: export of 1M, peak RSS < 1 GiB",
        f"{kind}: merge of 1M, peak RSS < 1 GiB",
        f"{kind}: export peak RSS 100k → 1M grows < 2x (documents 10x)",
        f"{kind}: merge peak RSS 100k → 1M grows < 2x (documents 10x)",
    ]
    million = run.results.get((MILLION, kind))
    if million is None:
        return [Target(name, "not measured (no 1M run)", None) for name in names]
    mer, pla, exp = million["merge"], million["plain"], million["export"]
    ratio = pla["seconds"] / mer["seconds"]
    found = [
        Target(names[0], f"{ratio:.1f}x", ratio >= 5),
        Target(names[1], duration(mer["seconds"]), mer["seconds"] <= 10),
        Target(names[2], memory(exp["peak_rss_mb"]), exp["peak_rss_mb"] < GIB),
        Target(names[3], memory(mer["peak_rss_mb"]), mer["peak_rss_mb"] < GIB),
    ]
    smaller = run.results.get((100_000, kind))
    for name, phase in zip(names[4:], ("export", "merge"), strict=True):
        if smaller is None:
            found.append(Target(name, "not measured (no 100k run)", None))
            continue
        growth = million[phase]["peak_rss_mb"] / smaller[phase]["peak_rss_mb"]
        figure = (
            f"{memory(smaller[phase]['peak_rss_mb'])} → {memory(million[phase]['peak_rss_mb'])}"
            f" ({growth:.2f}x)"
        )
        found.append(Target(name, figure, growth < 2))
    return found


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "**NOT MET**"


def render(run: Run) -> str:
    """The whole report in markdown: machine, results, targets."""
    box = machine()
    libraries = ", ".join(f"{name} {version}" for name, version in box["libraries"].items())
    header = [
        "docs",
        "data",
        "phase",
        "dbsync",
        "baseline",
        "speed-up",
        "peak RSS",
        "peak RSS baseline",
        "checks",
    ]
    target_rows = [[t.name, t.figure, _verdict(t.met)] for t in targets(run)]
    failed = run.failed_checks()
    return "\n\n".join(
        [
            f"Measured {run.date} on {box['cpu']}, {box['cores']} cores, {box['system']}, "
            f"Python {box['python']} ({libraries}); `{run.command}` took "
            f"{run.seconds / 60:.1f} min. Times are "
            + ("wall-clock" if run.clock == "wall" else "CPU time of each phase's process")
            + "; sizes in documents; peak RSS is each phase's own process (VmHWM).",
            markdown_table(header, rows(run)),
            markdown_table(["target", "measured", "verdict"], target_rows),
            *liveness_section(run.liveness),
            "Every check passed." if not failed else "Failed checks: " + "; ".join(failed),
        ]
    )


def write_docs(path: Path, run: Run) -> None:
    """Replace what lies between the markers of ``docs/benchmark.md``."""
    text = path.read_text()
    pattern = re.compile(re.escape(DOCS_START) + ".*?" + re.escape(DOCS_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path} has no '{DOCS_START}' ... '{DOCS_END}' markers")
    block = f"{DOCS_START}\n{render(run)}\n{DOCS_END}"
    path.write_text(pattern.sub(lambda _: block, text))


def main(argv: list[str]) -> None:
    """``python -m bench.report RUN.json [--write-docs]``: the report of a run saved with
    ``--json``, printed, or written into ``docs/benchmark.md``."""
    import json

    run = run_from_json(json.loads(Path(argv[0]).read_text()))
    if "--write-docs" in argv[1:]:
        write_docs(Path(__file__).resolve().parent.parent / "docs" / "benchmark.md", run)
    else:
        print(render(run))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
