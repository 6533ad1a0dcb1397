"""End-to-end rows: the real ``dbsync`` command on the embedded store, run as a user runs it.

In a project made in the prepared folder (``dbsync init``, the collection's rules), one
subprocess per command, each measured alone: wall time, CPU time (user + system, from
``os.wait4``) and peak RSS (its own ``VmHWM``, see ``bench.peak``). The steps, in order::

    import       this asset's documents (ours), from Extended JSON lines
    export       the first export
    export-same  again, nothing changed
    export-1%    after 1 % of the documents changed (an upsert import, not measured)
    status       the plain status
    verify       dbsync verify of the snapshot folder      (baseline of merge-0%)
    merge-0%     merge of the snapshot folder: nothing to apply
    (written)    the application writes through montydb's client: 10 inserts, 10 edits
    verify-live  dbsync verify of the snapshot folder again (baseline of merge-0%-live)
    merge-0%-live  merge of the snapshot folder: nothing to apply, but the database was
                 written since its export (the live case: no shortcut)
    verify-1%    dbsync verify of the other asset's snapshot (baseline of merge-1%)
    merge-1%     merge of it: its 1 % of changes
    merge-100%   merge of a snapshot where every record changed
    restore      dbsync restore of the backup merge-100% made

A verify and the merge it is the baseline of run one after the other, so that a change in the
machine's load hits both. A command running past ``TIMEOUT`` seconds is killed and reported;
if the import did not finish, the documents are put into the store in one write, unmeasured,
so that the other steps are measured all the same.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import bson
import montydb

from bench.data import Params
from bench.peak import PEAK_FILE
from dbsync.config import load_config
from dbsync.core import extjson
from dbsync.core.rules import Rules
from dbsync.core.snapshot import (
    Header,
    encode_record,
    line_body,
    write_section,
)
from dbsync.edges.parts import collection_files
from dbsync.edges.stores import open_store

DBSYNC = str(Path(sys.executable).with_name("dbsync"))
REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 300.0
STEPS = (
    "import",
    "export",
    "export-same",
    "export-1%",
    "status",
    "verify",
    "merge-0%",
    "verify-live",
    "merge-0%-live",
    "verify-1%",
    "merge-1%",
    "merge-100%",
    "restore",
)
Figures = dict[str, Any]


def timed(root: Path, *args: str, timeout: float = TIMEOUT) -> Figures:
    """One dbsync command in its own process: wall and CPU seconds, peak RSS (None: killed),
    exit code. The command runs through ``bench.peak``, which reports its own peak memory."""
    peak = root / "last-peak.txt"
    peak.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.peak", "--quiet", *args]
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, PEAK_FILE: str(peak), "PYTHONPATH": path}
    with (root / "last-output.txt").open("wb") as output:
        seconds, usage, code = wait_measured(command, root, env, output, timeout)
    return {
        "command": " ".join(["dbsync", *args]),
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": int(peak.read_text()) / 1024 if peak.is_file() else None,
        "code": code,
        "timed_out": code == -signal.SIGKILL,
    }


def wait_measured(
    command: list[str], cwd: Path, env: dict[str, str] | None, output: IO[bytes], timeout: float
) -> tuple[float, resource.struct_rusage, int]:
    """Run a command to its end (killed past ``timeout``): its wall seconds, its resource usage
    and that of every process it waited for (``wait4``), its exit code."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    killer = threading.Timer(timeout, os.kill, (process.pid, signal.SIGKILL))
    killer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage, process.returncode


def _project(folder: Path, params: Params) -> Path:
    root = folder / "project"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    init_project(root, params)
    return root


def init_project(
    root: Path,
    params: Params,
    asset: str = "bench",
    env: dict[str, str] | None = None,
    uri: str | None = None,
) -> None:
    """``dbsync init`` in ``root`` (the embedded store, or the database ``uri`` names), and the
    collection's rules in dbsync.toml."""
    init = [DBSYNC, "init", "--database", "bench", "--asset", asset]
    init += ["--uri", uri] if uri else []
    subprocess.run(init, cwd=root, check=True, capture_output=True, env=env)
    rules = params.rules
    with (root / "dbsync.toml").open("a") as config:
        config.write(f"\n[collections.{params.collection}]\n")
        config.write(f"key = {json.dumps(list(rules.key))}\n")
        if rules.timestamp:
            config.write(f"timestamp = {json.dumps(rules.timestamp)}\n")
        config.write(f"preserve = {json.dumps(list(rules.preserve))}\n")


def _documents_file(folder: Path, path: Path, every: int = 1) -> Path:
    """This asset's documents as Extended JSON lines (every ``every``-th, changed if > 1)."""
    with (folder / "ours.bson").open("rb") as source, path.open("wb") as out:
        for index, document in enumerate(bson.decode_file_iter(source)):
            if index % every:
                continue
            if every > 1:
                document = _changed(document)
            out.write(extjson.encode_document(document) + b"\n")
    return path


def _changed(document: dict[str, Any]) -> dict[str, Any]:
    """The document with one more field: the same key, another record."""
    return {**document, "bench_note": "changed"}


def _all_changed(folder: Path, snapshots: Path, target: Path, params: Params) -> Path:
    """A snapshot of the collection's records in ``snapshots`` (one file or its parts), every
    one changed (same keys)."""
    pairs = []
    for line in collection_files(snapshots)[params.collection].lines():
        document = extjson.decode_document(line_body(line))
        pairs.append(encode_record(_changed(document), params.rules.key))
    pairs.sort(key=lambda pair: pair[0])
    target.mkdir(parents=True, exist_ok=True)
    path = target / "all-changed.jsonl"
    with path.open("wb") as handle:
        write_section(handle, Header(params.collection, params.rules), (p[1] for p in pairs))
    return path


def _load_store(root: Path, folder: Path, collection: str) -> None:
    """This asset's documents put into the project's store in one write (not measured)."""
    config = load_config(cwd=root, environ={})
    store = open_store(*config.require_database())
    try:
        with (folder / "ours.bson").open("rb") as source:
            store.replace_collection(collection, bson.decode_file_iter(source))
    finally:
        store.close()


LIVE_WRITES = 10


def _application_writes(root: Path, collection: str, rules: Rules) -> None:
    """What a bot does between two exports, through montydb's own client (not measured): a few
    new records (on new keys) and a few edits, none of which the snapshot holds."""
    config = load_config(cwd=root, environ={})
    url, database = config.require_database()
    client = montydb.MontyClient(url.removeprefix("embedded://"))
    try:
        documents = client[database][collection]
        edited = [d["_id"] for d in documents.find({}, {"_id": 1}).limit(LIVE_WRITES)]
        for number, identifier in enumerate(edited):
            documents.update_one({"_id": identifier}, {"$set": {"bench_live": number}})
        for document in documents.find({}).limit(LIVE_WRITES):
            document.pop("_id")
            document["bench_live"] = "new"
            for field in rules.key:  # a key of its own, the timestamp left readable
                if field != rules.timestamp and isinstance(document.get(field), str):
                    document[field] += "-live"
            documents.insert_one(document)
    finally:
        client.close()


def _last_backup(root: Path) -> str | None:
    done = subprocess.run(
        [DBSYNC, "backups", "--json"], cwd=root, capture_output=True, text=True, check=False
    )
    found = json.loads(done.stdout or "[]")
    return str(found[0]["id"]) if found else None


def run_cli(folder: Path, timeout: float = TIMEOUT) -> dict[str, Figures]:
    """Every step, in order; a step after a failed or killed one that it needs is skipped."""
    params = Params.load(folder)
    root = _project(folder, params)
    collection = params.collection
    results: dict[str, Figures] = {}

    def step(name: str, *args: str) -> bool:
        results[name] = timed(root, *args, timeout=timeout)
        return bool(results[name]["code"] == 0)

    ours = _documents_file(folder, folder / "ours.json")
    if not step("import", "import", str(ours), "-c", collection):
        _load_store(root, folder, collection)  # so that the other steps are still measured
    step("export", "export")
    step("export-same", "export")
    one_percent = _documents_file(folder, folder / "changed.json", every=100)
    subprocess.run(
        [DBSYNC, "-q", "import", str(one_percent), "-c", collection, "--mode", "upsert"],
        cwd=root,
        check=False,
        capture_output=True,
        timeout=timeout,
    )
    step("export-1%", "export")
    step("status", "status")
    step("verify", "verify", "database_backup")
    step("merge-0%", "merge", "database_backup")
    _application_writes(root, collection, params.rules)
    step("verify-live", "verify", "database_backup")
    step("merge-0%-live", "merge", "database_backup")
    theirs = folder / "theirs.jsonl"
    step("verify-1%", "verify", str(theirs))
    step("merge-1%", "merge", str(theirs), "--allow-deletes")
    changed = _all_changed(folder, root / "database_backup", folder, params)
    if step("merge-100%", "merge", str(changed), "--allow-deletes"):
        backup = _last_backup(root)
        if backup is not None:
            step("restore", "restore", backup)
    return results


EXPORT_STEPS = ("export", "export-same", "export-1%", "status")


def run_exports(folder: Path, timeout: float = TIMEOUT) -> dict[str, Figures]:
    """The export steps alone (``EXPORT_STEPS``), this asset's documents put into the store in
    one write first (not measured): at sizes where the whole end-to-end run takes too long
    (1M: import, merge-100% and restore take most of an hour), the cost of a re-export."""
    params = Params.load(folder)
    root = _project(folder, params)
    _load_store(root, folder, params.collection)
    results = {name: timed(root, "export", timeout=timeout) for name in EXPORT_STEPS[:2]}
    one_percent = _documents_file(folder, folder / "changed.json", every=100)
    subprocess.run(
        [DBSYNC, "-q", "import", str(one_percent), "-c", params.collection, "--mode", "upsert"],
        cwd=root,
        check=False,
        capture_output=True,
        timeout=timeout,
    )
    results["export-1%"] = timed(root, "export", timeout=timeout)
    results["status"] = timed(root, "status", timeout=timeout)
    return results


def main(argv: list[str]) -> None:
    """``python -m bench.cli FOLDER [TIMEOUT]``: the rows as one JSON object;
    ``python -m bench.cli --exports FOLDER``: the export steps alone."""
    if argv[0] == "--exports":
        print(json.dumps(run_exports(Path(argv[1]))))
        return
    timeout = float(argv[1]) if len(argv) > 1 else TIMEOUT
    print(json.dumps(run_cli(Path(argv[0]), timeout)))


if __name__ == "__main__":
    main(sys.argv[1:])
