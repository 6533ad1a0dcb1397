"""An application keeps writing through montydb's own client while dbsync merges.

The application is a real, separate process using montydb (the library an application of the
embedded store uses). In the first test it writes at the worst moment, after the merge read the
collection and before it writes (the merge is started through a wrapper that runs the writer
there); in the second it writes all along the merge. Either way: a record the application
inserted stays, a newer edit wins, an older edit is decided again by the rules (never kept or
overwritten blindly), and nothing the application wrote is lost.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mongomock
import pytest
from conftest import no_sleep_policy
from project import Project, clean_env

from dbsync.config import load_config
from dbsync.edges.mongo import MongoStore
from dbsync.edges.store import EmbeddedStore
from dbsync.runs.export import export

RECORDS = 200

WRITER = """
import json, sys, time
from pathlib import Path
import montydb

path, plan = sys.argv[1], json.loads(sys.argv[2])
items = montydb.MontyClient(path)["shop"]["items"]
done = []

def attempt(write):
    for _ in range(200):  # montydb waits 5 s on a locked file, then raises: try again
        try:
            return write()
        except Exception as error:
            if "locked" not in str(error):
                raise
    raise RuntimeError("the store stayed locked")

def one_round(number):
    for key in plan["insert"]:
        key = key + number * 1000
        attempt(lambda: items.insert_one({"_id": key, "name": f"app{key}", "ts": plan["ts"]}))
        done.append(["insert", key])
    for key in plan["edit"]:
        name = f"app-{number}-{key}"
        attempt(lambda: items.update_one({"_id": key}, {"$set": {"name": name, "ts": plan["ts"]}}))
        done.append(["edit", key, name])
    for key in plan.get("older", []):
        name = f"app-older-{key}"
        attempt(lambda: items.update_one({"_id": key}, {"$set": {"name": name, "ts": "2023"}}))
        done.append(["older", key, name])

if plan.get("until"):
    number = 0
    while not Path(plan["until"]).exists():
        one_round(number)
        number += 1
        time.sleep(0.01)
else:
    one_round(0)
Path(plan["log"]).write_text(json.dumps(done))
"""

WRAPPER = """
import subprocess, sys
from dbsync.runs import merge

writer = sys.argv[1:4]
apply_all = merge._apply_all

def writes_first(*args, **kwargs):  # the merge has read everything; the application writes
    subprocess.run([sys.executable, "-c", *writer], check=True)
    return apply_all(*args, **kwargs)

merge._apply_all = writes_first
from dbsync.cli import main
sys.argv = ["dbsync", *sys.argv[4:]]
main()
"""


def documents(version):
    return [
        {"_id": i, "name": f"user{i}", "v": i * version, "ts": f"2024-01-0{version}T00:00:00"}
        for i in range(RECORDS)
    ]


@pytest.fixture(scope="session")
def live_template(tmp_path_factory):
    """Version 1 of the records in the database, exported; version 2 (newer) as another
    asset's snapshot directory ``theirs``."""
    root = tmp_path_factory.mktemp("live") / "project"
    root.mkdir()
    (root / "dbsync.toml").write_text(
        'database = "shop"\nretry_seconds = 0\n[collections.items]\ntimestamp = "ts"\n'
    )
    project = Project(root)
    project.run("init", "--asset", "test-asset")
    records = root / "items.json"
    records.write_text("".join(json.dumps(d) + "\n" for d in documents(1)))
    project.run("import", str(records), "-c", "items")
    project.run("export")
    theirs = MongoStore(mongomock.MongoClient(), "theirs", retry=no_sleep_policy())
    theirs.insert_many("items", documents(2))
    export(load_config(cwd=root, environ={}), theirs, target_dir=root / "theirs")
    return root


@pytest.fixture
def live_project(live_template, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(live_template, root)
    return Project(root)


def store_path(project):
    uri, _database = load_config(cwd=project.root, environ={}).require_database()
    return Path(uri.removeprefix("embedded://"))


def documents_of(project):
    store = EmbeddedStore(store_path(project), "shop")
    try:
        return {document["_id"]: document for document in store.iter_documents("items")}
    finally:
        store.close()


def writer_args(project, plan):
    plan = {**plan, "log": str(project.root / "writer.json")}
    return [WRITER, str(store_path(project)), json.dumps(plan)]


def test_writes_between_the_merge_s_read_and_its_write_are_kept_or_decided_again(live_project):
    plan = {"insert": [7000, 7001], "edit": [10, 11, 12], "older": [20, 21]}
    writer = writer_args(live_project, {**plan, "ts": "2024-01-09T00:00:00"})
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, *writer, "merge", "theirs", "--json"],
        cwd=live_project.root,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert any("5 record(s) changed by the application" in note for note in report["notes"]), (
        report["notes"],
        documents_of(live_project)[10],
    )
    stored = documents_of(live_project)
    assert stored[7000]["name"] == "app7000" and stored[7001]["name"] == "app7001"
    assert [stored[key]["name"] for key in (10, 11, 12)] == ["app-0-10", "app-0-11", "app-0-12"]
    assert [stored[key]["ts"] for key in (10, 11, 12)] == ["2024-01-09T00:00:00"] * 3
    assert [stored[key]["name"] for key in (20, 21)] == ["user20", "user21"]  # theirs is newer
    assert stored[30] == {"_id": 30, "name": "user30", "v": 60, "ts": "2024-01-02T00:00:00"}
    assert len(stored) == RECORDS + 2


def test_an_application_writing_all_along_a_merge_loses_nothing(live_project, tmp_path):
    stop = tmp_path / "stop"
    plan = {"insert": [9000], "edit": [5, 6, 7], "ts": "2024-01-09T00:00:00", "until": str(stop)}
    writer = subprocess.Popen([sys.executable, "-c", *writer_args(live_project, plan)])
    try:
        live_project.run("merge", "theirs")
    finally:
        stop.write_text("")
        assert writer.wait(timeout=120) == 0
    log = json.loads((live_project.root / "writer.json").read_text())
    stored = documents_of(live_project)
    inserted = [entry[1] for entry in log if entry[0] == "insert"]
    last_edit = {entry[1]: entry[2] for entry in log if entry[0] == "edit"}
    assert inserted and all(stored[key]["name"] == f"app{key}" for key in inserted)
    assert all(stored[key]["name"] == name for key, name in last_edit.items())
    assert len(stored) == RECORDS + len(inserted)
    assert stored[30]["ts"] == "2024-01-02T00:00:00"  # the merge itself went through
