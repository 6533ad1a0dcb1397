"""An import interrupted part-way leaves the collection as it was, and says what is true.

Ctrl-C (a real SIGINT, sent by the import to itself once it is writing: ``tests/killpoints``)
during the writes: on the embedded store the import is one transaction, rolled back; on
MongoDB the batches written are undone from the import's backup before it exits 130. SIGKILL
(which nothing intercepts) on MongoDB: the import is left in the journal, ``status`` names the
restore that undoes it, and following it puts the collection back.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from project import Project, clean_env, write_json_lines

from tests import killpoints
from tests.mongo_servers import MongoServer

DOCUMENTS = {"embedded": 2500, "replica-set": 1200, "standalone": 300}
"""Two batches of writes on a replica set; one on a standalone SecantusDB, whose compare-and-set
filter ({_id, $expr}) scans the collection where mongod uses the _id index."""
WHILE_WRITING = {
    "embedded": "dbsync.edges.embedded:_write_change:1200",  # inside the one transaction
    "replica-set": "dbsync.edges.mongo:MongoStore._cas_in_transaction:1",  # a batch committed
    "standalone": "dbsync.edges.mongo:read_raw:1",  # the first batch written, read back
}


@pytest.fixture(params=list(WHILE_WRITING))
def project(request, tmp_path) -> tuple[str, Project]:
    root = tmp_path / "project"
    root.mkdir()
    uri: list[str] = []
    if request.param != "embedded":
        fixture = "replica_set" if request.param == "replica-set" else "standalone"
        server: MongoServer = request.getfixturevalue(fixture)
        uri = ["--uri", server.uri, "--database", server.new_database()]
    project = Project(root)
    project.run("init", *uri, "--asset", "a")
    existing = [{"_id": n, "v": "before"} for n in range(0, DOCUMENTS[request.param], 2)]
    project.run("import", str(write_json_lines(root / "existing.json", existing)), "-c", "items")
    project.run("export")
    return request.param, project


def incoming(root: Path, store: str) -> Path:
    return write_json_lines(
        root / "incoming.json", [{"_id": n, "v": "imported"} for n in range(DOCUMENTS[store])]
    )


def test_ctrl_c_while_an_import_writes_leaves_the_collection_as_it_was(project, tmp_path):
    store, asset = project
    before = asset.dump("items")
    env = clean_env(**killpoints.at(tmp_path / "signal", WHILE_WRITING[store], "SIGINT"))

    stopped = asset.run(
        "import",
        str(incoming(asset.root, store)),
        "-c",
        "items",
        "--mode",
        "upsert",
        expect=130,
        env=env,
    )

    assert "interrupted (Ctrl-C): nothing was left half-written" in stopped.stderr
    assert asset.dump("items") == before
    status = asset.json("status")
    assert status["status"] == "HEALTHY", status["reasons"]


def test_an_import_killed_on_mongodb_is_undone_by_the_restore_status_names(project, tmp_path):
    store, asset = project
    if store == "embedded":
        pytest.skip("the embedded store's import is one transaction: a kill leaves nothing")
    before = asset.dump("items")
    env = clean_env(**killpoints.at(tmp_path / "kill", WHILE_WRITING[store]))
    asset.run(
        "import",
        str(incoming(asset.root, store)),
        "-c",
        "items",
        "--mode",
        "upsert",
        expect=-9,
        env=env,
    )
    assert asset.dump("items") != before  # a batch was written before the kill

    refused = asset.run("export", expect=5)
    status = asset.json("status", expect=None)
    fixes = [re.search(r"run '(dbsync [^']+)'", r["fix"]) for r in status["reasons"]]
    command = next(found.group(1) for found in fixes if found)
    assert "the import of items" in refused.stderr and command.startswith("dbsync restore ")
    asset.run(*shlex.split(command)[1:])

    assert asset.dump("items") == before
    assert asset.json("status")["status"] == "HEALTHY"


def test_an_import_is_undone_by_restoring_its_backup(project, tmp_path):
    store, asset = project
    before = asset.dump("items")
    imported: dict[str, Any] = asset.json(
        "import", str(incoming(asset.root, store)), "-c", "items", "--mode", "upsert"
    )

    asset.run("restore", imported["backup"])

    assert asset.dump("items") == before
    stats = json.loads(asset.run("stats", "--json").stdout)
    assert stats["collections"]["items"]["count"] == DOCUMENTS[store] // 2
