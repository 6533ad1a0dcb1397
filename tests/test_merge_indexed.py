"""A merge reads the database's side through the change index: only documents changed since
the last export are encoded, and every decision is the one a merge encoding all of them takes."""

import random
import shutil

import montydb
import pytest

from dbsync.config import load_config
from dbsync.core import snapshot
from dbsync.core.snapshot import SnapshotError
from dbsync.edges import change_index, parts, records
from dbsync.edges.backups import collection_file
from dbsync.edges.changes import inserted_file
from dbsync.edges.synced import load_synced, synced_dir
from dbsync.runs import merge as merge_module
from dbsync.runs.export import export
from dbsync.runs.merge import MergeOptions, merge_snapshot
from tests.indexed_helpers import TOML, count_checked_lines, count_encodings, docs


@pytest.fixture
def config(tmp_path):
    (tmp_path / "dbsync.toml").write_text(TOML)
    return load_config(cwd=tmp_path, environ={})


@pytest.fixture
def encodings(monkeypatch):
    """The ``_id`` of every document encoded into a record line (by the index or in full)."""
    return count_encodings(monkeypatch, records)


@pytest.fixture
def mismatches(monkeypatch):
    """Each time the index's lines could not be vouched for and the merge read everything
    (the indexed lines, or the rows of a snapshot holding the records the index was read
    against)."""
    seen = []

    def watching(read):
        def watched(*args):
            try:
                yield from read(*args)
            except change_index.IndexMismatch as error:
                seen.append(str(error))
                raise

        return watched

    monkeypatch.setattr(change_index, "_indexed_lines", watching(change_index._indexed_lines))
    monkeypatch.setattr(merge_module, "changed_rows", watching(merge_module.changed_rows))
    return seen


def without_index(monkeypatch):
    monkeypatch.setattr(merge_module.ChangeIndex, "open_read_only", lambda state_dir: None)


def without_shortcut(monkeypatch):
    """The database read through the index even where it is told unchanged since its export."""
    monkeypatch.setattr(merge_module, "holds_exported", lambda *args: False)


def outcome(report, config):
    """What a merge decided and backed up: its counts, its backup's pre-images and the ids it
    inserted (in the order written)."""
    counts = {
        name: {**vars(c), "conflicts": list(c.conflicts)} for name, c in report.collections.items()
    }
    folder = config.state_dir / "backups" / report.backup
    preimages = collection_file(folder, "pnl")
    return counts, preimages.read_bytes(), inserted_file(preimages).read_bytes()


def documents(store):
    return sorted(store.iter_documents("pnl"), key=lambda d: d["_id"])


def test_a_merge_with_nothing_to_apply_encodes_no_document(config, store, encodings):
    store.insert_many("pnl", docs(80))
    export(config, store)
    encodings.clear()
    report = merge_snapshot(config, store, config.snapshot_dir, MergeOptions())
    assert encodings == []
    counts = report.collections["pnl"]
    assert (counts.common, counts.writes, counts.total) == (80, 0, 80)


@pytest.mark.parametrize("split", [False, True], ids=["one-file", "parts"])
def test_a_document_changed_behind_dbsyncs_back_is_encoded_and_decided(
    config, embedded_store, encodings, mismatches, monkeypatch, tmp_path, split
):
    if split:  # the collection in several parts: their lines are merged back in key order
        monkeypatch.setattr(parts, "MAX_FILE_BYTES", 6_000)
        monkeypatch.setattr(parts, "TARGET_PART_BYTES", 2_000)
    embedded_store.insert_many("pnl", docs(120))
    export(config, embedded_store)
    assert (len(list(config.snapshot_dir.glob("*.jsonl"))) > 1) is split
    client = montydb.MontyClient(str(embedded_store._path))
    pnl = client["dbsync_test"]["pnl"]
    pnl.update_one({"_id": 5}, {"$set": {"at": "2024-06-01"}})  # older: the snapshot's wins
    pnl.update_one({"_id": 6}, {"$set": {"at": "2026-06-01"}})  # newer: stays
    pnl.insert_one({"_id": 500, "user": "u0", "ticker": "T00", "at": "2025-03-01"})
    pnl.insert_one({"_id": 501, "user": "uz", "ticker": "T0", "at": "2025-03-01"})  # the last
    pnl.delete_one({"_id": 7})
    client.close()
    before = documents(embedded_store)
    shutil.copytree(embedded_store._path, tmp_path / "copy")
    encodings.clear()
    report = merge_snapshot(config, embedded_store, config.snapshot_dir, MergeOptions())
    assert sorted(encodings) == [5, 6, 500, 501] and mismatches == []
    after = documents(embedded_store)

    # the same merge of the same database, every document encoded
    other = type(embedded_store)(tmp_path / "copy", "dbsync_test")
    assert documents(other) == before
    without_index(monkeypatch)
    encodings.clear()
    full = merge_snapshot(config, other, config.snapshot_dir, MergeOptions())
    assert len(encodings) == len(before) == 121
    assert outcome(report, config) == outcome(full, config)
    assert after == documents(other)
    other.close()
    by_id = {d["_id"]: d for d in after}
    assert by_id[5]["at"] == docs(1, 5)[0]["at"] and by_id[6]["at"] == "2026-06-01"
    assert {7, 500, 501} <= set(by_id)  # two-way: the snapshot's 7 comes back, 500 stays
    assert report.collections["pnl"].writes == 2


def test_a_known_document_missing_from_the_synced_copy_is_read_in_full(
    config, store, encodings, mismatches, tmp_path, monkeypatch
):
    without_shortcut(monkeypatch)  # the database is the snapshot: it would not be read at all
    store.insert_many("pnl", docs(40))
    export(config, store)
    older = tmp_path / "older"
    shutil.copytree(synced_dir(config.state_dir), older)
    store.apply("pnl", [{**docs(1, 3)[0], "at": "2025-09-09"}], [])
    export(config, store)  # the index knows the new version of 3, and its line
    shutil.rmtree(synced_dir(config.state_dir))
    shutil.copytree(older, synced_dir(config.state_dir))  # a copy without that line
    encodings.clear()
    report = merge_snapshot(config, store, config.snapshot_dir, MergeOptions())
    assert len(mismatches) == 1 and "lacks lines" in mismatches[0]
    assert len(encodings) == 40  # the database read again, every document encoded
    counts = report.collections["pnl"]
    assert (counts.common, counts.writes) == (40, 0)


def test_a_changed_record_on_the_key_of_a_kept_one_is_refused_as_a_full_read_refuses_it(
    config, store, mismatches
):
    store.insert_many("pnl", docs(30))
    export(config, store)
    store.insert_many("pnl", [{**docs(1, 3)[0], "_id": 999}])  # the key of record 3 again
    with pytest.raises(Exception, match="is not unique"):
        merge_snapshot(config, store, config.snapshot_dir, MergeOptions())
    assert len(mismatches) == 1 and "shares the key" in mismatches[0]


def test_new_rules_or_a_new_encoder_read_the_database_in_full(
    config, store, encodings, monkeypatch
):
    store.insert_many("pnl", docs(20))
    export(config, store)
    monkeypatch.setattr(change_index, "signature", lambda rules: "another encoder")
    encodings.clear()
    report = merge_snapshot(config, store, config.snapshot_dir, MergeOptions())
    assert len(encodings) == 20 and report.collections["pnl"].writes == 0


def test_a_merge_with_nothing_new_leaves_the_synced_copy_as_it_is(config, store):
    store.insert_many("pnl", docs(30))
    export(config, store)
    (copy,) = synced_dir(config.state_dir).glob("*.jsonl")
    before = copy.stat()
    merge_snapshot(config, store, config.snapshot_dir, MergeOptions(commit="c0ffee"))
    after = copy.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert load_synced(config.state_dir).commit == "c0ffee"  # the commit is recorded all the same
    store.apply("pnl", [{**docs(1, 3)[0], "at": "2025-09-09"}], [])
    export(config, store)
    assert copy.read_bytes() == (config.snapshot_dir / copy.name).read_bytes()


@pytest.fixture
def reads(monkeypatch):
    """The collections whose documents a merge read from the database: all of them, or those
    its change feed named (the embedded store's change log, a replica set's change stream)."""
    seen = []

    def counting(store_type):
        for method in ("iter_raw_documents", "raw_by_ids"):
            original = getattr(store_type, method)

            def watched(self, collection, *args, _original=original, **options):
                seen.append(collection)
                return _original(self, collection, *args, **options)

            monkeypatch.setattr(store_type, method, watched)

    return seen, counting


def test_a_database_unchanged_since_its_export_is_not_read_and_merges_as_a_full_read(
    config, embedded_store, reads, monkeypatch, tmp_path
):
    seen, watch = reads
    watch(type(embedded_store))
    embedded_store.insert_many("pnl", docs(60))
    export(config, embedded_store)
    shutil.copytree(embedded_store._path, tmp_path / "copy")
    seen.clear()
    for base in (None, synced_dir(config.state_dir)):  # two-way, and three-way on the synced copy
        report = merge_snapshot(config, embedded_store, config.snapshot_dir, MergeOptions(base))
        assert seen == []
        counts = report.collections["pnl"]
        assert (counts.common, counts.writes, counts.total) == (60, 0, 60)
    without_index(monkeypatch)
    other = type(embedded_store)(tmp_path / "copy", "dbsync_test")
    full = merge_snapshot(config, other, config.snapshot_dir, MergeOptions())
    other.close()
    assert seen == ["pnl"]
    assert outcome(report, config) == outcome(full, config)


def test_a_write_behind_dbsyncs_back_since_the_export_makes_the_merge_read_the_database(
    config, embedded_store, reads
):
    seen, watch = reads
    watch(type(embedded_store))
    embedded_store.insert_many("pnl", docs(30))
    export(config, embedded_store)
    client = montydb.MontyClient(str(embedded_store._path))
    client["dbsync_test"]["pnl"].update_one({"_id": 4}, {"$set": {"at": "2020-01-01"}})
    client.close()
    seen.clear()
    report = merge_snapshot(config, embedded_store, config.snapshot_dir, MergeOptions())
    assert seen == ["pnl"]
    assert report.collections["pnl"].writes == 1  # the snapshot's newer version comes back
    (found,) = [d for d in documents(embedded_store) if d["_id"] == 4]
    assert found["at"] == docs(1, 4)[0]["at"]


def test_a_damaged_snapshot_of_an_unchanged_database_is_refused_with_nothing_written(
    config, embedded_store, reads
):
    seen, watch = reads
    watch(type(embedded_store))
    embedded_store.insert_many("pnl", docs(30))
    export(config, embedded_store)
    (path,) = config.snapshot_dir.glob("*.jsonl")
    path.write_bytes(path.read_bytes().replace(b'"T7"', b'"T8"', 1))  # the trailer unchanged
    backups_before = sorted((config.state_dir / "backups").glob("*"))
    before = documents(embedded_store)
    seen.clear()
    with pytest.raises(SnapshotError) as refused:
        merge_snapshot(config, embedded_store, config.snapshot_dir, MergeOptions())
    assert refused.value.exit_code == 4 and f"{path}:" in str(refused.value)
    assert seen == [] and documents(embedded_store) == before
    assert sorted((config.state_dir / "backups").glob("*")) == backups_before


@pytest.fixture
def deep_checks(monkeypatch):
    """The snapshot lines verified deeply (hashes, types, canonical form, order), by line."""
    seen = []
    checker = snapshot._Checker
    original = checker.deep_problem

    def counting(self, line, number):
        seen.append(line)
        return original(self, line, number)

    monkeypatch.setattr(checker, "deep_problem", counting)
    return seen


def written_since_export(store, changed):
    """A write behind dbsync's back: the database is no longer what its export wrote."""
    client = montydb.MontyClient(str(store._path))
    client["dbsync_test"]["pnl"].update_one({"_id": changed}, {"$set": {"at": "2020-01-01"}})
    client.close()


@pytest.fixture
def checked_lines(monkeypatch):
    return count_checked_lines(monkeypatch)


def test_a_merge_checks_deeply_only_the_lines_the_synced_copy_lacks(
    config, embedded_store, checked_lines, tmp_path
):
    embedded_store.insert_many("pnl", docs(50))
    export(config, embedded_store)
    written_since_export(embedded_store, 9)
    checked_lines.clear()
    report = merge_snapshot(config, embedded_store, config.snapshot_dir, MergeOptions())
    assert checked_lines == []  # the snapshot is the synced copy, byte for byte: this asset's
    assert report.collections["pnl"].writes == 1

    # another asset's snapshot, two records changed there: pulled, as a fast-forward brings it
    other = type(embedded_store)(tmp_path / "other-asset", "dbsync_test")
    other.insert_many("pnl", [*docs(3), {**docs(1, 3)[0], "at": "2026-01-01"}, *docs(46, 4)])
    other.apply("pnl", [{**docs(1, 30)[0], "ticker": "T30b"}], [30])
    export(config, other, target_dir=tmp_path / "pulled")
    other.close()
    (pulled,) = (tmp_path / "pulled").glob("*.jsonl")
    (path,) = config.snapshot_dir.glob("*.jsonl")
    new_lines = set(pulled.read_bytes().splitlines(keepends=True)[1:-1])
    changed = new_lines - set(path.read_bytes().splitlines(keepends=True)[1:-1])
    shutil.copyfile(pulled, path)
    checked_lines.clear()
    report = merge_snapshot(
        config, embedded_store, config.snapshot_dir, MergeOptions(base=synced_dir(config.state_dir))
    )
    assert sorted(checked_lines) == sorted(changed) and len(changed) == 2  # edit, insert
    counts = report.collections["pnl"]
    assert (counts.updated, counts.remote_only, counts.deleted) == (1, 1, 1)


@pytest.mark.parametrize("damage", ["last line", "trailer"])
def test_a_snapshot_damaged_past_the_records_a_merge_writes_is_refused_with_nothing_written(
    config, embedded_store, damage
):
    embedded_store.insert_many("pnl", docs(40))
    export(config, embedded_store)
    written_since_export(embedded_store, 2)  # the walk then has a write to spool first
    (path,) = config.snapshot_dir.glob("*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    if damage == "last line":
        lines[-2] = lines[-2].replace(b'"ticker"', b'"tickers"')
    else:
        lines[-1] = lines[-1].replace(b'"count":40', b'"count":41')
    path.write_bytes(b"".join(lines))
    before = documents(embedded_store)
    with pytest.raises(SnapshotError) as refused:
        merge_snapshot(config, embedded_store, config.snapshot_dir, MergeOptions())
    line = len(lines) if damage == "trailer" else len(lines) - 1
    assert refused.value.exit_code == 4 and f"{path}:{line}:" in str(refused.value)
    assert documents(embedded_store) == before
    assert not list((config.state_dir / "backups").glob("*"))


def test_a_damaged_file_of_a_collection_not_merged_is_still_refused(config, embedded_store):
    embedded_store.insert_many("pnl", docs(20))
    embedded_store.insert_many("other", [{"_id": i, "n": i} for i in range(20)])
    export(config, embedded_store)
    path = config.snapshot_dir / "other.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"n":3', b'"n":4', 1))
    with pytest.raises(SnapshotError, match="other.jsonl"):
        options = MergeOptions(collections=["pnl"])
        merge_snapshot(config, embedded_store, config.snapshot_dir, options)


@pytest.fixture
def sparse(monkeypatch):
    """The collections planned from the changed keys alone (``sparse_plan``)."""
    planned = []
    plan = merge_module.sparse_plan

    def watched(name, *args):
        planned.append(name)
        return plan(name, *args)

    monkeypatch.setattr(merge_module, "sparse_plan", watched)
    return planned


def application_writes(store, seed):
    """What a bot might do between an export and a merge, through montydb's client: newer and
    older edits, inserts on keys sorting anywhere (runs of them too), deletions."""
    rng = random.Random(seed)
    client = montydb.MontyClient(str(store._path))
    pnl = client["dbsync_test"]["pnl"]
    chosen = rng.sample(range(300), 60)
    for i in chosen[:20]:
        at = "2026-06-01" if rng.random() < 0.5 else "2024-06-01"
        pnl.update_one({"_id": i}, {"$set": {"at": at}})
    for i in chosen[20:35]:
        pnl.update_one({"_id": i}, {"$set": {"note": "edited"}})  # the same time: completeness
    for i in chosen[35:50]:
        pnl.delete_one({"_id": i})
    first = rng.randrange(300)
    for n in range(rng.randrange(1, 80)):  # a run of new keys, as long as STRIDE or longer
        pnl.insert_one({"_id": 1000 + n, "user": f"u{first % 7}", "ticker": f"T{first}x{n:02d}"})
    client.close()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("three_way", [False, True], ids=["two-way", "base-is-snapshot"])
@pytest.mark.parametrize("split", [False, True], ids=["one-file", "parts"])
def test_a_snapshot_of_what_the_index_knows_is_merged_from_the_changed_keys_alone_as_a_full_read(
    config,
    embedded_store,
    encodings,
    mismatches,
    sparse,
    monkeypatch,
    tmp_path,
    seed,
    three_way,
    split,
):
    if split:  # the collection in several parts: each part's rows, merged in key order
        monkeypatch.setattr(parts, "MAX_FILE_BYTES", 12_000)
        monkeypatch.setattr(parts, "TARGET_PART_BYTES", 4_000)
    embedded_store.insert_many("pnl", docs(300))
    export(config, embedded_store)
    assert (len(list(config.snapshot_dir.glob("*.jsonl"))) > 1) is split
    base = None
    if three_way:
        base = tmp_path / "base"
        shutil.copytree(config.snapshot_dir, base)
    application_writes(embedded_store, seed)
    before = documents(embedded_store)
    shutil.copytree(embedded_store._path, tmp_path / "copy")
    encodings.clear()
    report = merge_snapshot(config, embedded_store, config.snapshot_dir, MergeOptions(base=base))
    assert sparse == ["pnl"] and mismatches == []
    assert len(encodings) < 120  # the changed and new documents only

    other = type(embedded_store)(tmp_path / "copy", "dbsync_test")
    assert documents(other) == before
    without_index(monkeypatch)
    full = merge_snapshot(config, other, config.snapshot_dir, MergeOptions(base=base))
    assert outcome(report, config) == outcome(full, config)
    assert documents(embedded_store) == documents(other)
    other.close()
    counts = report.collections["pnl"]
    assert counts.common + counts.conflicts_resolved + counts.kept_local < 300 < counts.total + 60


def test_a_kept_line_on_the_key_of_a_new_document_sends_the_sparse_plan_to_a_full_read(
    config, store, mismatches, sparse
):
    store.insert_many("pnl", docs(200))
    export(config, store)
    store.insert_many("pnl", [{**docs(1, 150)[0], "_id": 999}])  # the key of record 150 again
    with pytest.raises(Exception, match="is not unique"):
        merge_snapshot(config, store, config.snapshot_dir, MergeOptions())
    assert sparse == ["pnl"] and len(mismatches) == 1 and "shares the key" in mismatches[0]


def test_a_snapshot_other_than_the_synced_copy_is_merged_from_its_changes_as_a_full_read(
    config, store, sparse, tmp_path, monkeypatch
):
    """Another folder than the synced copy (an older snapshot of this asset): walked beside the
    synced copy, only the lines that differ decided, as a full read decides them."""
    store.insert_many("pnl", docs(50))
    export(config, store)
    other = tmp_path / "other"
    shutil.copytree(config.snapshot_dir, other)
    store.apply("pnl", [{**docs(1, 3)[0], "at": "2025-09-09"}], [])
    export(config, store)  # the synced copy moves on; ``other`` stays the older snapshot
    store.apply("pnl", [{**docs(1, 4)[0], "at": "2025-09-10"}], [])
    report = merge_snapshot(config, store, other, MergeOptions())
    assert sparse == ["pnl"]
    assert report.collections["pnl"].conflicts_resolved == 2  # both newer versions stay
    assert report.collections["pnl"].writes == 0
    without_index(monkeypatch)
    full = merge_snapshot(config, store, other, MergeOptions())
    assert sparse == ["pnl"]  # not again: the full read
    assert outcome(report, config)[0] == outcome(full, config)[0]
