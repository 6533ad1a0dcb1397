"""On a MongoDB replica set, export, status and a merge's read of the database follow the
change: they read what changed since the last export through the collection's change stream
(CouchDB's ``_changes`` is the model), not every document; on a standalone server, which has
no change streams, they read every document and say so. Never ``dbHash``.

What the server sends is counted by a pymongo command listener (the documents in every
``find``/``getMore`` reply of the collection), not by dbsync's own accounting.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from project import Project
from pymongo import MongoClient, monitoring

from dbsync.config import Config, load_config
from dbsync.edges.change_index import INDEX_FILE
from dbsync.edges.mongo import MongoStore
from dbsync.edges.store import RetryPolicy
from dbsync.runs.export import export
from dbsync.runs.merge import merge_snapshot
from dbsync.runs.status import health
from tests.mongo_servers import MongoServer

DOCUMENTS = 20_000


@dataclass
class Reads(monitoring.CommandListener):
    """Documents of ``collection`` the server sent, and every command name seen."""

    collection: str = "items"
    documents: int = 0
    commands: list[str] = field(default_factory=list)
    cursors: set[int] = field(default_factory=set)
    active: bool = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active:
            self.commands.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if not self.active or event.command_name not in ("find", "getMore"):
            return
        cursor = event.reply.get("cursor", {})
        if not cursor.get("ns", "").endswith(f".{self.collection}"):
            return
        if event.command_name == "find":
            self.cursors.add(cursor.get("id", 0))
        elif cursor.get("id", 0) not in self.cursors and cursor.get("id", 0) != 0:
            return
        self.documents += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def counting(self) -> Reads:
        self.documents, self.commands, self.active = 0, [], True
        return self


READS = Reads()
monitoring.register(READS)  # every client this process makes reports to it (while active)


@pytest.fixture
def project(tmp_path: Path, mongo_server: MongoServer) -> Iterator[tuple[Config, MongoStore]]:
    root = tmp_path / "project"
    root.mkdir()
    database = mongo_server.new_database()
    Project(root).run("init", "--uri", mongo_server.uri, "--database", database, "--asset", "a")
    with mongo_server.client() as client:
        client[database]["items"].insert_many(
            [{"_id": n, "name": f"item {n}", "n": n} for n in range(DOCUMENTS)]
        )
    config = load_config(cwd=root, environ={})
    client: MongoClient[Any] = MongoClient(mongo_server.uri)
    store = MongoStore(client, database, retry=RetryPolicy(budget_seconds=0))
    yield config, store
    READS.active = False
    store.close()


def edit(store: MongoStore, numbers: range) -> None:
    for number in numbers:
        store._db["items"].update_one({"_id": number}, {"$set": {"name": "edited"}})


def full_export_matches(config: Config, store: MongoStore, tmp_path: Path) -> bool:
    export(config, store, target_dir=tmp_path / "full")
    return (tmp_path / "full" / "items.jsonl").read_bytes() == (
        config.snapshot_dir / "items.jsonl"
    ).read_bytes()


def test_on_a_replica_set_export_and_status_read_only_what_changed(project, mongo_server, tmp_path):
    if not mongo_server.replicated:
        pytest.skip("change streams: replica sets only (the standalone case is the next test)")
    config, store = project
    (first,) = export(config, store)
    assert first.read == "every document read"

    reads = READS.counting()
    (unchanged,) = export(config, store)
    assert reads.documents <= DOCUMENTS // 10, reads.documents  # target: ≤ 10 %
    assert reads.documents == 0 and not unchanged.changed
    assert unchanged.read == "change stream: 0 document(s) read"

    edit(store, range(0, DOCUMENTS, 100))  # 1 %
    reads = READS.counting()
    (changed,) = export(config, store)
    assert reads.documents == DOCUMENTS // 100, reads.documents
    assert changed.changed and changed.read == f"change stream: {DOCUMENTS // 100} document(s) read"
    READS.active = False
    assert full_export_matches(config, store, tmp_path)

    reads = READS.counting()
    document = health(config)
    assert reads.documents <= DOCUMENTS // 100, reads.documents  # target: ≤ 1 %
    assert reads.documents == 0
    assert not [r for r in document["reasons"] if r["check"] == "snapshot"], document["reasons"]
    assert "dbHash" not in reads.commands

    edit(store, range(5))
    reads = READS.counting()
    moved = health(config)
    assert reads.documents <= 5  # the changed documents only, to see that they did change
    assert any("not in the snapshot" in r["message"] for r in moved["reasons"]), moved

    for number in range(5):  # written back as they were: events, but nothing moved
        store._db["items"].update_one({"_id": number}, {"$set": {"name": f"item {number}"}})
    store._db["items"].update_one({"_id": 0}, {"$set": {"name": "edited"}})  # as exported
    reads = READS.counting()
    back = health(config)
    assert reads.documents <= 5
    assert not [r for r in back["reasons"] if r["check"] == "snapshot"], back["reasons"]


def test_a_merge_reads_only_what_changed_since_the_export(project, mongo_server, tmp_path):
    if not mongo_server.replicated:
        pytest.skip("change streams: replica sets only")
    config, store = project
    export(config, store)
    edit(store, range(0, DOCUMENTS, 1000))  # the application wrote since the export

    reads = READS.counting()
    report = merge_snapshot(config, store, config.snapshot_dir)

    assert reads.documents <= 2 * (DOCUMENTS // 1000), reads.documents  # read, and re-read to write
    assert report.collections["items"].common == DOCUMENTS - DOCUMENTS // 1000


def test_a_lost_resume_token_falls_back_to_reading_everything_and_says_so(project, mongo_server):
    if not mongo_server.replicated:
        pytest.skip("change streams: replica sets only")
    config, store = project
    export(config, store)
    with sqlite3.connect(config.state_dir / INDEX_FILE) as index:
        index.execute('UPDATE collections SET fingerprint = \'stream:{"_data": "00"}\'')
    edit(store, range(3))

    reads = READS.counting()
    (result,) = export(config, store)

    assert result.read == "every document read" and reads.documents == DOCUMENTS
    assert result.changed


def test_a_standalone_server_has_no_change_stream_reads_everything_and_never_hashes(
    project, mongo_server
):
    if mongo_server.replicated:
        pytest.skip("standalone only")
    config, store = project
    export(config, store)

    reads = READS.counting()
    (result,) = export(config, store)
    health(config)

    assert result.read == "every document read" and not result.changed
    assert reads.documents == 2 * DOCUMENTS  # the export, then status: both read everything
    assert "dbHash" not in reads.commands
