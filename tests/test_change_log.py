"""The embedded store's change log: SQLite's triggers tell exactly which documents were written
since an export's mark, whoever wrote them (montydb's own client, dbsync, any SQLite client), so
that export, ``status`` and a merge's read follow the change; and whenever the log cannot answer
for every write (dropped, replaced, another generation) it says so, and everything is read."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import bson
import montydb
import pytest
from bson import Int64, ObjectId

from dbsync.config import load_config
from dbsync.edges import change_log
from dbsync.edges.change_index import STREAM, ChangeIndex, id_bytes, moved_since
from dbsync.edges.embedded import EmbeddedStore, _file_mark, montydb_key
from dbsync.runs.export import export
from tests.indexed_helpers import TOML, docs

DATABASE = "dbsync_test"


@pytest.fixture
def config(tmp_path):
    (tmp_path / "dbsync.toml").write_text(TOML)
    return load_config(cwd=tmp_path, environ={})


@pytest.fixture
def store(tmp_path):
    opened = EmbeddedStore(tmp_path / "store", DATABASE)
    yield opened
    opened.close()


def client_collection(store):
    client = montydb.MontyClient(str(store._path))
    return client, client[DATABASE]["pnl"]


def mark_of(store):
    found = store.fingerprint("pnl")
    assert found.startswith(STREAM + change_log.LOG_MARK), found
    return found


def changed_ids(store, mark):
    ids = store.changed_ids("pnl", mark[len(STREAM) :], 1000)
    assert ids is not None
    return sorted(ids)


def test_montydbs_own_client_updates_a_document_in_place(store):
    """Why rowids cannot tell what was written: montydb's update keeps the row's rowid."""
    store.insert_many("pnl", docs(5))
    path = store._file("pnl")
    before = sqlite3.connect(path).execute("SELECT rowid, v FROM documents").fetchall()
    client, pnl = client_collection(store)
    pnl.update_one({"_id": 2}, {"$set": {"at": "2030-01-01"}})
    client.close()
    after = sqlite3.connect(path).execute("SELECT rowid, v FROM documents").fetchall()
    assert [r for r, _ in before] == [r for r, _ in after] and before != after


def file_figures(path):
    """The figures the embedded store's fingerprint falls back on without a change log."""
    return _file_mark(path, 24, 28, with_time=True), _file_mark(Path(f"{path}-wal"), 0, 32)


def test_the_file_figures_miss_a_write_within_a_clock_tick_and_the_log_does_not(store):
    """In WAL mode the file's change counter does not move and a closed connection leaves no
    WAL: a write whose modification time falls on the same tick as the one before is seen
    by nothing but the log."""
    store.insert_many("pnl", docs(5))
    store.close()  # no connection left open: no WAL left
    store.follow_changes("pnl")
    path = store._file("pnl")
    figures, stat = file_figures(path), path.stat()
    mark = mark_of(store)
    client, pnl = client_collection(store)
    pnl.update_one({"_id": 2}, {"$set": {"at": "2030-01-01"}})
    client.close()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same tick, as it can happen
    assert file_figures(path) == figures  # the write is invisible to them
    assert store.changed_since("pnl", mark[len(STREAM) :]) is True
    assert changed_ids(store, mark) == [id_bytes(2)]


def writes(store):
    """Every way a document can be written, by montydb's client and by dbsync: each with the
    ``_id`` it touches."""
    client, pnl = client_collection(store)
    yield "montydb insert", [100], lambda: pnl.insert_one({"_id": 100, "user": "n", "ticker": "N"})
    yield "montydb update", [1], lambda: pnl.update_one({"_id": 1}, {"$set": {"at": "2031-01-01"}})
    yield "montydb replace", [2], lambda: pnl.replace_one({"_id": 2}, {"user": "r", "ticker": "R"})
    yield "montydb delete", [3], lambda: pnl.delete_one({"_id": 3})
    yield (
        "montydb delete and insert again, the same bytes",
        [4],
        lambda: (pnl.delete_one({"_id": 4}), pnl.insert_one(docs(1, 4)[0])),
    )
    yield (
        "montydb insert_many",
        [101, 102],
        lambda: pnl.insert_many([{"_id": i, "user": "m", "ticker": f"M{i}"} for i in (101, 102)]),
    )
    yield (
        "montydb update_many",
        [5, 6],
        lambda: pnl.update_many({"_id": {"$in": [5, 6]}}, {"$set": {"note": "x"}}),
    )
    yield "montydb delete_many", [7, 8], lambda: pnl.delete_many({"_id": {"$in": [7, 8]}})
    yield "dbsync upsert", [9], lambda: store.apply("pnl", [{**docs(1, 9)[0], "at": "2032"}], [])
    yield "dbsync delete", [10], lambda: store.apply("pnl", [], [10])
    yield "dbsync insert", [103], lambda: store.insert_many("pnl", [{"_id": 103, "user": "i"}])
    yield (
        "dbsync _id of another type (5 as Int64)",
        [Int64(11)],
        lambda: store.apply("pnl", [{**docs(1, 11)[0], "_id": Int64(11)}], []),
    )
    oid = ObjectId()
    yield "montydb ObjectId insert", [oid], lambda: pnl.insert_one({"_id": oid, "user": "o"})

    def move_a_row() -> None:  # what no client here does, but any SQLite client can
        with closing(sqlite3.connect(store._file("pnl"))) as connection, connection:
            moved = {**docs(1, 12)[0], "_id": 112}
            connection.execute(
                "UPDATE documents SET k = ?, v = ? WHERE k = ?",
                (montydb_key(112), bson.encode(moved), montydb_key(12)),
            )

    yield "an SQLite client moving a row to another _id", [12, 112], move_a_row
    client.close()


def test_every_write_is_in_the_log_and_nothing_else(store):
    store.insert_many("pnl", docs(20))
    store.follow_changes("pnl")
    for name, ids, write in writes(store):
        mark = mark_of(store)
        assert store.changed_since("pnl", mark[len(STREAM) :]) is False, name
        assert changed_ids(store, mark) == [], name
        write()
        assert store.changed_since("pnl", mark[len(STREAM) :]) is True, name
        expected = {id_bytes(value) for value in ids}
        if name.startswith("dbsync _id of another type"):
            expected.add(id_bytes(11))  # the old row, keyed as the int it was, went
        assert set(changed_ids(store, mark)) == expected, name


def test_a_whole_collection_replaced_by_dbsync_is_in_the_log(store):
    store.insert_many("pnl", docs(20))
    store.follow_changes("pnl")
    mark = mark_of(store)
    store.replace_collection("pnl", docs(10, 5))
    assert set(changed_ids(store, mark)) == {id_bytes(i) for i in range(20)}


@pytest.mark.parametrize(
    "undo",
    [
        "triggers dropped",
        "collection dropped by montydb",
        "an older copy put back",
        "started again",
    ],
)
def test_a_log_that_cannot_answer_for_every_write_says_so(store, tmp_path, undo):
    store.insert_many("pnl", docs(20))
    store.close()  # no WAL: the file holds the collection whole
    store.follow_changes("pnl")
    path = store._file("pnl")
    shutil.copyfile(path, tmp_path / "older")
    client, pnl = client_collection(store)
    pnl.update_one({"_id": 1}, {"$set": {"at": "2031-01-01"}})
    mark = mark_of(store)[len(STREAM) :]
    if undo == "triggers dropped":
        with sqlite3.connect(path) as connection:
            connection.execute("DROP TRIGGER dbsync_logged_update")
    elif undo == "collection dropped by montydb":
        client[DATABASE].drop_collection("pnl")
        pnl.insert_many(docs(20))
    elif undo == "an older copy put back":
        shutil.copyfile(tmp_path / "older", path)
        for i in range(5):  # the log of the older copy grows past the mark's sequence number
            pnl.update_one({"_id": i}, {"$set": {"n": i}})
    else:
        with sqlite3.connect(path) as connection:
            change_log.start(connection)
    client.close()
    assert store.changed_since("pnl", mark) is None
    assert store.changed_ids("pnl", mark, 1000) is None
    if undo != "triggers dropped":
        store.follow_changes("pnl")  # a new log: its marks are answered for again
        again = mark_of(store)
        assert store.changed_since("pnl", again[len(STREAM) :]) is False
    assert store.changed_since("pnl", "log:not a mark") is None


def test_an_export_starts_the_log_and_prunes_it_to_its_mark(config, store):
    store.insert_many("pnl", docs(30))
    export(config, store)
    path = store._file("pnl")
    with sqlite3.connect(path) as connection:
        assert change_log.is_intact(connection)
    client, pnl = client_collection(store)
    for i in range(10):
        pnl.update_one({"_id": i}, {"$set": {"at": "2031-01-01"}})
    client.close()
    export(config, store)
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"SELECT count(*) FROM {change_log.TABLE}").fetchone()[0]
    assert rows == 1  # the row of the mark this export recorded, nothing before it


def full_export(config, store, folder):
    """What an export writes when it reads every document: no index, no log."""
    export(config, store, target_dir=folder)
    return {path.name: path.read_bytes() for path in folder.glob("*.jsonl")}


@pytest.mark.parametrize("seed", range(6))
def test_exports_through_the_log_write_what_a_full_read_writes(config, store, tmp_path, seed):
    """Between exports, montydb's client and dbsync write, delete and insert again; each export
    reads only what the log names, and writes the bytes a full read writes."""
    rng = random.Random(seed)
    store.insert_many("pnl", docs(150))
    export(config, store)
    reads = []
    original = EmbeddedStore.iter_raw_documents

    def counting(self, collection, **options):
        reads.append(collection)
        return original(self, collection, **options)

    for round_ in range(4):
        client, pnl = client_collection(store)
        for _ in range(rng.randrange(0, 12)):
            i = rng.randrange(170)
            action = rng.choice(["update", "delete", "insert", "dbsync", "reinsert"])
            if action == "update":
                pnl.update_one({"_id": i}, {"$set": {"at": f"2030-0{1 + round_}-01"}})
            elif action == "delete":
                pnl.delete_one({"_id": i})
            elif action == "insert" and pnl.find_one({"_id": i}) is None:
                pnl.insert_one(docs(1, i)[0])
            elif action == "dbsync":
                store.apply("pnl", [{**docs(1, i)[0], "note": round_}], [])
            elif action == "reinsert" and pnl.find_one({"_id": i}) is not None:
                pnl.delete_one({"_id": i})
                pnl.insert_one({**docs(1, i)[0], "again": True})
        client.close()
        reads.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(EmbeddedStore, "iter_raw_documents", counting)
            (result,) = export(config, store, allow_deletes=True)
        assert reads == [] and result.read.startswith("change log: ")
        written = {path.name: path.read_bytes() for path in config.snapshot_dir.glob("*.jsonl")}
        assert written == full_export(config, store, tmp_path / f"full-{round_}")


def test_a_re_export_of_unchanged_data_reads_and_writes_nothing(config, store, monkeypatch):
    store.insert_many("pnl", docs(40))
    export(config, store)
    (path,) = config.snapshot_dir.glob("*.jsonl")
    before = path.stat()
    read = []
    for method in ("iter_raw_documents", "raw_by_ids", "find_by_ids"):
        original = getattr(EmbeddedStore, method)

        def watched(self, *args, _original=original, **options):
            read.append(args)
            return _original(self, *args, **options)

        monkeypatch.setattr(EmbeddedStore, method, watched)
    (result,) = export(config, store)
    assert read == [] and not result.changed
    assert result.read == "change log: 0 document(s) read" and result.records == 40
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_an_edited_snapshot_file_is_written_again_though_the_data_did_not_change(config, store):
    store.insert_many("pnl", docs(40))
    export(config, store)
    (path,) = config.snapshot_dir.glob("*.jsonl")
    written = path.read_bytes()
    path.write_bytes(written.replace(b'"ticker":"T3"', b'"ticker":"T3 edited"', 1))
    (result,) = export(config, store)
    assert path.read_bytes() == written and result.read != "change log: 0 document(s) read"


def test_a_noted_record_is_read_again_so_that_its_note_is_said_again(config, store):
    store.insert_many("pnl", [*docs(10), {"_id": 99, "ticker": "no user"}])  # a key field missing
    (first,) = export(config, store)
    (again,) = export(config, store)
    assert first.notes and again.notes == first.notes
    assert again.read == "change log: 1 document(s) read"


def test_status_and_moved_since_follow_the_log(config, store):
    store.insert_many("pnl", docs(20))
    export(config, store)
    index = ChangeIndex.open(config.state_dir)
    recorded = index.recorded("pnl")
    index.close()
    assert recorded is not None and recorded.fingerprint.startswith(STREAM + change_log.LOG_MARK)
    assert moved_since(store, "pnl", recorded.fingerprint) is False
    client, pnl = client_collection(store)
    pnl.delete_one({"_id": 3})
    client.close()
    assert moved_since(store, "pnl", recorded.fingerprint) is True
