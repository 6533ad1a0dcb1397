"""``dbsync log`` on a long history: 1,000 commits of a 100,000-record collection.

The history is built cheaply with ``git fast-import``: the collection is written once in parts
(as export writes a split collection: each part a complete, sorted, hashed section), then every
commit rewrites the one part its change falls in, and git reuses the blob of every other part.
Each commit edits one random record; every ``EVERY``-th commit edits the record the log follows.
Then the real ``dbsync log KEY --json`` runs in a subprocess: its wall time, CPU time and peak
RSS are measured, and the versions it lists are checked against the edits that were made.

    python -m bench.log [FOLDER] [RECORDS] [COMMITS]
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.data import documents
from dbsync.core import extjson
from dbsync.core.ordering import SortKey, part_of
from dbsync.core.rules import Rules
from dbsync.core.snapshot import (
    Digest,
    Header,
    encode_record,
    line_document,
    record_line,
    snapshot_filename,
)

RECORDS, COMMITS, PARTS, EVERY = 100_000, 1_000, 64, 50
TARGET_SECONDS = 5.0
COLLECTION = "pnl_log"
RULES = Rules(("_id",), "timestamp", ())
DBSYNC = str(Path(sys.executable).with_name("dbsync"))
Figures = dict[str, Any]


def part_bytes(index: int, lines: list[bytes]) -> bytes:
    header = Header(COLLECTION, RULES, (index, PARTS))
    digest = Digest(header.line())
    for line in lines:
        digest.add(line)
    return b"".join([header.line(), *lines, digest.trailer()])


def part_path(index: int) -> str:
    return "database_backup/" + snapshot_filename(COLLECTION, (index, PARTS))


def edited(line: bytes, value: int) -> bytes:
    document = line_document(line)
    document["profit_usd"] = float(value)
    return record_line(extjson.dumps_json(document))


def _blob(path: str, data: bytes) -> bytes:
    return b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data)


def _commit(number: int, message: str, files: list[bytes]) -> bytes:
    text = message.encode()
    head = b"commit refs/heads/main\ncommitter bench <bench@dbsync.invalid> %d +0000\n" % (
        1_700_000_000 + number
    )
    return head + b"data %d\n%s\n" % (len(text), text) + b"".join(files)


def build_history(repo: Path, records: int, commits: int, seed: int = 1) -> tuple[str, int]:
    """A repository whose history holds ``commits`` snapshot commits of one collection;
    returns the followed ``_id`` (as ``dbsync log`` takes it) and how many edits it had."""
    keyed = sorted(encode_record(doc, RULES.key) for doc in documents("pnl", seed, range(records)))
    parts: list[list[tuple[SortKey, bytes]]] = [[] for _ in range(PARTS)]
    for key, line in keyed:
        parts[part_of(key, PARTS)].append((key, line))
    filled = [index for index in range(PARTS) if parts[index]]  # a small run leaves some empty
    followed_part = filled[0]
    followed_index = len(parts[followed_part]) // 2
    followed = line_document(parts[followed_part][followed_index][1])["_id"]["$oid"]
    rng = random.Random(seed)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    config = b'database = "bench"\n[collections.pnl_log]\ntimestamp = "timestamp"\n'
    importer = subprocess.Popen(
        ["git", "-c", "pack.compression=1", "fast-import", "--quiet", "--big-file-threshold=64k"],
        cwd=repo,
        stdin=subprocess.PIPE,
    )
    assert importer.stdin is not None
    first = [_blob("dbsync.toml", config)]
    for index in range(PARTS):
        lines = [line for _, line in parts[index]]
        first.append(_blob(part_path(index), part_bytes(index, lines)))
    importer.stdin.write(_commit(0, f"dbsync: bench snapshot ({records} records)", first))
    edits = 0
    for number in range(1, commits):
        if number % EVERY == 0:
            index, position = followed_part, followed_index
            edits += 1
        else:
            index, position = followed_part, followed_index
            while (index, position) == (followed_part, followed_index):  # others only
                index = rng.choice(filled)
                position = rng.randrange(len(parts[index]))
        key, line = parts[index][position]
        parts[index][position] = (key, edited(line, number))
        lines = [line for _, line in parts[index]]
        change = _blob(part_path(index), part_bytes(index, lines))
        message = f"dbsync: asset-{number % 3} snapshot ({records} records)"
        importer.stdin.write(_commit(number, message, [change]))
    importer.stdin.close()
    if importer.wait() != 0:
        raise RuntimeError("git fast-import failed")
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=repo, check=True)
    return followed, edits


def run_log(repo: Path, key: str) -> tuple[Figures, list[Any]]:
    """``dbsync log KEY --json`` in its own process: wall and CPU seconds, peak RSS, versions."""
    command = [DBSYNC, "log", f"ObjectId({key})", "--collection", COLLECTION, "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DBSYNC_"))}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command, cwd=repo, stdout=output, stderr=subprocess.PIPE, env=env
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        assert process.stderr is not None
        problem = process.stderr.read().decode()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {problem}")
        output.seek(0)
        versions = json.loads(output.read())["versions"]
    figures = {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }
    return figures, versions


def measure(folder: Path, records: int = RECORDS, commits: int = COMMITS) -> Figures:
    """Build the history (not measured), then measure one ``dbsync log``."""
    started = time.perf_counter()
    key, edits = build_history(folder / "repo", records, commits)
    built = time.perf_counter() - started
    figures, versions = run_log(folder / "repo", key)
    events = [version["event"] for version in versions]
    values = [version["document"]["profit_usd"] for version in versions[:-1]]
    expected = [float(n) for n in range(commits - 1, 0, -1) if n % EVERY == 0]
    figures.update(
        records=records,
        commits=commits,
        parts=PARTS,
        versions=len(versions),
        build_seconds=built,
        checks={
            "every edit of the record listed, newest first": values == expected,
            "one creation, then changes": events == ["changed"] * edits + ["created"],
        },
    )
    return figures


def measure_for(folder: Path, sizes: tuple[int, ...], say: Callable[[str], None]) -> Figures:
    """The log phase of a bench run: full size when the run reaches 100k, else a small one."""
    full = max(sizes) >= RECORDS
    records, commits = (RECORDS, COMMITS) if full else (min(max(sizes), RECORDS), 2 * EVERY)
    figures = measure(folder, records, commits)
    shutil.rmtree(folder, ignore_errors=True)
    say(f"  log: {commits:,} commits of {records:,} records in {figures['seconds']:.2f} s")
    return figures


def rows(figures: Figures | None) -> list[list[str]]:
    """The row of the results table (``bench.report``)."""
    if not figures:
        return []
    failed = [name for name, ok in figures["checks"].items() if not ok]
    return [
        [
            f"{figures['records']:,}",
            "pnl",
            f"dbsync log KEY: {figures['commits']:,} commits, {figures['parts']} parts "
            f"(history built in {figures['build_seconds']:.0f} s, not counted)",
            f"{figures['seconds']:.2f} s (CPU {figures['cpu_seconds']:.2f} s); "
            f"{figures['versions']} versions",
            "",
            "",
            f"{figures['peak_rss_mb']:.0f} MiB",
            "",
            "ok" if not failed else "FAILED: " + "; ".join(failed),
        ]
    ]


def target(figures: Figures | None) -> tuple[str, str, bool | None]:
    name = f"dbsync log of 1,000 commits of a 100k-record collection within {TARGET_SECONDS:.0f} s"
    if not figures:
        return name, "not measured", None
    return name, f"{figures['seconds']:.2f} s", figures["seconds"] <= TARGET_SECONDS


if __name__ == "__main__":
    arguments = sys.argv[1:]
    where = Path(arguments[0]) if arguments else Path(tempfile.mkdtemp(prefix="dbsync-log-"))
    sizes = [int(a) for a in arguments[1:3]]
    print(json.dumps(measure(where, *sizes), indent=1))
