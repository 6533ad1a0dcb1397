"""Every write dbsync makes into MongoDB is safe on a real server: the faults seen when dbsync
first met a real wire-protocol server (SecantusDB), each reproduced through the console script.

The servers are SecantusDB processes (``tests/mongo_servers.py``), in replica-set mode
(transactions) and standalone mode (none); set ``DBSYNC_TEST_MONGODB_URI`` to run these
against a real mongod instead.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
import pytest
from project import Project, write_json_lines

from tests.cli_helpers import DATA
from tests.mongo_servers import MongoServer

PNL = json.loads(DATA.read_text())


def mongo_project(root: Path, server: MongoServer, database: str | None = None) -> Project:
    """A project whose database lives on ``server`` (a database of its own there)."""
    root.mkdir(parents=True, exist_ok=True)
    project = Project(root)
    name = database or server.new_database()
    project.run("init", "--uri", server.uri, "--database", name, "--asset", root.name)
    with (root / "dbsync.toml").open("a") as config:
        config.write('retry_seconds = 0\n[collections.pnl]\ntimestamp = "timestamp"\n')
    return project


def collection(project: Project, server: MongoServer, name: str = "pnl") -> Any:
    database = json.loads(project.run("status", "--json", expect=None).stdout)["database"]
    return server.client()[database][name]


def seeded(root: Path, server: MongoServer, documents: list[dict[str, Any]]) -> Project:
    project = mongo_project(root, server)
    project.run("import", str(write_json_lines(root / "seed.json", documents)), "-c", "pnl")
    project.run("export")
    return project


def edited(documents: list[dict[str, Any]], count: int, tag: str) -> list[dict[str, Any]]:
    """``documents`` with the first ``count`` given a newer timestamp and a new username."""
    changed = [dict(document) for document in documents]
    for document in changed[:count]:
        document["username"] = f"{tag}-{document['username']}"
        document["timestamp"] = "2030-01-01T00:00:00"
    return changed


def other_asset_snapshot(
    tmp_path: Path, server: MongoServer, documents: list[dict[str, Any]]
) -> Path:
    """Another asset's snapshot folder of ``documents`` (its own database on the server)."""
    other = seeded(tmp_path / "other", server, documents)
    return other.snapshots


@pytest.fixture
def server(mongo_server: MongoServer) -> MongoServer:
    return mongo_server


def test_restore_of_a_merge_backup_puts_every_record_back(tmp_path, server):
    asset = seeded(tmp_path / "a", server, PNL)
    before = asset.dump()
    theirs = other_asset_snapshot(tmp_path, server, edited(PNL, 10, "theirs"))
    asset.run("merge", str(theirs))
    assert asset.dump() != before

    restored = asset.run("restore", last_backup(asset))

    assert "cannot reach" not in restored.stderr
    assert asset.dump() == before


def last_backup(project: Project) -> str:
    return project.json("backups")[0]["id"]


def test_a_restore_keeps_what_the_application_changed_since_and_names_it(tmp_path, server):
    asset = seeded(tmp_path / "a", server, PNL)
    theirs = other_asset_snapshot(tmp_path, server, edited(PNL, 10, "theirs"))
    asset.run("merge", str(theirs))
    backup = last_backup(asset)
    items = collection(asset, server)
    changed_by_app = [PNL[0]["_id"], PNL[1]["_id"]]
    for key in changed_by_app:
        items.update_one({"_id": key}, {"$set": {"username": "app", "timestamp": "2031"}})

    restored = asset.run("restore", backup)

    names = {doc["_id"]: doc["username"] for doc in items.find()}
    assert [names[key] for key in changed_by_app] == ["app", "app"]
    assert all(names[doc["_id"]] == doc["username"] for doc in PNL[2:])
    assert "2 record(s) the application changed since were kept" in restored.stderr
    assert PNL[0]["_id"] in restored.stderr


def test_a_restore_is_itself_undone_by_restoring_its_backup(tmp_path, server):
    asset = seeded(tmp_path / "a", server, PNL)
    theirs = other_asset_snapshot(tmp_path, server, edited(PNL, 10, "theirs"))
    asset.run("merge", str(theirs))
    merged = asset.dump()
    asset.run("restore", last_backup(asset))

    asset.run("restore", last_backup(asset))  # the restore's own backup

    assert asset.dump() == merged


def test_a_record_with_a_top_level_dollar_field_is_merged(tmp_path, server):
    record = {"_id": "r1", "$price": 1.5, "timestamp": "2024-01-01T00:00:00", "username": "u"}
    asset = seeded(tmp_path / "a", server, [record])
    theirs = other_asset_snapshot(
        tmp_path, server, [{**record, "$price": 2.5, "timestamp": "2025-01-01T00:00:00"}]
    )

    asset.run("merge", str(theirs))

    assert collection(asset, server).find_one({"_id": "r1"})["$price"] == 2.5


UNUSUAL = {
    "_id": "odd",
    "timestamp": "2024-01-01T00:00:00",
    "ref": {"$id": 5, "$ref": "things", "extra": 1},  # a DBRef-like document, $id first
    "pattern": bson.Regex("^a.b", "smix"),
    "old": bson.Code("function () {}"),
}


WITH_NAN = {"_id": "odd", "timestamp": "2024-01-01T00:00:00", "ratio": float("nan")}


@pytest.mark.parametrize("stored", [UNUSUAL, WITH_NAN], ids=["dbref-like", "nan"])
def test_a_deletion_takes_on_a_record_whose_bytes_only_survive_raw(tmp_path, server, stored):
    """Sub-documents that look like DBRefs with their fields out of DBRef order, regex flags:
    decoded and encoded again they are other bytes. The merge compares the stored bytes, so
    the record deleted on the other asset is deleted here too, not kept as "changed".

    A document holding NaN equals itself on mongod ($expr $eq) but not on SecantusDB: on a
    standalone SecantusDB (no transaction, so the server compares) the deletion is refused
    (exit 5) rather than made blindly or skipped in silence; on mongod it takes."""
    if stored is WITH_NAN and not server.replicated and not server.external:
        asset, theirs, base = deletion_setup(tmp_path, server, stored)
        refused = asset.run("merge", str(theirs), "--base", str(base), expect=5)
        assert "did not apply a compare-and-set write" in refused.stderr
        assert sorted(doc["_id"] for doc in collection(asset, server).find()) == ["odd", "plain"]
        return
    asset, theirs, base = deletion_setup(tmp_path, server, stored)

    result = asset.run("merge", str(theirs), "--base", str(base), "--json")

    assert sorted(doc["_id"] for doc in collection(asset, server).find()) == ["plain"]
    assert json.loads(result.stdout)["collections"]["pnl"]["deleted"] == 1


def deletion_setup(
    tmp_path: Path, server: MongoServer, stored: dict[str, Any]
) -> tuple[Project, Path, Path]:
    """An asset holding ``stored`` and another record, exported; the other asset's snapshot
    without ``stored``; and the base both descend from (the asset's export)."""
    raw = bson.encode(stored)
    asset = mongo_project(tmp_path / "a", server)
    items = collection(asset, server)
    items.insert_one(bson.decode(raw, codec_options=bson.CodecOptions(document_class=dict)))
    items.insert_one({"_id": "plain", "timestamp": "2024-01-01T00:00:00"})
    asset.run("export")
    base = tmp_path / "base"
    base.mkdir()
    for path in asset.snapshots.iterdir():
        (base / path.name).write_bytes(path.read_bytes())
    theirs = other_asset_snapshot(
        tmp_path, server, [{"_id": "plain", "timestamp": "2024-01-01T00:00:00"}]
    )
    return asset, theirs, base


HOLDER = """
import os, signal, sys
from pymongo import MongoClient
uri, database, key = sys.argv[1], sys.argv[2], sys.argv[3]
client = MongoClient(uri)
session = client.start_session()
session.start_transaction()
client[database]["pnl"].update_one({"_id": key}, {"$set": {"held": True}}, session=session)
print("holding", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # as a dbsync killed mid-transaction: never committed
"""


def test_records_held_by_a_killed_transaction_are_waited_for_with_a_message(tmp_path):
    from tests.mongo_servers import REPLICA_SET, start_server

    server = start_server(REPLICA_SET, tmp_path / "mongo", transaction_lifetime=3.0)
    if server.external:
        pytest.skip("needs a server whose transaction lifetime the test sets")
    try:
        asset = seeded(tmp_path / "a", server, PNL)
        theirs = other_asset_snapshot(tmp_path, server, edited(PNL, 10, "theirs"))
        database = json.loads(asset.run("status", "--json", expect=None).stdout)["database"]
        held = subprocess.run(
            [sys.executable, "-c", HOLDER, server.uri, database, PNL[0]["_id"]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert held.returncode == -signal.SIGKILL and "holding" in held.stdout

        merged = asset.run("merge", str(theirs))

        assert "held by another transaction" in merged.stderr
        assert "cannot reach" not in merged.stderr and "is mongod running" not in merged.stderr
        assert (
            collection(asset, server)
            .find_one({"_id": PNL[0]["_id"]})["username"]
            .startswith("theirs-")
        )
    finally:
        server.stop()


def test_a_unique_index_clash_is_invalid_input_and_nothing_stays_written(tmp_path, server):
    asset = seeded(tmp_path / "a", server, PNL[:20])
    items = collection(asset, server)
    items.create_index("username", unique=True, partialFilterExpression={"clash": True})
    before = asset.dump()
    incoming = edited(PNL[:20], 20, "theirs")
    for document in incoming[-2:]:
        document.update(username="same", clash=True)
    theirs = other_asset_snapshot(tmp_path, server, incoming)

    result = asset.run("merge", str(theirs), expect=4)

    assert "unique index" in result.stderr and "cannot reach" not in result.stderr
    assert asset.dump() == before


def test_a_server_that_requires_a_password_says_so(tmp_path):
    from tests.mongo_servers import REPLICA_SET, MongoServer

    if os.environ.get("DBSYNC_TEST_MONGODB_URI"):
        pytest.skip("starts a SecantusDB server that requires authentication")
    server = MongoServer(REPLICA_SET, tmp_path / "mongo", auth=True)
    server.start()
    try:
        project = Project(tmp_path / "a")
        project.root.mkdir()
        project.run("init", "--uri", server.uri, "--database", "shop", "--asset", "a")
        (project.root / "items.json").write_text('{"_id": 1}\n')

        refused = project.run("import", "items.json", "-c", "items", expect=3)

        assert "requires a user name and password" in refused.stderr
        assert "mongodb://USER:PASSWORD@HOST/" in refused.stderr
    finally:
        server.stop()


def test_init_refuses_a_database_name_that_mongodb_refuses(tmp_path, server):
    project = Project(tmp_path)
    refused = project.run("init", "--uri", server.uri, "--database", "a.b", expect=2)
    assert "contains '.'" in refused.stderr
    assert not (tmp_path / "dbsync.toml").exists()


def test_a_capped_collection_is_merged_and_created_capped_on_another_asset(tmp_path, server):
    """MongoDB writes no capped collection inside a transaction: dbsync writes those outside
    (compare-and-set by filter), and carries the collection's size to a fresh asset."""
    a = mongo_project(tmp_path / "a", server)
    logs = collection(a, server, "log")
    logs.database.create_collection("log", capped=True, size=65536, max=100)
    logs.insert_many([{"_id": number, "v": 1, "ts": 1} for number in range(5)])
    a.run("export")
    carried = json.loads((a.snapshots / "log.collection.json").read_text())
    assert carried == {"capped": True, "max": 100, "size": 65536}
    b = mongo_project(tmp_path / "b", server)
    for project in (a, b):
        with (project.root / "dbsync.toml").open("a") as config:
            config.write('[collections.log]\ntimestamp = "ts"\n')

    b.run("merge", str(a.snapshots))
    logs.update_one({"_id": 1}, {"$set": {"v": 2, "ts": 2}})
    a.run("export")
    b.run("merge", str(a.snapshots))

    copy = collection(b, server, "log")
    assert copy.options() == {"capped": True, "size": 65536, "max": 100}
    assert [document["v"] for document in copy.find(sort=[("_id", 1)])] == [1, 2, 1, 1, 1]


def test_views_and_time_series_collections_are_left_out_and_said(tmp_path, server):
    a = seeded(tmp_path / "a", server, PNL[:5])
    database = collection(a, server).database
    database.create_collection("recent", viewOn="pnl", pipeline=[])
    database.create_collection("ticks", timeseries={"timeField": "t"})
    database["ticks"].insert_one({"t": datetime.datetime(2024, 1, 1), "v": 1})

    exported = a.run("export")
    refused = a.run("export", "-c", "recent", expect=2)

    assert sorted(path.name for path in a.snapshots.glob("*.jsonl")) == ["pnl.jsonl"]
    assert "recent is not exported: it is a view" in exported.stderr
    assert "ticks is not exported: it is a time-series collection" in exported.stderr
    assert "recent is a view" in refused.stderr
