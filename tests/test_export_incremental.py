"""Export through the change index: only changed documents are encoded, and the snapshot has
the bytes a full export of the same database writes, whatever changed it."""

import subprocess

import montydb
import pytest

from dbsync.config import load_config
from dbsync.edges import change_index, parts, records
from dbsync.errors import SafetyRefusal
from dbsync.runs import export as export_module
from dbsync.runs.export import export
from dbsync.runs.merge import MergeOptions, merge_snapshot
from tests.indexed_helpers import TOML, count_encodings, docs


@pytest.fixture
def config(tmp_path):
    (tmp_path / "dbsync.toml").write_text(TOML)
    return load_config(cwd=tmp_path, environ={})


@pytest.fixture
def encodings(monkeypatch):
    """How many documents the export encodes."""
    return count_encodings(monkeypatch, records)


def snapshot_bytes(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.jsonl"))}


def full_export(config, store, tmp_path):
    """What a full export of the database writes (a target folder never uses the index)."""
    folder = tmp_path / "full"
    export(config, store, target_dir=folder)
    return snapshot_bytes(folder)


def montydb_collection(store):
    """The embedded store's collection through montydb's own client: behind dbsync's back."""
    client = montydb.MontyClient(str(store._path))
    return client, client["dbsync_test"]["pnl"]


def test_an_unchanged_database_is_exported_without_encoding_anything(
    config, store, encodings, tmp_path
):
    store.insert_many("pnl", docs(60))
    export(config, store)
    first = snapshot_bytes(config.snapshot_dir)
    encodings.clear()
    (result,) = export(config, store)
    assert encodings == [] and not result.changed
    assert snapshot_bytes(config.snapshot_dir) == first == full_export(config, store, tmp_path)


def test_changes_behind_dbsyncs_back_are_the_only_documents_encoded(
    config, embedded_store, encodings, tmp_path
):
    embedded_store.insert_many("pnl", docs(60))
    export(config, embedded_store)
    client, pnl = montydb_collection(embedded_store)
    pnl.update_one({"_id": 5}, {"$set": {"at": "2025-02-01"}})
    pnl.update_one({"_id": 6}, {"$set": {"ticker": "A0"}})  # a new key: the record moves
    pnl.insert_one({"_id": 100, "user": "u0", "ticker": "T00", "at": "2025-03-01"})
    pnl.delete_one({"_id": 7})
    client.close()
    encodings.clear()
    (result,) = export(config, embedded_store)
    assert sorted(encodings) == [5, 6, 100]
    assert (result.records, result.deleted) == (60, 2)  # 7 went, and 6 left its old key
    assert snapshot_bytes(config.snapshot_dir) == full_export(config, embedded_store, tmp_path)


def test_a_collection_in_parts_takes_each_unchanged_line_from_its_part(
    config, store, encodings, tmp_path, monkeypatch
):
    monkeypatch.setattr(parts, "MAX_FILE_BYTES", 6_000)
    monkeypatch.setattr(parts, "TARGET_PART_BYTES", 2_000)
    store.insert_many("pnl", docs(200))
    export(config, store)
    before = snapshot_bytes(config.snapshot_dir)
    assert len(before) > 1
    store.apply("pnl", [{**docs(1, 9)[0], "at": "2025-12-31"}, *docs(1, 500)], [10])
    encodings.clear()
    (result,) = export(config, store)
    after = snapshot_bytes(config.snapshot_dir)
    assert sorted(encodings) == [9, 500] and result.deleted == 1
    assert after == full_export(config, store, tmp_path)
    assert set(after) == set(before)


def test_a_key_clash_among_changed_records_is_reported_as_a_full_export_reports_it(config, store):
    store.insert_many("pnl", docs(30))
    export(config, store)
    store.insert_many("pnl", [{**docs(1, 3)[0], "_id": 999}])  # the key of record 3 again
    with pytest.raises(Exception, match="is not unique"):
        export(config, store)


def test_new_rules_or_a_new_encoder_start_the_index_afresh(
    config, store, encodings, tmp_path, monkeypatch
):
    store.insert_many("pnl", docs(20))
    export(config, store)
    monkeypatch.setattr(change_index, "signature", lambda rules: "another encoder")
    encodings.clear()
    export(config, store)
    assert len(encodings) == 20
    assert snapshot_bytes(config.snapshot_dir) == full_export(config, store, tmp_path)


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def commit(root, message):
    git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", message)


def test_after_a_checkout_changed_the_snapshot_the_export_is_still_exact(
    config, embedded_store, encodings, tmp_path, monkeypatch
):
    lost = []  # the export finds known documents whose lines the snapshot no longer has
    encode_lost = export_module._IndexedExport._encode_lost
    monkeypatch.setattr(
        export_module._IndexedExport,
        "_encode_lost",
        lambda self, changes: lost.append(len(changes.unchanged)) or encode_lost(self, changes),
    )
    root = config.root
    git(root, "init", "-q")
    embedded_store.insert_many("pnl", docs(40))
    export(config, embedded_store)
    git(root, "add", "database_backup")
    commit(root, "one")
    embedded_store.apply("pnl", [{**docs(1, 2)[0], "at": "2025-09-09"}, *docs(3, 40)], [0])
    export(config, embedded_store)
    git(root, "checkout", "-q", "HEAD", "--", "database_backup")  # the snapshot goes back
    with pytest.raises(SafetyRefusal):
        export(config, embedded_store)
    merge_snapshot(config, embedded_store, config.snapshot_dir, MergeOptions())
    encodings.clear()
    export(config, embedded_store, allow_deletes=True)
    assert len(encodings) < 40 and len(lost) == 1
    assert snapshot_bytes(config.snapshot_dir) == full_export(config, embedded_store, tmp_path)
