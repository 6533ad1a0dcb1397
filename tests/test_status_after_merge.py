"""After a pull's merge, ``status`` knows the database holds what it merged.

Two assets through a bare remote, the real hooks and the real ``dbsync`` command, on each store:
a ``git pull`` that brings a change merges it (the post-merge hook); ``status`` then says the
database and the snapshot agree, an export right after writes nothing and reads only what the
merge wrote, and a write of the application after the merge still makes ``status`` say the
database changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dbsync.config import load_config
from tests.git_helpers import Repo, real_records
from tests.mongo_servers import STANDALONE, STORES

RECORDS = real_records()


def pulled_change(a: Repo, b: Repo, **env: str) -> None:
    """``b`` exported what it merged once; ``a`` then edits, adds and deletes records, pushes,
    and ``b`` pulls (with ``env``): its hook merges the change three-way."""
    a.import_records(RECORDS[:30])
    a.push_snapshot()
    b.git("pull")
    b.dbsync("export")
    edited = {**RECORDS[0], "username": "@edited", "timestamp": "2025-09-02T00:00:00"}
    a.import_records([*RECORDS[30:35], edited], mode="upsert")
    a.delete_records([RECORDS[7]["_id"]])
    a.push_snapshot()
    pulled = b.git("pull", **env)
    assert "merged database_backup into the database (three-way)" in pulled.err
    assert a.snapshot() == b.snapshot()


def status_of(repo: Repo) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(repo.dbsync("status", "--json", ok=False).out)
    return document


def snapshot_reasons(status: dict[str, Any]) -> list[dict[str, str]]:
    return [reason for reason in status["reasons"] if reason["check"] == "snapshot"]


@pytest.mark.parametrize("store_pair", STORES, indirect=True)
def test_after_a_pull_status_says_the_database_holds_what_it_merged(
    store_pair: tuple[Repo, Repo], request: pytest.FixtureRequest
) -> None:
    a, b = store_pair
    pulled_change(a, b)
    status = status_of(b)
    assert status["status"] == "HEALTHY", status["reasons"]
    deep = status_of_deep(b)
    assert deep["status"] == "HEALTHY", deep["reasons"]
    exported = json.loads(b.dbsync("export", "--json").out)
    (pnls,) = [entry for entry in exported_collections(exported) if entry["collection"] == "pnls"]
    assert not pnls["changed"], pnls
    if request.node.callspec.params["store_pair"] != STANDALONE:  # no change stream there
        assert pnls["read"].endswith(": 7 document(s) read"), pnls  # what the merge wrote
    assert status_of(b)["status"] == "HEALTHY"


@pytest.mark.parametrize("store_pair", STORES, indirect=True)
def test_a_write_after_the_merge_still_makes_status_say_the_database_changed(
    store_pair: tuple[Repo, Repo],
) -> None:
    a, b = store_pair
    pulled_change(a, b)
    b.delete_records([RECORDS[3]["_id"]])  # the application, between the merge and status
    status = status_of(b)
    (reason,) = snapshot_reasons(status)
    assert status["status"] == "WARNING", status["reasons"]
    assert reason["fix"] == "run 'dbsync export'", reason
    exported = json.loads(b.dbsync("export", "--json").out)
    (pnls,) = [entry for entry in exported_collections(exported) if entry["collection"] == "pnls"]
    assert pnls["changed"] and pnls["deleted"] == 1, pnls


SITECUSTOMIZE = """
import os, subprocess, sys

writer = os.environ.pop("DBSYNC_TEST_WRITER", None)  # the writer itself runs unpatched
if writer:
    from dbsync.runs import merge

    apply_all = merge._apply_all

    def writes_first(*args, **kwargs):  # the merge has read and decided: the application writes
        subprocess.run([sys.executable, "-c", writer], check=True)
        return apply_all(*args, **kwargs)

    merge._apply_all = writes_first
"""

WRITER = """
from dbsync.edges.stores import open_store

store = open_store({uri!r}, {database!r})
store.apply("pnls", [], [{key!r}])
store.close()
"""


def during_the_merge(repo: Repo, folder: Path, key: str) -> dict[str, str]:
    """The environment of a pull whose merge, once it has decided, waits for the application
    to delete the record ``key`` (a record the merge does not write) in another process."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    uri, database = load_config(cwd=repo.root, environ={}).require_database()
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    writer = WRITER.format(uri=uri, database=database, key=key)
    return {"PYTHONPATH": path, "DBSYNC_TEST_WRITER": writer}


def test_a_write_during_the_merge_still_makes_status_say_the_database_changed(
    store_pair: tuple[Repo, Repo], tmp_path: Path
) -> None:
    a, b = store_pair
    key = RECORDS[3]["_id"]
    pulled_change(a, b, **during_the_merge(b, tmp_path / "writer", key))
    assert key not in "".join(b.dump())  # the application's delete happened, and stays
    status = status_of(b)
    (reason,) = snapshot_reasons(status)
    assert status["status"] == "WARNING", status["reasons"]
    assert reason["fix"] == "run 'dbsync export'", reason


def status_of_deep(repo: Repo) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(repo.dbsync("status", "--deep", "--json", ok=False).out)
    return document


def exported_collections(document: Any) -> list[dict[str, Any]]:
    """The per-collection entries of ``export --json``."""
    if isinstance(document, dict):
        entries: list[dict[str, Any]] = document["collections"]
        return entries
    return list(document)
