"""An application keeps writing while dbsync merges: on the embedded store through montydb's own
client, on MongoDB through pymongo (acknowledged writes, the default write concern).

The application is a real, separate process using the client an application of that store
uses. In the first test it writes at the worst moment, after the merge read the collection and
before it writes (the merge is started through a wrapper that runs the writer there), on each
store; in the second it writes all along a merge (embedded). On MongoDB it also writes inside
the merge's own compare-and-set, during a real ``git pull`` whose post-merge hook merges: after
the hook read the records of a batch and before it writes them (in its transaction on a replica
set, between its read and its filtered writes on a standalone server). Either way: a record the
application inserted stays, a newer edit wins, an older edit is decided again by the rules
(never kept or overwritten blindly), and nothing the application wrote is lost.
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
from dbsync.edges.stores import open_store
from dbsync.runs.export import export
from tests.git_helpers import Repo, init_pair
from tests.killpoints import with_inherited_path
from tests.mongo_servers import EMBEDDED, MODES, SERVER_FIXTURES, STORES, MongoServer

RECORDS = 200
ITEMS_RULES = '[collections.items]\ntimestamp = "ts"\n'

WRITER = """
import json, sys, time
from pathlib import Path

uri, database, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if uri.startswith("mongodb://"):
    from pymongo import MongoClient
    items = MongoClient(uri)[database]["items"]
else:
    import montydb
    items = montydb.MontyClient(uri.removeprefix("embedded://"))[database]["items"]
done = []

def attempt(write):
    for _ in range(200):  # montydb waits 5 s on a locked file, then raises: try again
        try:
            return write()
        except Exception as error:
            if "locked" not in str(error):
                raise
    raise RuntimeError("the store stayed locked")

def acknowledged(write):  # only what the store acknowledged is logged as written
    result = attempt(write)
    assert result.acknowledged and getattr(result, "matched_count", 1) == 1, result
    return result

def one_round(number):
    for key in plan["insert"]:
        key = key + number * 1000
        acknowledged(lambda: items.insert_one({"_id": key, "name": f"app{key}", "ts": plan["ts"]}))
        done.append(["insert", key])
    for key in plan["edit"]:
        name = f"app-{number}-{key}"
        edit = {"$set": {"name": name, "ts": plan["ts"]}}
        acknowledged(lambda: items.update_one({"_id": key}, edit))
        done.append(["edit", key, name])
    for key in plan.get("older", []):
        name = f"app-older-{key}"
        acknowledged(lambda: items.update_one({"_id": key}, {"$set": {"name": name, "ts": "2023"}}))
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

writer = sys.argv[1:5]  # the WRITER script, the database (uri, name) and the plan
apply_all = merge._apply_all

def writes_first(*args, **kwargs):  # the merge has read everything; the application writes
    subprocess.run([sys.executable, "-c", *writer], check=True)
    return apply_all(*args, **kwargs)

merge._apply_all = writes_first
from dbsync.launch import main
sys.argv = ["dbsync", *sys.argv[5:]]
main()
"""


def documents(version):
    return [
        {"_id": i, "name": f"user{i}", "v": i * version, "ts": f"2024-01-0{version}T00:00:00"}
        for i in range(RECORDS)
    ]


def documents_file(folder: Path, version: int) -> Path:
    path = folder / f"items-v{version}.json"
    path.write_text("".join(json.dumps(d) + "\n" for d in documents(version)))
    return path


@pytest.fixture(scope="session")
def live_template(tmp_path_factory):
    """Version 1 of the records in the database, exported; version 2 (newer) as another
    asset's snapshot directory ``theirs``."""
    root = tmp_path_factory.mktemp("live") / "project"
    root.mkdir()
    (root / "dbsync.toml").write_text(f'database = "shop"\nretry_seconds = 0\n{ITEMS_RULES}')
    project = Project(root)
    project.run("init", "--asset", "test-asset")
    project.run("import", str(documents_file(root, 1)), "-c", "items")
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


@pytest.fixture(params=STORES)
def live_project_on_each_store(request, live_template, tmp_path):
    """``live_project`` on each store: the embedded one, or a database of its own on this
    module's MongoDB server (replica set, standalone), with the same records and ``theirs``."""
    if request.param == EMBEDDED:
        return request.getfixturevalue("live_project")
    server: MongoServer = request.getfixturevalue(SERVER_FIXTURES[request.param])
    root = tmp_path / "project"
    root.mkdir()
    (root / "dbsync.toml").write_text(
        f'database = "{server.new_database()}"\nretry_seconds = 0\n{ITEMS_RULES}'
    )
    project = Project(root)
    project.run("init", "--uri", server.uri, "--asset", "test-asset")
    project.run("import", str(documents_file(root, 1)), "-c", "items")
    project.run("export")
    shutil.copytree(live_template / "theirs", root / "theirs")
    return project


def documents_of(root: Path) -> dict:
    store = open_store(*load_config(cwd=root, environ={}).require_database())
    try:
        return {document["_id"]: document for document in store.iter_documents("items")}
    finally:
        store.close()


def writer_args(root: Path, plan: dict) -> list[str]:
    """The writer's command line (after ``python -c``): the asset's database, and ``plan``."""
    uri, database = load_config(cwd=root, environ={}).require_database()
    plan = {**plan, "log": str(root / "writer.json")}
    return [WRITER, uri, database, json.dumps(plan)]


WORST_MOMENT = {"insert": [7000, 7001], "edit": [10, 11, 12], "older": [20, 21]}
NEWER = "2024-01-09T00:00:00"  # newer than theirs (2024-01-02), older than nothing


def assert_every_write_survived(stored: dict) -> None:
    """The application's ``WORST_MOMENT`` writes, after a merge of ``theirs``: inserts stay,
    newer edits win, older edits lose to theirs (newer), every other record is theirs."""
    assert stored[7000]["name"] == "app7000" and stored[7001]["name"] == "app7001"
    assert [stored[key]["name"] for key in (10, 11, 12)] == ["app-0-10", "app-0-11", "app-0-12"]
    assert [stored[key]["ts"] for key in (10, 11, 12)] == [NEWER] * 3
    assert [stored[key]["name"] for key in (20, 21)] == ["user20", "user21"]  # theirs is newer
    assert stored[30] == {"_id": 30, "name": "user30", "v": 60, "ts": "2024-01-02T00:00:00"}
    assert len(stored) == RECORDS + 2


def test_writes_between_the_merge_s_read_and_its_write_are_kept_or_decided_again(
    live_project_on_each_store,
):
    project = live_project_on_each_store
    writer = writer_args(project.root, {**WORST_MOMENT, "ts": NEWER})
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, *writer, "merge", "theirs", "--json"],
        cwd=project.root,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert any("5 record(s) changed by the application" in note for note in report["notes"]), (
        report["notes"]
    )
    assert_every_write_survived(documents_of(project.root))


def test_an_application_writing_all_along_a_merge_loses_nothing(live_project, tmp_path):
    stop = tmp_path / "stop"
    plan = {"insert": [9000], "edit": [5, 6, 7], "ts": "2024-01-09T00:00:00", "until": str(stop)}
    writer = subprocess.Popen([sys.executable, "-c", *writer_args(live_project.root, plan)])
    try:
        live_project.run("merge", "theirs")
    finally:
        stop.write_text("")
        assert writer.wait(timeout=120) == 0
    log = json.loads((live_project.root / "writer.json").read_text())
    stored = documents_of(live_project.root)
    inserted = [entry[1] for entry in log if entry[0] == "insert"]
    last_edit = {entry[1]: entry[2] for entry in log if entry[0] == "edit"}
    assert inserted and all(stored[key]["name"] == f"app{key}" for key in inserted)
    assert all(stored[key]["name"] == name for key, name in last_edit.items())
    assert len(stored) == RECORDS + len(inserted)
    assert stored[30]["ts"] == "2024-01-02T00:00:00"  # the merge itself went through


# ------------------------------------------------------------- MongoDB: inside the hook's merge

SITECUSTOMIZE = """
import json, os, subprocess, sys

writer = os.environ.pop("DBSYNC_TEST_WRITER", None)  # the writer itself runs unpatched
if writer:
    from dbsync.edges import mongo

    read_raw, apply_changes, state = mongo.read_raw, mongo.MongoStore.apply_changes, []

    def applying(self, *args, **kwargs):
        state.append("applying")
        return apply_changes(self, *args, **kwargs)

    def reading(*args, **kwargs):  # a batch's compare-and-set read: then the application
        found = read_raw(*args, **kwargs)
        if state == ["applying"]:
            state.append("written")
            subprocess.run([sys.executable, "-c", *json.loads(writer)], check=True)
        return found

    mongo.read_raw, mongo.MongoStore.apply_changes = reading, applying
"""


def write_items(repo: Repo, version: int) -> None:
    source = documents_file(repo.root.parent, version)
    repo.dbsync("import", str(source), "-c", "items", "--mode", "upsert", "-q")
    repo.push_snapshot()


@pytest.mark.parametrize("mode", MODES)
def test_an_application_writing_inside_the_hook_s_compare_and_set_loses_nothing(
    request, tmp_path, git_env, mode
):
    """The hook's merge has read a batch's records (in its transaction on a replica set: MongoDB
    then aborts the transaction on the application's write, a write conflict, and dbsync runs
    the batch again; on a standalone server its filtered writes miss) when the application
    inserts and edits: every acknowledged write survives, decided by the rules."""
    server: MongoServer = request.getfixturevalue(SERVER_FIXTURES[mode])
    a, b = init_pair(tmp_path / "assets", git_env, server)
    with (a.root / "dbsync.toml").open("a") as config:
        config.write(ITEMS_RULES)
    a.git("commit", "-q", "-am", "items: newest wins by ts")
    write_items(a, 1)
    b.git("pull", "-q")
    write_items(a, 2)
    writer = writer_args(b.root, {**WORST_MOMENT, "ts": NEWER})
    hooks = tmp_path / "sitecustomize"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)

    path = with_inherited_path(hooks)
    pulled = b.git("pull", PYTHONPATH=path, DBSYNC_TEST_WRITER=json.dumps(writer))

    assert "merged database_backup into the database (three-way)" in pulled.err, pulled.err
    assert len(json.loads((b.root / "writer.json").read_text())) == 7  # it wrote, mid-merge
    assert "5 record(s) changed by the application" in pulled.err
    if server.replicated:  # the application's write aborted the batch's transaction: said so
        assert "another client wrote them meanwhile" in pulled.err, pulled.err
    assert_every_write_survived(documents_of(b.root))
