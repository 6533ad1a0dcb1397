"""Compare-and-set writes on both stores (MongoDB through mongomock), the rules that decide a
record again, and the counts of an import."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest

from dbsync.config import Config, load_config
from dbsync.core.rules import Rules
from dbsync.core.snapshot import encode_record
from dbsync.edges.changes import redecider
from dbsync.edges.mongo import CAS_ROUNDS, MongoStore, cas_operation, open_mongo
from dbsync.edges.store import Change, Document, Redecision
from dbsync.runs.dedupe import dedupe
from dbsync.runs.import_file import ImportCounts, ImportMode, import_file
from tests.conftest import no_sleep_policy
from tests.mongo_servers import MongoServer

RULES = Rules(key=("_id",), timestamp="ts")


def record(number: int, ts: str, name: str = "") -> Document:
    return {"_id": number, "name": name or f"user{number}", "ts": ts}


def change(before: Document | None, after: Document | None) -> Change:
    sample = after if after is not None else before
    assert sample is not None
    line = None if after is None else encode_record(after, RULES.key)[1]
    return Change(sample["_id"], None if before is None else bson.encode(before), after, line)


class Calls:
    """A redecide that records what it was asked and answers with the rules."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, Document | None]] = []
        self._decide = redecider(RULES)

    def __call__(self, planned: Change, current: Document | None) -> Redecision:
        self.seen.append((planned.id, current))
        return self._decide(planned, current)


def test_changes_of_records_still_as_read_are_written_without_deciding_again(store: Any) -> None:
    old = [record(1, "2024-01-01"), record(2, "2024-01-01")]
    store.insert_many("items", [dict(document) for document in old])
    calls = Calls()

    counts = store.apply_changes(
        "items",
        [
            change(old[0], record(1, "2024-02-01", "new")),
            change(old[1], None),
            change(None, record(3, "2024-02-01")),
        ],
        calls,
    )

    assert (counts.written, counts.deleted, counts.redecided, calls.seen) == (2, 1, 0, [])
    assert sorted(doc["_id"] for doc in store.iter_documents("items")) == [1, 3]
    assert store.find_by_ids("items", [1])[0]["name"] == "new"


def test_a_record_changed_since_it_was_read_is_decided_again_against_its_new_version(
    store: Any,
) -> None:
    read = [record(1, "2024-01-01"), record(2, "2024-01-01"), record(3, "2024-01-01")]
    now = [record(1, "2024-03-01", "app newer"), record(2, "2023-01-01", "app older")]
    store.insert_many("items", [*now, read[2]])
    store.insert_many("items", [record(4, "2024-01-05", "app inserted")])
    calls = Calls()

    counts = store.apply_changes(
        "items",
        [
            change(read[0], record(1, "2024-02-01", "merge")),  # the application's is newer
            change(read[1], record(2, "2024-02-01", "merge")),  # the merge's is newer
            change(read[2], None),  # deleted by the merge, unchanged: goes
            change(None, record(4, "2024-01-02", "merge")),  # inserted by both: newer wins
        ],
        calls,
    )

    names = {doc["_id"]: doc["name"] for doc in store.iter_documents("items")}
    assert names == {1: "app newer", 2: "merge", 4: "app inserted"}
    assert sorted(key for key, _ in calls.seen) == [1, 2, 4]
    assert (counts.redecided, counts.left, counts.deleted) == (3, 2, 1)


def test_a_record_the_merge_deletes_but_the_application_changed_is_kept(store: Any) -> None:
    read = record(1, "2024-01-01")
    store.insert_many("items", [record(1, "2024-01-01", "app")])

    counts = store.apply_changes("items", [change(read, None)], Calls())

    assert [doc["name"] for doc in store.iter_documents("items")] == ["app"]
    assert (counts.deleted, counts.left) == (0, 1)


def test_a_record_the_application_deleted_meanwhile_gets_the_merge_s_version(store: Any) -> None:
    read = record(1, "2024-01-01")

    store.apply_changes("items", [change(read, record(1, "2024-02-01", "merge"))], Calls())

    assert [doc["name"] for doc in store.iter_documents("items")] == ["merge"]


@pytest.fixture
def standalone_store(standalone: MongoServer) -> Iterator[MongoStore]:
    """A MongoStore on a standalone server: no transactions, writes filtered on the bytes read."""
    store = open_mongo(standalone.uri, standalone.new_database(), no_sleep_policy())
    yield store
    store.close()


def test_the_compare_and_set_filter_matches_only_the_document_as_read(
    standalone_store: MongoStore,
) -> None:
    stored = {"_id": 1, "a": 1, "query": {"$gt": 0}}  # $literal: not read as an operator
    collection = standalone_store._db["items"]
    collection.insert_one(dict(stored))

    same = cas_operation(change(stored, {"_id": 1, "a": 2}))
    other = cas_operation(change({**stored, "a": 0}, {"_id": 1, "a": 3}))

    assert collection.count_documents(same._filter) == 1
    assert collection.count_documents(other._filter) == 0


def test_a_record_that_keeps_changing_fails_the_apply_after_bounded_rounds(
    standalone_store: MongoStore,
) -> None:
    standalone_store.insert_many("items", [record(1, "2024-01-01")])
    collection = standalone_store._db["items"]
    rounds = []

    def rewritten_every_time(planned: Change, current: Document | None) -> Redecision:
        rounds.append(1)  # the application writes it again before each round's write
        collection.replace_one({"_id": 1}, record(1, f"2020-01-0{len(rounds)}"))
        return Redecision(dataclasses.replace(planned, expected=None))

    with pytest.raises(Exception, match="kept changing"):
        standalone_store.apply_changes(
            "items", [change(record(1, "1999"), record(1, "2024-02-01"))], rewritten_every_time
        )
    assert len(rounds) == CAS_ROUNDS


def project_config(folder: Path) -> Config:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dbsync.toml").write_text('database = "shop"\n')
    return load_config(cwd=folder, environ={})


def test_import_counts_inserted_and_replaced_documents(store: Any, tmp_path: Path) -> None:
    config = project_config(tmp_path / "project")
    store.insert_many("items", [{"_id": 1, "v": 0}, {"_id": 2, "v": 0}])
    path = tmp_path / "items.json"
    path.write_text("".join(json.dumps({"_id": n, "v": 1}) + "\n" for n in (1, 3, 4)))

    result = import_file(config, store, path, "items", ImportMode.upsert)

    assert (result.documents, result.counts) == (3, ImportCounts(inserted=2, replaced=1))
    path.write_text(json.dumps({"_id": 9}) + "\n")
    inserted = import_file(config, store, path, "items", ImportMode.insert)
    assert inserted.counts == ImportCounts(inserted=1, replaced=0)


class WritesFirst:
    """A store whose application writes ``documents`` just before the import's writes go in:
    after the import read the collection, the worst moment."""

    def __init__(self, inner: Any, documents: list[Document]) -> None:
        self.inner, self.documents = inner, documents

    def apply_changes(self, collection: str, changes: Any, redecide: Any) -> Any:
        for document in self.documents:
            self.inner.apply(collection, [document], [])
        return self.inner.apply_changes(collection, changes, redecide)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_import_never_overwrites_what_the_application_wrote_after_it_read(
    store: Any, tmp_path: Path
) -> None:
    config = project_config(tmp_path / "project")
    store.insert_many("items", [{"_id": 1, "v": 0}, {"_id": 2, "v": 0}])
    path = tmp_path / "items.json"
    path.write_text("".join(json.dumps({"_id": n, "v": "file"}) + "\n" for n in (1, 2, 3)))
    application = [{"_id": 2, "v": "app"}, {"_id": 3, "v": "app"}]

    result = import_file(config, WritesFirst(store, application), path, "items", ImportMode.upsert)

    values = {document["_id"]: document["v"] for document in store.iter_documents("items")}
    assert values == {1: "file", 2: "app", 3: "app"}
    assert result.counts == ImportCounts(inserted=1, replaced=2, kept=2)


def test_every_version_decided_against_again_is_counted_as_a_conflict_with_its_loser(
    store: Any,
) -> None:
    store.insert_many("items", [record(1, "2024-03-01", "app newer"), record(2, "2023-01-01")])
    read = [record(1, "2024-01-01"), record(2, "2024-01-01")]
    counts = store.apply_changes(
        "items",
        [
            change(read[0], record(1, "2024-02-01", "merge older")),
            change(read[1], record(2, "2024-02-01", "merge newer")),
        ],
        redecider(RULES),
    )
    losers = {entry["key"]["_id"]: entry["loser"]["name"] for entry in counts.conflicts}
    assert losers == {1: "merge older", 2: "user2"}
    assert {entry["rule"] for entry in counts.conflicts} == {"newer timestamp"}


def test_dedupe_never_deletes_a_member_the_application_changed_after_it_read(
    store: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "dbsync.toml").write_text(
        'database = "shop"\n[collections.items]\nkey = ["user"]\ntimestamp = "ts"\n'
    )
    config = load_config(cwd=folder, environ={})
    store.insert_many(
        "items",
        [{"_id": 1, "user": "a", "ts": "2024-01-01"}, {"_id": 2, "user": "a", "ts": "2024-02-01"}],
    )
    changed = {"_id": 1, "user": "a", "ts": "2024-01-01", "note": "the application's"}

    report = dedupe(config, WritesFirst(store, [changed]), ["items"])

    kept = sorted(store.iter_documents("items"), key=lambda document: document["_id"])
    assert kept == [changed, {"_id": 2, "user": "a", "ts": "2024-02-01"}]
    assert report is not None
    assert any("left as it wrote them" in note for note in report.notes)
