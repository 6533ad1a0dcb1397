"""MongoDB rows: the real ``dbsync`` command against a MongoDB replica set the bench starts itself.

The server is SecantusDB (MongoDB's wire protocol over WiredTiger, a test dependency), started
in replica-set mode on port 0 in a process of its own, as the tests start it
(``tests.mongo_servers``): transactions and change streams, what most users run. This asset's
documents (the prepared ``ours``) are put into it with pymongo (not measured); then each
command runs in a process of its own through ``bench.counted``, measured by ``os.wait4`` (wall
and CPU time of the dbsync process), with the documents the server sent for the collection
(``find``/``getMore`` replies) and the change-stream events it read, counted by a pymongo
command listener in that process, and the server's own CPU time over the command (from
``/proc``: the server is pure Python, and its work is not dbsync's)::

    export       the first export: every document read
    export-same  again, nothing changed: the change stream says so
    export-1%    after 1 % of the documents changed (pymongo updates, not measured)
    status       the plain status
    merge-0%     merge of the snapshot folder: nothing to apply
    merge-1%     merge of the other asset's snapshot: its 1 % of changes

Targets (issue 21): a re-export of unchanged data reads ≤ 10 % of the documents, ``status``
≤ 1 %. Without SecantusDB installed the rows are left out, and the report says so.

    python -m bench.mongo FOLDER     # a prepared folder (bench.phases prepare): JSON rows
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import bson

from bench.cli import REPO, TIMEOUT, init_project, wait_measured
from bench.counted import COLLECTION, COUNTS_FILE
from bench.data import Params

Figures = dict[str, Any]
STEPS = ("export", "export-same", "export-1%", "status", "merge-0%", "merge-1%")
LOAD_BATCH = 1000


def available() -> bool:
    """Whether SecantusDB is installed (a test dependency): without it, no MongoDB rows."""
    return importlib.util.find_spec("secantus") is not None


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counted(root: Path, collection: str, pid: int | None, *args: str) -> Figures:
    """One dbsync command in its own process (``bench.counted``), measured."""
    counts = root / "last-counts.json"
    counts.unlink(missing_ok=True)
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, COUNTS_FILE: str(counts), COLLECTION: collection, "PYTHONPATH": path}
    before = server_cpu(pid) if pid else 0.0
    output = root / "last-output.txt"
    with output.open("wb") as handle:
        command = [sys.executable, "-m", "bench.counted", *args]
        seconds, usage, code = wait_measured(command, root, env, handle, TIMEOUT)
    server = server_cpu(pid) - before if pid else None
    found = json.loads(counts.read_text()) if counts.is_file() else {}
    return {
        "command": " ".join(["dbsync", *args]),
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "server_cpu_seconds": server,
        "documents_read": found.get("documents"),
        "events_read": found.get("events"),
        "peak_rss_mb": found["peak_kib"] / 1024 if "peak_kib" in found else None,
        "code": code,
        "output": output.read_text(errors="replace")[-2000:],
    }


def _load(uri: str, database: str, collection: str, folder: Path) -> tuple[int, list[Any]]:
    """This asset's documents into the server (not measured): how many, and the ``_id`` of
    every 100th."""
    from pymongo import MongoClient

    chosen = []
    client: MongoClient[Any] = MongoClient(uri)
    with client, (folder / "ours.bson").open("rb") as source:
        target = client[database][collection]
        batch = []
        for index, document in enumerate(bson.decode_file_iter(source)):
            batch.append(document)
            if index % 100 == 0:
                chosen.append(document["_id"])
            if len(batch) >= LOAD_BATCH:
                target.insert_many(batch, ordered=True)
                batch = []
        if batch:
            target.insert_many(batch, ordered=True)
    return index + 1, chosen


def _edit(uri: str, database: str, collection: str, ids: list[Any]) -> None:
    """1 % of the documents changed by the application (not measured)."""
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(uri)
    with client:
        target = client[database][collection]
        for identifier in ids:
            target.update_one({"_id": identifier}, {"$set": {"bench_note": "changed"}})


def run_mongo(folder: Path) -> dict[str, Figures]:
    """Every step, in order, on a server started for them and stopped after."""
    from tests.mongo_servers import REPLICA_SET, start_server

    params = Params.load(folder)
    collection = params.collection
    server = start_server(REPLICA_SET, folder / "mongo-server")
    pid = server.process.pid if server.process is not None else None
    try:
        root = folder / "mongo-project"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        init_project(root, params, uri=server.uri)
        loaded, chosen = _load(server.uri, "bench", collection, folder)
        results: dict[str, Figures] = {}
        for name, args in (("export", ["export"]), ("export-same", ["export"])):
            results[name] = counted(root, collection, pid, *args)
        _edit(server.uri, "bench", collection, chosen)
        results["export-1%"] = counted(root, collection, pid, "export")
        results["status"] = counted(root, collection, pid, "status")
        results["merge-0%"] = counted(root, collection, pid, "merge", "database_backup")
        theirs = str(folder / "theirs.jsonl")
        results["merge-1%"] = counted(root, collection, pid, "merge", theirs, "--allow-deletes")
        for figures in results.values():
            figures["documents"] = loaded
        return results
    finally:
        server.stop()
        shutil.rmtree(folder / "mongo-server", ignore_errors=True)


def main(argv: list[str]) -> None:
    """``python -m bench.mongo FOLDER``: the rows as one JSON object."""
    print(json.dumps(run_mongo(Path(argv[0]))))


if __name__ == "__main__":
    main(sys.argv[1:])
