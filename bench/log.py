"""``dbsync log`` on a long history: 1,000 commits of a 100,000-record collection.

The history is built cheaply with ``git fast-import``, in the files export writes the collection
in (export's rule: one file up to 50 MB, so 100,000 PNL records are one file of about 33 MB;
past it, parts): each commit rewrites the one file its change falls in.
Each commit edits one random record; every ``EVERY``-th commit edits the record the log follows.
Then the real ``dbsync log KEY --json`` runs in a subprocess: its wall time, CPU time and peak
RSS are measured, and the versions it lists are checked against the edits that were made.

    python -m bench.log [FOLDER] [RECORDS] [COMMITS]
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash

from bench.data import documents
from dbsync.core import extjson
from dbsync.core.commit_subject import snapshot_subject
from dbsync.core.ordering import SortKey, part_of
from dbsync.core.rules import Rules
from dbsync.core.snapshot import (
    Header,
    encode_record,
    line_document,
    line_hash_bytes,
    record_line,
    snapshot_filename,
    trailer_line,
)
from dbsync.edges.parts import MAX_FILE_BYTES, part_count

RECORDS, COMMITS, EVERY = 100_000, 1_000, 50
TARGET_SECONDS = 5.0
COLLECTION = "pnl_log"
RULES = Rules(("_id",), "timestamp", ())
DBSYNC = str(Path(sys.executable).with_name("dbsync"))
Figures = dict[str, Any]


def export_parts(lines: list[bytes]) -> int:
    """How many files export writes a collection of these lines in: one up to the file limit,
    past it as many parts as ``part_count`` chooses (export's own rule and functions)."""
    size = len(Header(COLLECTION, RULES).line()) + sum(map(len, lines)) + 100
    return 1 if size <= MAX_FILE_BYTES else part_count(size, 2)


class Layout:
    """The collection's files as export writes them; each edit rewrites one file's bytes."""

    def __init__(self, keyed: list[tuple[SortKey, bytes]]) -> None:
        self.count = export_parts([line for _, line in keyed])
        self.lines: list[list[bytes]] = [[] for _ in range(self.count)]
        for key, line in keyed:
            index = part_of(key, self.count) if self.count > 1 else 0
            self.lines[index].append(line)
        # the record hashes of each file, in order: the trailer's digest without a walk
        self.hashes = [bytearray(b"".join(map(line_hash_bytes, part))) for part in self.lines]
        self.filled = [index for index in range(self.count) if self.lines[index]]

    def part(self, index: int) -> tuple[int, int] | None:
        return (index, self.count) if self.count > 1 else None

    def path(self, index: int) -> str:
        return "database_backup/" + snapshot_filename(COLLECTION, self.part(index))

    def file_bytes(self, index: int) -> bytes:
        header = Header(COLLECTION, RULES, self.part(index)).line()
        digest = xxhash.xxh3_128(header)
        digest.update(bytes(self.hashes[index]))
        trailer = trailer_line(len(self.lines[index]), digest.hexdigest())
        return b"".join([header, *self.lines[index], trailer])

    def offset(self, index: int, position: int) -> int:
        """Where the record at ``position`` starts in the file's bytes."""
        header = len(Header(COLLECTION, RULES, self.part(index)).line())
        return header + sum(map(len, self.lines[index][:position]))

    def replace(self, index: int, position: int, line: bytes) -> None:
        self.lines[index][position] = line
        self.hashes[index][16 * position : 16 * position + 16] = line_hash_bytes(line)


def edited(line: bytes, value: int) -> bytes:
    document = line_document(line)
    document["profit_usd"] = float(value)
    return record_line(extjson.dumps_json(document))


class BlobPack:
    """The blobs of the history as one git pack, written directly: every file version a delta
    of the one before (copy the bytes around the edited line, insert the new line and
    trailer), a full blob every ``DEPTH`` versions, as git keeps chains of at most 50. Git
    would spend about a second computing each delta of a 33 MB file; this is the same pack."""

    DEPTH = 50

    def __init__(self, path: Path, count: int) -> None:
        self.file = path.open("wb")
        self.hasher = hashlib.sha1()
        self._write(b"PACK" + struct.pack(">II", 2, count))
        self.bases: dict[str, tuple[bytes, int, int]] = {}  # path: (id, size, depth)

    def _write(self, data: bytes) -> None:
        self.file.write(data)
        self.hasher.update(data)

    def add(self, path: str, data: bytes, delta: bytes | None) -> str:
        """Add a file version (``delta``: against the path's last version); its blob id."""
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).digest()
        base = self.bases.get(path)
        if delta is None or base is None or base[2] >= self.DEPTH:
            self._write(_object_header(3, len(data)) + zlib.compress(data, 1))
            depth = 0
        else:
            self._write(_object_header(7, len(delta)) + base[0] + zlib.compress(delta))
            depth = base[2] + 1
        self.bases[path] = (sha, len(data), depth)
        return sha.hex()

    def finish(self) -> None:
        self.file.write(self.hasher.digest())
        self.file.close()


def _object_header(kind: int, size: int) -> bytes:
    out = bytearray()
    byte = (kind << 4) | (size & 15)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte, size = size & 0x7F, size >> 7
    out.append(byte)
    return bytes(out)


def _varint(size: int) -> bytes:
    out = bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out)


def _copy(offset: int, size: int) -> bytes:
    out = bytearray()
    while size:
        chunk = min(size, 0xFFFFFF)
        command, operands = 0x80, bytearray()
        for bit, value in enumerate([*offset.to_bytes(4, "little"), *chunk.to_bytes(3, "little")]):
            if value:
                command |= 1 << bit
                operands.append(value)
        out += bytes([command]) + operands
        offset, size = offset + chunk, size - chunk
    return bytes(out)


def _insert(data: bytes) -> bytes:
    chunks = (data[at : at + 127] for at in range(0, len(data), 127))
    return b"".join(bytes([len(chunk)]) + chunk for chunk in chunks)


def line_delta(old: bytes, new: bytes, start: int, old_line: int, old_trailer: int) -> bytes:
    """The git delta from ``old`` to ``new``, which differ in the line at ``start`` (``old_line``
    bytes in ``old``) and in the trailer (the last ``old_trailer`` bytes of ``old``)."""
    new_line = new.index(b"\n", start) + 1
    tail = len(old) - old_trailer - (start + old_line)
    return b"".join(
        [
            _varint(len(old)),
            _varint(len(new)),
            _copy(0, start),
            _insert(new[start:new_line]),
            _copy(start + old_line, tail),
            _insert(new[new_line + tail :]),
        ]
    )


def _commit(number: int, message: str, files: list[tuple[str, str]]) -> bytes:
    text = message.encode()
    head = b"commit refs/heads/main\ncommitter bench <bench@dbsync.invalid> %d +0000\n" % (
        1_700_000_000 + number
    )
    changes = b"".join(b"M 100644 %s %s\n" % (sha.encode(), path.encode()) for path, sha in files)
    return head + b"data %d\n%s\n" % (len(text), text) + changes


def build_history(repo: Path, records: int, commits: int, seed: int = 1) -> tuple[str, int, int]:
    """A repository whose history holds ``commits`` snapshot commits of one collection, in the
    files export writes it in (one file for 100,000 PNL records: about 33 MB); returns the
    followed ``_id`` (as ``dbsync log`` takes it), how many edits it had and the file count."""
    keyed = sorted(encode_record(doc, RULES.key) for doc in documents("pnl", seed, range(records)))
    layout = Layout(keyed)
    followed_part = layout.filled[0]
    followed_index = len(layout.lines[followed_part]) // 2
    followed = line_document(layout.lines[followed_part][followed_index])["_id"]["$oid"]
    rng = random.Random(seed)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    pack_path = repo / ".git" / "bench.pack"
    pack = BlobPack(pack_path, 1 + layout.count + commits - 1)
    config = b'database = "bench"\n[collections.pnl_log]\ntimestamp = "timestamp"\n'
    first = [("dbsync.toml", pack.add("dbsync.toml", config, None))]
    current = {}
    for index in range(layout.count):
        current[index] = layout.file_bytes(index)
        first.append((layout.path(index), pack.add(layout.path(index), current[index], None)))
    history = [_commit(0, snapshot_subject("bench", records), first)]
    edits = 0
    for number in range(1, commits):
        if number % EVERY == 0:
            index, position = followed_part, followed_index
            edits += 1
        else:
            index, position = followed_part, followed_index
            while (index, position) == (followed_part, followed_index):  # others only
                index = rng.choice(layout.filled)
                position = rng.randrange(len(layout.lines[index]))
        old, old_line = current[index], layout.lines[index][position]
        start = layout.offset(index, position)
        layout.replace(index, position, edited(old_line, number))
        current[index] = new = layout.file_bytes(index)
        trailer = len(old) - old.rindex(b"\n", 0, len(old) - 1) - 1
        delta = line_delta(old, new, start, len(old_line), trailer)
        sha = pack.add(layout.path(index), new, delta)
        message = snapshot_subject(f"asset-{number % 3}", records)
        history.append(_commit(number, message, [(layout.path(index), sha)]))
    pack.finish()
    with pack_path.open("rb") as packed:
        subprocess.run(
            ["git", "index-pack", "--stdin"],
            cwd=repo,
            stdin=packed,
            stdout=subprocess.DEVNULL,
            check=True,
        )
    pack_path.unlink()
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(history), check=True)
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=repo, check=True)
    return followed, edits, layout.count


def run_dbsync(repo: Path, *args: str) -> tuple[Figures, bytes]:
    """One dbsync command in its own process: wall and CPU seconds, peak RSS, its output."""
    command = [DBSYNC, *args]
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
        printed = output.read()
    figures = {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }
    return figures, printed


def run_log(repo: Path, key: str) -> tuple[Figures, list[Any]]:
    """``dbsync log KEY --json``: its figures and the versions it lists."""
    figures, printed = run_dbsync(
        repo, "log", f"ObjectId({key})", "--collection", COLLECTION, "--json"
    )
    versions: list[Any] = json.loads(printed)["versions"]
    return figures, versions


def indexed_pairs(repo: Path) -> int:
    """The pairs of file versions the log index holds (0: no index)."""
    path = repo / "database_sync" / "log-index.sqlite"
    if not path.is_file():
        return 0
    with sqlite3.connect(path) as connection:
        found = int(connection.execute("SELECT count(*) FROM pairs").fetchone()[0])
    connection.close()
    return found


def measure(folder: Path, records: int = RECORDS, commits: int = COMMITS) -> Figures:
    """Build the history (not measured), then measure what the post-commit hook adds for the
    last commit (its pair in the log index, as a hook run after each snapshot commit does),
    and ``dbsync log`` twice: cold (a history made without the hooks: the log reads every
    version's blob and fills the index) and warm (the index built, by the hooks as the commits
    arrived or by an earlier log)."""
    started = time.perf_counter()
    key, edits, files = build_history(folder / "repo", records, commits)
    built = time.perf_counter() - started
    figures: Figures = {
        "records": records,
        "commits": commits,
        "files": files,
        "build_seconds": built,
        "checks": {},
    }
    expected = [float(n) for n in range(commits - 1, 0, -1) if n % EVERY == 0]
    figures["hook"], _ = run_dbsync(folder / "repo", "hook", "post-commit")
    figures["checks"]["the post-commit hook indexed the last commit"] = (
        indexed_pairs(folder / "repo") == 1
    )
    for run in ("cold", "warm"):
        figures[run], versions = run_log(folder / "repo", key)
        events = [version["event"] for version in versions]
        values = [version["document"]["profit_usd"] for version in versions[:-1]]
        figures[run]["versions"] = len(versions)
        figures["checks"].update(
            {
                f"{run}: every edit of the record listed, newest first": values == expected,
                f"{run}: one creation, then changes": events == ["changed"] * edits + ["created"],
            }
        )
    figures["checks"]["the log index was built by the cold run"] = (
        folder / "repo" / "database_sync" / "log-index.sqlite"
    ).is_file()
    return figures


def measure_for(folder: Path, sizes: tuple[int, ...], say: Callable[[str], None]) -> Figures:
    """The log phase of a bench run: full size when the run reaches 100k, else a small one."""
    full = max(sizes) >= RECORDS
    records, commits = (RECORDS, COMMITS) if full else (min(max(sizes), RECORDS), 2 * EVERY)
    figures = measure(folder, records, commits)
    shutil.rmtree(folder, ignore_errors=True)
    cold, warm = figures["cold"]["seconds"], figures["warm"]["seconds"]
    hook = figures["hook"]["seconds"]
    say(
        f"  log: {commits:,} commits of {records:,} records: {cold:.2f} s cold, {warm:.2f} s "
        f"warm; the post-commit hook indexing one commit {hook:.2f} s"
    )
    return figures


def rows(figures: Figures | None) -> list[list[str]]:
    """The rows of the results table (``bench.report``): the hook, cold, then warm."""
    if not figures:
        return []
    failed = [name for name, ok in figures["checks"].items() if not ok]
    found = []
    runs = (
        ("hook", "`dbsync hook post-commit`: the last commit into the log index"),
        ("cold", "cold (history made without the hooks: the log builds the index)"),
        ("warm", "warm (the log index built: by the hooks as commits came, or an earlier log)"),
    )
    for run, what in runs:
        measured = figures.get(run)
        if measured is None:
            continue
        listed = f"; {measured['versions']} versions" if "versions" in measured else ""
        found.append(
            [
                f"{figures['records']:,}",
                "pnl",
                f"dbsync log KEY: {figures['commits']:,} commits, {figures['files']} file(s); "
                f"{what} (history built in {figures['build_seconds']:.0f} s, not counted)",
                f"{measured['seconds']:.2f} s (CPU {measured['cpu_seconds']:.2f} s){listed}",
                "",
                "",
                f"{measured['peak_rss_mb']:.0f} MiB",
                "",
                "ok" if not failed else "FAILED: " + "; ".join(failed),
            ]
        )
    return found


def target(figures: Figures | None) -> tuple[str, str, bool | None]:
    """Judged on the warm run: the cold one reads every version once, to build the index."""
    name = (
        f"dbsync log of 1,000 commits of a 100k-record collection within {TARGET_SECONDS:.0f} s "
        "(log index built)"
    )
    if not figures:
        return name, "not measured", None
    seconds = figures["warm"]["seconds"]
    return name, f"{seconds:.2f} s", seconds <= TARGET_SECONDS


if __name__ == "__main__":
    arguments = sys.argv[1:]
    where = Path(arguments[0]) if arguments else Path(tempfile.mkdtemp(prefix="dbsync-log-"))
    sizes = [int(a) for a in arguments[1:3]]
    print(json.dumps(measure(where, *sizes), indent=1))
