import pytest

from dbsync.config import load_config
from dbsync.core.guards import RemovedKeys, deletes_too_many
from dbsync.edges.snapshot_files import verify_file
from dbsync.errors import SafetyRefusal
from dbsync.runs.export import export
from dbsync.runs.merge import MergeOptions, merge_snapshot


@pytest.fixture
def config(tmp_path):
    (tmp_path / "dbsync.toml").write_text('database = "shop"\n')
    return load_config(cwd=tmp_path, environ={})


def fill(store, collection, ids):
    store.insert_many(collection, [{"_id": i, "v": i} for i in ids])


def delete(store, collection, ids):
    store.apply(collection, [], list(ids))


def snapshot_bytes(config, collection="items"):
    return (config.snapshot_dir / f"{collection}.jsonl").read_bytes()


def no_temporary_files(folder):
    return [path.name for path in folder.iterdir() if path.name.endswith(".tmp")] == []


# ------------------------------------------------------------- the rule


def test_the_rule_needs_both_more_than_10_records_and_more_than_20_percent():
    assert not deletes_too_many(10, 10)
    assert not deletes_too_many(11, 100)
    assert not deletes_too_many(20, 100)
    assert deletes_too_many(21, 100)
    assert deletes_too_many(11, 11)


def test_removed_keys_counts_old_keys_missing_from_the_new_stream():
    removed = RemovedKeys(iter([(1,), (2,), (3,), (5,), (8,)]))
    for key in [(0,), (2,), (2,), (5,), (6,)]:
        removed.see(key)
    assert removed.finish() == 3  # 1, 3 and 8


# ------------------------------------------------------------- in process


@pytest.mark.parametrize(
    ("records", "deleted", "refused"),
    [(190, 10, False), (190, 11, False), (50, 10, False), (50, 11, True), (100, 21, True)],
)
def test_export_refuses_only_past_both_thresholds(mongo_store, config, records, deleted, refused):
    fill(mongo_store, "items", range(records))
    export(config, mongo_store)
    before = snapshot_bytes(config)
    delete(mongo_store, "items", range(deleted))
    if refused:
        with pytest.raises(SafetyRefusal):
            export(config, mongo_store)
        assert snapshot_bytes(config) == before
    else:
        (result,) = export(config, mongo_store)
        assert (result.records, result.deleted) == (records - deleted, deleted)


def test_replacing_records_under_new_keys_counts_as_deleting_them(mongo_store, config):
    fill(mongo_store, "items", range(50))
    export(config, mongo_store)
    delete(mongo_store, "items", range(15))
    fill(mongo_store, "items", range(100, 115))  # same count, 15 other records
    with pytest.raises(SafetyRefusal, match="delete 15 of the 50 records"):
        export(config, mongo_store)
    (result,) = export(config, mongo_store, allow_deletes=True)
    assert (result.records, result.deleted) == (50, 15)


def test_a_refusal_writes_none_of_the_collections(mongo_store, config):
    fill(mongo_store, "a_fine", range(20))
    fill(mongo_store, "items", range(50))
    export(config, mongo_store)
    before = {path.name: path.read_bytes() for path in config.snapshot_dir.iterdir()}
    fill(mongo_store, "a_fine", range(100, 105))
    delete(mongo_store, "items", range(40))
    with pytest.raises(SafetyRefusal, match="^items: "):
        export(config, mongo_store)
    assert {path.name: path.read_bytes() for path in config.snapshot_dir.iterdir()} == before


def test_a_dropped_collection_empties_its_snapshot_only_with_allow_deletes(mongo_store, config):
    fill(mongo_store, "items", range(30))
    fill(mongo_store, "other", range(3))
    export(config, mongo_store)
    mongo_store._db.drop_collection("items")
    with pytest.raises(SafetyRefusal):
        export(config, mongo_store)
    results = {r.collection: r for r in export(config, mongo_store, allow_deletes=True)}
    assert (results["items"].records, results["items"].deleted) == (0, 30)
    assert verify_file(config.snapshot_dir / "items.jsonl").sections == [("items", 0)]


def test_a_damaged_snapshot_on_disk_falls_back_to_counting_records(mongo_store, config):
    fill(mongo_store, "items", range(50))
    export(config, mongo_store)
    path = config.snapshot_dir / "items.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"v":7', b'"v":8'))  # hash no longer matches
    delete(mongo_store, "items", range(5))
    (result,) = export(config, mongo_store)  # the export repairs the file
    assert (result.records, result.deleted) == (45, 5)
    assert verify_file(path).ok
    delete(mongo_store, "items", range(5, 45))
    path.write_bytes(path.read_bytes().replace(b'"v":47', b'"v":48'))
    with pytest.raises(SafetyRefusal, match="delete 40 of the 45"):
        export(config, mongo_store)


def test_backups_and_bundles_are_not_guarded(mongo_store, config, tmp_path):
    fill(mongo_store, "items", range(50))
    export(config, mongo_store)
    export(config, mongo_store, output=tmp_path / "bundle.jsonl")
    delete(mongo_store, "items", range(40))
    export(config, mongo_store, output=tmp_path / "bundle.jsonl")
    export(config, mongo_store, target_dir=tmp_path / "backup")
    assert verify_file(tmp_path / "bundle.jsonl").sections == [("items", 10)]


def test_merge_uses_the_same_thresholds(mongo_store, config, tmp_path):
    fill(mongo_store, "items", range(50))
    export(config, mongo_store)
    base = tmp_path / "base.jsonl"
    base.write_bytes(snapshot_bytes(config))
    theirs = tmp_path / "theirs"
    delete(mongo_store, "items", range(11))  # the other asset deleted 11 of 50 (22 %)
    export(config, mongo_store, target_dir=theirs)
    fill(mongo_store, "items", range(11))
    with pytest.raises(SafetyRefusal, match=r"delete 11 of 50 records \(more than 10 and more"):
        merge_snapshot(config, mongo_store, theirs, MergeOptions(base=base))
    assert mongo_store.count("items") == 50


# ------------------------------------------------------------- end to end


def test_exporting_an_empty_or_mistyped_database_over_a_full_snapshot_is_refused(pnl_project):
    before = pnl_project.snapshot().read_bytes()
    result = pnl_project.run("--database", "shpo", "export", expect=5)
    message = result.stderr
    assert "pnl: this export would delete 190 of the 190 records" in message
    assert "'shpo' may be empty or mistyped (--database" in message
    assert "--allow-deletes" in message and "nothing was written" in message
    assert pnl_project.snapshot().read_bytes() == before
    assert no_temporary_files(pnl_project.snapshots)
    assert pnl_project.history()[0]["status"] == "refused"
    pnl_project.run("--database", "shpo", "export", "--allow-deletes")
    assert verify_file(pnl_project.snapshot()).sections == [("pnl", 0)]
