"""Hostile input: every damaged, forged or foreign file is refused before anything is written."""

import io
import json

import mongomock
import orjson
import pytest
from conftest import no_sleep_policy
from project import Project

from dbsync.config import load_config
from dbsync.core import snapshot
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, SnapshotError, record_line, write_section
from dbsync.edges.mongo import MongoStore, open_mongo
from dbsync.errors import InvalidInput
from dbsync.runs.export import export
from dbsync.runs.merge import MergeOptions, merge_snapshot


def section_bytes(collection, bodies, header=None):
    """A section whose hashes and trailer are right, whatever the bodies hold."""
    handle = io.BytesIO()
    lines = [record_line(body) for body in bodies]
    write_section(handle, header or Header(collection, Rules()), lines)
    return handle.getvalue()


def lines_of(data):
    return data.splitlines(keepends=True)


def hostile_files(snapshot_bytes, folder):
    """(name, path, what the refusal must say) for each kind of damage."""
    lines = lines_of(snapshot_bytes)
    first_record = snapshot.line_body(lines[1])
    cases = {
        "truncated": (snapshot_bytes[: len(snapshot_bytes) // 2], "truncated"),
        "cut at a line": (b"".join(lines[:-1]), "ends without its trailer line"),
        "tampered": (snapshot_bytes.replace(b"@MrEdux", b"@MrEvil"), "does not match its hash"),
        "reordered": (b"".join([lines[0], lines[2], lines[1], *lines[3:]]), "out of order"),
        "removed line": (b"".join([lines[0], *lines[2:]]), "a record line was removed"),
        "duplicate key": (
            section_bytes("pnl", [first_record, first_record]),
            "duplicate key _id=",
        ),
        "format version": (
            snapshot_bytes.replace(b'"version":1', b'"version":2', 1),
            "snapshot format version 2 is not supported",
        ),
        "binary": (lines[0] + bytes(range(256)) * 4 + b"\n", "not a record line"),
        "lying extended json": (
            section_bytes("pnl", [b'{"_id":{"$oid":"not-an-object-id"},"v":1}']),
            "a value lies about its type: _id: $oid wants 24 hex digits",
        ),
        "empty": (b"", "the file is empty"),
        "not a snapshot": (b'{"_id": 1}\n', "not a dbsync snapshot"),
    }
    for number, (name, (data, expected)) in enumerate(cases.items()):
        path = folder / f"case{number}" / "pnl.jsonl"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        yield name, path, expected
    renamed = folder / "renamed"
    renamed.mkdir()
    (renamed / "pnl.jsonl").write_bytes(section_bytes("orders", [first_record]))
    yield "renamed collection", renamed, "holds collection 'orders' but is named pnl.jsonl"


def test_merge_refuses_every_hostile_file_and_changes_nothing(pnl_project, tmp_path):
    before = pnl_project.dump()
    for name, path, expected in hostile_files(pnl_project.snapshot().read_bytes(), tmp_path):
        stderr = pnl_project.run("merge", str(path), expect=4).stderr
        assert expected in stderr, (name, stderr)
        assert "nothing was written" in stderr, (name, stderr)
    assert pnl_project.dump() == before
    assert pnl_project.json("backups") == []
    assert not (pnl_project.state / "reports").exists()
    statuses = {entry["status"] for entry in pnl_project.history()}
    assert statuses == {"failed"}


def test_verify_names_the_file_and_line_of_a_tampered_record(pnl_project):
    path = pnl_project.snapshot()
    path.write_bytes(path.read_bytes().replace(b"@MrEdux", b"@MrEvil"))
    result = pnl_project.run("verify", str(path), expect=4)
    line = next(
        number
        for number, text in enumerate(lines_of(path.read_bytes()), start=1)
        if b"@MrEvil" in text
    )
    assert f"{path}:{line}: the record does not match its hash" in result.stderr


# ------------------------------------------------------------- in process


@pytest.fixture
def config(tmp_path):
    (tmp_path / "dbsync.toml").write_text('database = "shop"\n')
    return load_config(cwd=tmp_path, environ={})


def test_a_line_longer_than_the_limit_is_refused(config, mongo_store, monkeypatch, tmp_path):
    monkeypatch.setattr(snapshot, "MAX_LINE_BYTES", 4096)
    path = tmp_path / "in" / "pnl.jsonl"
    path.parent.mkdir()
    big = orjson.dumps({"_id": 1, "blob": "x" * 10_000})
    path.write_bytes(section_bytes("pnl", [b'{"_id":0}', big, b'{"_id":2}']))
    with pytest.raises(SnapshotError, match="longer than 4096 bytes"):
        merge_snapshot(config, mongo_store, path)
    assert mongo_store.collection_names() == []


def test_a_snapshot_keyed_otherwise_than_dbsync_toml_is_refused(config, mongo_store, tmp_path):
    header = Header("pnl", Rules(key=("user",)))
    path = tmp_path / "pnl.jsonl"
    path.write_bytes(section_bytes("pnl", [b'{"_id":1,"user":"a"}'], header))
    with pytest.raises(InvalidInput, match=r"keyed by \['user'\] but dbsync.toml says \['_id'\]"):
        merge_snapshot(config, mongo_store, path)


def test_a_base_directory_is_checked_like_the_snapshot(config, mongo_store, tmp_path):
    mongo_store.insert_many("pnl", [{"_id": 1}])
    export(config, mongo_store)
    base = tmp_path / "base"
    base.mkdir()
    (base / "pnl.jsonl").write_bytes(section_bytes("other", [b'{"_id":1}']))
    with pytest.raises(InvalidInput, match="holds collection 'other'"):
        merge_snapshot(config, mongo_store, config.snapshot_dir, MergeOptions(base=base))


def test_one_collection_file_alone_may_be_merged_whatever_its_name(config, mongo_store, tmp_path):
    """A lone file is an --output bundle as far as dbsync can tell: its header decides."""
    path = tmp_path / "mailed.jsonl"
    path.write_bytes(section_bytes("orders", [b'{"_id":1}']))
    merge_snapshot(config, mongo_store, path)
    assert mongo_store.collection_names() == ["orders"]


# ------------------------------------------------------------- configuration files


@pytest.mark.parametrize(
    ("file", "text", "named"),
    [
        ("dbsync.toml", 'databse = "shop"\n', "unknown key 'databse'"),
        ("dbsync.toml", 'database = "shop"\nretry_seconds = "soon"\n', "'retry_seconds' must be"),
        ("dbsync.toml", 'database = "shop"\nlock_timeout = true\n', "'lock_timeout' must be"),
        (
            "dbsync.toml",
            'database = "shop"\n[collections.pnl]\nkey = "user_id"\n',
            "'collections.pnl.key' must be a list",
        ),
        (
            "dbsync.toml",
            'database = "shop"\n[collections.pnl]\nkeys = ["user_id"]\n',
            "unknown key 'collections.pnl.keys'",
        ),
        ("dbsync.local.toml", 'url = "mongodb://x"\n', "unknown key 'url'"),
        ("dbsync.toml", "database = [unclosed\n", "not valid TOML"),
    ],
)
def test_a_bad_configuration_file_exits_4_naming_the_file_and_key(tmp_path, file, text, named):
    project = Project(tmp_path)
    (tmp_path / "dbsync.toml").write_text('database = "shop"\n')
    path = tmp_path / file
    path.write_text(text)
    result = project.run("history", expect=4)
    assert str(path) in result.stderr and named in result.stderr


# ------------------------------------------------------------- records missing key or timestamp


@pytest.fixture
def keyed(tmp_path):
    (tmp_path / "dbsync.toml").write_text(
        'database = "shop"\n[collections.pnl]\nkey = ["user"]\ntimestamp = "ts"\n'
    )
    return load_config(cwd=tmp_path, environ={})


def test_export_of_records_missing_key_or_timestamp_is_deterministic_and_says_so(
    keyed, mongo_store
):
    mongo_store.insert_many(
        "pnl",
        [
            {"_id": 1, "user": "a", "ts": "2024-01-01T00:00:00"},
            {"_id": 2, "ts": "2024-01-02T00:00:00"},  # no key field
            {"_id": 3, "user": "c"},  # no timestamp
            {"_id": 4, "user": "d", "ts": "soon"},  # unreadable timestamp
        ],
    )
    (result,) = export(keyed, mongo_store)
    first = (keyed.snapshot_dir / "pnl.jsonl").read_bytes()
    assert result.notes == [
        "pnl: 1 record(s) lack a key field (user) or hold null there (_id 2): they are keyed "
        "by null, the same way on every asset",
        "pnl: 2 record(s) have no readable 'ts' timestamp (_id 3, 4): in a conflict they lose "
        "to any dated version",
    ]
    export(keyed, mongo_store)
    assert (keyed.snapshot_dir / "pnl.jsonl").read_bytes() == first
    null_keyed = json.loads(lines_of(first)[1])["d"]
    assert null_keyed["_id"] == 2  # null sorts first, on every asset


def test_two_records_missing_the_key_clash_and_are_refused_naming_both(keyed, mongo_store):
    mongo_store.insert_many("pnl", [{"_id": 2, "ts": 1}, {"_id": 5, "ts": 2}, {"_id": 6}])
    with pytest.raises(InvalidInput) as refused:
        export(keyed, mongo_store)
    assert "1 key(s) shared by 3 records" in refused.value.message
    assert "user=null  ← _id 2, 5, 6" in refused.value.message
    assert not (keyed.snapshot_dir / "pnl.jsonl").exists()


def test_merging_a_version_without_timestamp_is_the_same_whichever_side_has_it(
    keyed, tmp_path, replica_set
):
    dated = {"_id": 1, "user": "a", "ts": "2024-01-01T00:00:00", "v": "dated"}
    undated = {"_id": 1, "user": "a", "v": "undated", "extra": "more complete"}
    outcomes = []
    for ours, theirs in ((dated, undated), (undated, dated)):
        other = MongoStore(mongomock.MongoClient(), "theirs", retry=no_sleep_policy())
        other.insert_many("pnl", [theirs])
        export(keyed, other, target_dir=tmp_path / "theirs")
        store = open_mongo(replica_set.uri, replica_set.new_database(), no_sleep_policy())
        store.insert_many("pnl", [ours])
        report = merge_snapshot(keyed, store, tmp_path / "theirs")
        outcomes.append((store.find_by_ids("pnl", [1]), report))
    (first, report_1), (second, report_2) = outcomes
    assert first == second == [dated]
    conflict = report_1.to_json()["collections"]["pnl"]["conflicts"][0]
    assert conflict["rule"] == "newer timestamp"
    assert report_1.notes == report_2.notes == []  # what these merges wrote has a timestamp
    other = MongoStore(mongomock.MongoClient(), "theirs", retry=no_sleep_policy())
    other.insert_many("pnl", [dated, {"_id": 7, "user": "g"}])
    export(keyed, other, target_dir=tmp_path / "theirs")
    report = merge_snapshot(keyed, store, tmp_path / "theirs")
    assert report.notes == [
        "pnl: 1 record(s) this merge writes have no readable 'ts' timestamp (_id 7): in a "
        "conflict they lose to any dated version"
    ]
    assert "note: pnl: 1 record(s) this merge writes" in report.to_text()
