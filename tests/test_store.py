"""The store layer: both implementations, retries, URI handling and BSON fidelity."""

from __future__ import annotations

import datetime
import itertools
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import bson
import mongomock
import montydb
import pytest
from bson import (
    Binary,
    Code,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from bson.dbref import DBRef
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from dbsync.core.extjson import to_json_value
from dbsync.core.ordering import sort_key
from dbsync.edges.embedded import DamagedStore, EmbeddedStore
from dbsync.edges.mongo import (
    MongoStore,
    call_with_retries,
    is_replicated,
    is_transient,
    translate_pymongo_error,
    write_operations,
)
from dbsync.edges.secrets import redact_uri, scrub_secrets, uri_secrets
from dbsync.edges.store import (
    Change,
    RetryPolicy,
    WriteCounts,
    backoff_delay,
    chunks,
    decode_raw,
    encoded_size,
    id_key,
    in_requested_order,
)
from dbsync.edges.stores import open_store, validate_database_name
from dbsync.errors import DatabaseUnreachable, DbsyncError, InvalidInput, UsageError

OID = ObjectId("65a1b2c3d4e5f60718293a4b")


def in_id_order(documents: Any) -> list[Any]:
    """Documents sorted by ``_id`` (the embedded store streams them in storage order)."""
    return sorted(documents, key=lambda doc: sort_key(to_json_value(doc), ["_id"]))


EVERY_BSON_TYPE: dict[str, Any] = {
    "int32": 42,
    "int32_min": -(2**31),
    "int64_small": Int64(7),
    "int64_past_2_53": Int64(2**53 + 1),
    "int64_max": Int64(2**63 - 1),
    "double": 1.5,
    "double_nan": float("nan"),
    "double_inf": float("inf"),
    "double_minus_inf": float("-inf"),
    "double_minus_zero": -0.0,
    "double_integral": 3.0,
    "decimal128": Decimal128("1.000000000000000000000000000000001"),
    "decimal128_nan": Decimal128("NaN"),
    "date_before_1970": datetime.datetime(1901, 12, 13, 20, 45, 52, 123000),
    "date_after_2038": datetime.datetime(2100, 12, 31, 23, 59, 59, 999000),
    "binary_subtype_0": b"\x00\x01\xff",
    "binary_uuid": Binary(uuid.UUID("12345678-1234-5678-1234-567812345678").bytes, 4),
    "binary_user_defined": Binary(b"\x00custom", 0x80),
    "regex": Regex("^a.*b$", "imsux"),
    "timestamp": Timestamp(1700000000, 7),
    "min_key": MinKey(),
    "max_key": MaxKey(),
    "code": Code("function () { return 1; }"),
    "code_with_scope": Code("return x;", {"x": 1}),
    "dbref": DBRef("other", OID, "otherdb", note="extra field"),
    "object_id": OID,
    "bool": True,
    "null": None,
    "nested": {"a": [1, {"b": [[], {}, [Int64(2)]]}], "z": None},
    "empty_document": {},
    "empty_array": [],
    "unicode": "héllo ✓ 日本語 🎉",
    "nul_in_string": "a\x00b",
    "field_order": {"z": 1, "a": 2, "m": {"y": 1, "b": 2}},
}

ID_OF_EVERY_TYPE: list[Any] = [
    7,
    Int64(2**60),
    2.5,
    "a string",
    "",
    OID,
    {"user": 1, "day": "2024-01-01"},
    datetime.datetime(2024, 1, 1),
    Binary(b"\x01\x02", 0),
    None,
    True,
]


def encoded(documents: list[dict[str, Any]]) -> list[bytes]:
    return [bson.encode(document) for document in documents]


def no_sleep_policy(**overrides: Any) -> RetryPolicy:
    """A retry policy that never waits for real (conftest's twin: conftest is not imported)."""
    return RetryPolicy(sleep=lambda seconds: None, **overrides)


def raising(error: Exception) -> Callable[..., Any]:
    """A function that raises ``error`` whatever it is called with."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    return fail


def numbered(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"_id": number, "n": number, **fields} for number in range(count)]


# --- Both stores -----------------------------------------------------------------------------


def test_insert_then_iterate_in_id_order(store: Any) -> None:
    documents = [{"_id": 3, "x": "c"}, {"_id": 1, "x": "a"}, {"_id": 2, "x": "b"}]

    assert store.insert_many("items", documents) == 3

    assert in_id_order(store.iter_documents("items")) == [
        {"_id": 1, "x": "a"},
        {"_id": 2, "x": "b"},
        {"_id": 3, "x": "c"},
    ]


def test_iterate_with_a_batch_smaller_than_the_collection(store: Any) -> None:
    store.insert_many("items", numbered(7))

    assert [doc["_id"] for doc in in_id_order(store.iter_documents("items", batch_size=3))] == list(
        range(7)
    )


def test_iterate_mixed_id_types_in_bson_order(store: Any) -> None:
    store.insert_many("items", [{"_id": "b"}, {"_id": OID}, {"_id": 2}, {"_id": "a"}, {"_id": 1.5}])

    ids = [doc["_id"] for doc in in_id_order(store.iter_documents("items"))]

    assert ids == [1.5, 2, "a", "b", OID]


def test_an_absent_collection_is_empty(store: Any) -> None:
    assert store.count("absent") == 0
    assert list(store.iter_documents("absent")) == []
    assert store.find_by_ids("absent", [1]) == []
    assert store.size_bytes("absent") == 0
    assert store.collection_names() == []


def test_count_and_size(store: Any) -> None:
    documents = numbered(25, payload="x" * 10)
    store.insert_many("items", [dict(document) for document in documents])

    assert store.count("items") == 25
    assert store.size_bytes("items") == encoded_size(documents)


def test_collection_names_sorted(store: Any) -> None:
    for name in ["zeta", "alpha", "mid"]:
        store.insert_many(name, [{"_id": 1}])

    assert store.collection_names() == ["alpha", "mid", "zeta"]


def test_collection_names_leave_out_system_collections(mongo_store: MongoStore) -> None:
    for name in ["zeta", "system.views", "alpha"]:
        mongo_store.insert_many(name, [{"_id": 1}])

    assert mongo_store.collection_names() == ["alpha", "zeta"]


def test_find_by_ids_in_requested_order_missing_left_out(store: Any) -> None:
    store.insert_many("items", numbered(10))

    found = store.find_by_ids("items", [7, 99, 2, 7, 5])

    assert [doc["_id"] for doc in found] == [7, 2, 5]
    assert found[0] == {"_id": 7, "n": 7}


def test_find_by_ids_beyond_one_batch(store: Any) -> None:
    store.insert_many("items", numbered(2500))

    found = store.find_by_ids("items", list(range(0, 2500, 2)))

    assert [doc["_id"] for doc in found] == list(range(0, 2500, 2))


def test_apply_deletes_replaces_and_inserts_only_the_named_documents(store: Any) -> None:
    store.insert_many("items", numbered(6))

    counts = store.apply(
        "items",
        upserts=[{"_id": 1, "n": "changed"}, {"_id": 10, "n": "new"}],
        delete_ids=[2, 4, 77],
    )

    assert counts == WriteCounts(upserted=2, deleted=2)
    assert in_id_order(store.iter_documents("items")) == [
        {"_id": 0, "n": 0},
        {"_id": 1, "n": "changed"},
        {"_id": 3, "n": 3},
        {"_id": 5, "n": 5},
        {"_id": 10, "n": "new"},
    ]


def test_apply_with_only_new_documents(store: Any) -> None:
    store.insert_many("items", numbered(3))

    counts = store.apply("items", upserts=[{"_id": 5, "n": 5}], delete_ids=[])

    assert counts == WriteCounts(upserted=1, deleted=0)
    assert [doc["_id"] for doc in in_id_order(store.iter_documents("items"))] == [0, 1, 2, 5]


def test_apply_deletes_before_upserting_the_same_id(store: Any) -> None:
    store.insert_many("items", [{"_id": 1, "n": "old", "gone": True}])

    counts = store.apply("items", upserts=[{"_id": 1, "n": "new"}], delete_ids=[1])

    assert counts == WriteCounts(upserted=1, deleted=1)
    assert list(store.iter_documents("items")) == [{"_id": 1, "n": "new"}]


def test_apply_more_operations_than_one_batch(store: Any) -> None:
    store.insert_many("items", numbered(1500))

    upserts = [{"_id": number, "n": -number} for number in range(1000, 2200)]
    counts = store.apply("items", upserts=upserts, delete_ids=list(range(900)))

    assert counts == WriteCounts(upserted=1200, deleted=900)
    assert store.count("items") == 100 + 1200
    assert store.find_by_ids("items", [950, 1999]) == [
        {"_id": 950, "n": 950},
        {"_id": 1999, "n": -1999},
    ]


def test_apply_to_an_absent_collection_creates_it(store: Any) -> None:
    counts = store.apply("fresh", upserts=[{"_id": "a"}], delete_ids=["b"])

    assert counts == WriteCounts(upserted=1, deleted=0)
    assert store.collection_names() == ["fresh"]


def test_apply_refuses_an_upsert_without_id(store: Any) -> None:
    store.insert_many("items", numbered(2))

    with pytest.raises(InvalidInput, match="has no _id"):
        store.apply("items", upserts=[{"n": "no id"}], delete_ids=[0])

    assert store.count("items") == 2


def test_replace_collection_holds_exactly_the_given_documents(store: Any) -> None:
    store.insert_many("items", numbered(5))

    assert store.replace_collection("items", [{"_id": "x"}, {"_id": "y", "v": 1}]) == 2

    assert in_id_order(store.iter_documents("items")) == [{"_id": "x"}, {"_id": "y", "v": 1}]


def test_replace_collection_with_nothing_empties_it(store: Any) -> None:
    store.insert_many("items", numbered(5))

    assert store.replace_collection("items", []) == 0

    assert store.count("items") == 0


def test_insert_many_names_a_duplicate_id_in_the_input(store: Any) -> None:
    documents = [{"_id": "a"}, {"_id": "b"}, {"_id": "a", "again": True}, {"_id": "c"}]

    with pytest.raises(InvalidInput) as caught:
        store.insert_many("items", documents)

    assert '"a"' in caught.value.message
    assert "'items'" in caught.value.message
    assert "2 documents were inserted before it" in caught.value.message
    assert [doc["_id"] for doc in in_id_order(store.iter_documents("items"))] == ["a", "b"]


def test_insert_many_names_an_id_already_in_the_collection(store: Any) -> None:
    store.insert_many("items", [{"_id": OID}])

    with pytest.raises(InvalidInput, match=str(OID)):
        store.insert_many("items", [{"_id": 1}, {"_id": OID}])

    assert store.count("items") == 2


def test_insert_many_gives_an_object_id_to_a_document_without_id(store: Any) -> None:
    assert store.insert_many("items", [{"x": 1}]) == 1

    (document,) = store.iter_documents("items")
    assert isinstance(document["_id"], ObjectId)
    assert document["x"] == 1


def test_every_bson_type_survives_insert_and_read_byte_identical(store: Any) -> None:
    original = {"_id": "all types", **EVERY_BSON_TYPE}
    store.insert_many("types", [dict(original)])

    (back,) = store.iter_documents("types")

    assert bson.encode(back) == bson.encode(original)
    assert list(back) == list(original)
    assert type(back["binary_subtype_0"]) is bytes
    assert type(back["int64_past_2_53"]) is Int64


@pytest.mark.parametrize("name", sorted(EVERY_BSON_TYPE))
def test_each_bson_type_survives_apply_byte_identical(store: Any, name: str) -> None:
    original = {"_id": name, "before": 1, "value": EVERY_BSON_TYPE[name], "after": 2}
    store.insert_many("types", [{"_id": name, "value": "old"}, {"_id": "other"}])

    store.apply("types", upserts=[dict(original)], delete_ids=[])

    (back,) = store.find_by_ids("types", [name])
    assert bson.encode(back) == bson.encode(original)


def test_every_bson_type_survives_replace_collection(store: Any) -> None:
    original = {"_id": OID, **EVERY_BSON_TYPE}

    store.replace_collection("types", [dict(original)])

    assert encoded(list(store.iter_documents("types"))) == [bson.encode(original)]


@pytest.mark.parametrize("document_id", ID_OF_EVERY_TYPE, ids=repr)
def test_any_id_type_is_inserted_found_replaced_and_deleted(store: Any, document_id: Any) -> None:
    store.insert_many("ids", [{"_id": document_id, "v": 1}, {"_id": "neighbour", "v": 0}])

    found = store.find_by_ids("ids", [document_id])
    assert encoded(found) == [bson.encode({"_id": document_id, "v": 1})]
    assert store.apply("ids", [{"_id": document_id, "v": 2}], []) == WriteCounts(1, 0)
    (replaced,) = store.find_by_ids("ids", [document_id])
    assert bson.encode(replaced) == bson.encode({"_id": document_id, "v": 2})
    assert store.apply("ids", [], [document_id]) == WriteCounts(0, 1)
    assert list(store.iter_documents("ids")) == [{"_id": "neighbour", "v": 0}]


def test_field_names_with_dots_and_dollars_are_stored(store: Any) -> None:
    original = {"_id": 1, "example.com": 1, "nested": {"$price": 2, "a.b": [{"c.d": 3}]}}

    store.insert_many("fields", [dict(original)])
    store.apply("fields", [{**original, "v": 2}], [])

    (back,) = store.iter_documents("fields")
    assert bson.encode(back) == bson.encode({**original, "v": 2})


class CountingAdminClient:
    """A mongomock client whose ``admin`` commands are recorded, and fail when told to."""

    def __init__(self) -> None:
        self.client, self.commands, self.down = mongomock.MongoClient(), list[str](), False
        self.admin = SimpleNamespace(command=self.command)

    def __getitem__(self, name: str) -> Any:
        return self.client[name]

    def command(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.commands.append(name)
        if self.down:
            raise ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] Connection refused")
        return self.client.admin.command(name, *args, **kwargs)

    def close(self) -> None:
        self.client.close()


def test_a_mongo_store_pings_the_server_and_says_when_it_does_not_answer() -> None:
    admin = CountingAdminClient()
    store = MongoStore(admin, "db", retry=no_sleep_policy(budget_seconds=0))  # type: ignore[arg-type]

    assert store.ping() is None
    assert admin.commands == ["ping"]  # it asked the server; it did not assume an answer
    admin.down = True
    with pytest.raises(DatabaseUnreachable, match="Connection refused"):
        store.ping()


# --- The embedded store ----------------------------------------------------------------------


def test_embedded_store_keeps_its_data_across_reopening(tmp_path: Path) -> None:
    first = EmbeddedStore(tmp_path / "store", "db")
    first.insert_many("items", [{"_id": 1, "v": Int64(5)}])
    first.close()

    second = EmbeddedStore(tmp_path / "store", "db")

    assert list(second.iter_documents("items")) == [{"_id": 1, "v": Int64(5)}]
    assert second.collection_names() == ["items"]


@pytest.mark.parametrize("document_id", [5, Int64(5), 5.0, "five", OID, {"a": 1}, b"\x00"])
def test_montydb_s_client_and_the_embedded_store_address_the_same_records(
    tmp_path: Path, document_id: Any
) -> None:
    store = EmbeddedStore(tmp_path / "store", "db")
    store.insert_many("items", [{"_id": document_id, "v": 1}])
    items = montydb.MontyClient(str(tmp_path / "store"))["db"]["items"]

    assert items.update_one({"_id": document_id}, {"$set": {"v": 2}}).modified_count == 1
    items.insert_one({"_id": "app", "v": 0})
    assert store.find_by_ids("items", [document_id, "app"]) == [
        {"_id": document_id, "v": 2},
        {"_id": "app", "v": 0},
    ]
    store.apply("items", [{"_id": document_id, "v": 3}], ["app"])
    assert list(items.find({})) == [{"_id": document_id, "v": 3}]


def test_the_embedded_store_finds_a_number_id_whatever_type_montydb_stored_it_with(
    tmp_path: Path,
) -> None:
    EmbeddedStore(tmp_path / "store", "db").close()
    items = montydb.MontyClient(str(tmp_path / "store"))["db"]["items"]
    items.insert_many([{"_id": Int64(5), "v": "int64"}, {"_id": 6.0, "v": "double"}])
    store = EmbeddedStore(tmp_path / "store", "db")

    store.apply("items", [{"_id": 5, "v": "int32"}], [6])

    assert list(store.iter_documents("items")) == [{"_id": 5, "v": "int32"}]


def test_a_collection_file_left_without_its_table_reads_empty_and_is_repaired(
    tmp_path: Path,
) -> None:
    store = EmbeddedStore(tmp_path / "store", "db")
    (tmp_path / "store" / "db").mkdir()
    (tmp_path / "store" / "db" / "items.collection").write_bytes(b"")  # montydb's first step

    assert store.collection_names() == ["items"]
    assert (store.count("items"), list(store.iter_documents("items"))) == (0, [])
    store.apply("items", [{"_id": 1}], [])
    assert list(montydb.MontyClient(str(tmp_path / "store"))["db"]["items"].find()) == [{"_id": 1}]


def test_a_collection_file_sqlite_cannot_read_is_named_as_damaged(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "store", "db")
    store.insert_many("items", [{"_id": 1}])
    store.close()
    path = tmp_path / "store" / "db" / "items.collection"
    for leftover in (
        path.with_name("items.collection-wal"),
        path.with_name("items.collection-shm"),
    ):
        leftover.unlink(missing_ok=True)
    path.write_bytes(b"not a database " * 100)

    with pytest.raises(DamagedStore, match="items.collection cannot be read"):
        store.count("items")


def test_embedded_store_refuses_a_repository_of_another_engine(tmp_path: Path) -> None:
    montydb.set_storage(str(tmp_path), storage="flatfile", use_bson=True)

    with pytest.raises(InvalidInput, match="'flatfile'"):
        EmbeddedStore(tmp_path, "db")


def test_embedded_ping_fails_when_the_directory_is_gone(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "store", "db")
    shutil.rmtree(tmp_path / "store")

    with pytest.raises(DatabaseUnreachable, match="the directory is gone"):
        store.ping()


def test_embedded_ids_equal_as_numbers_are_duplicates(embedded_store: EmbeddedStore) -> None:
    embedded_store.insert_many("items", [{"_id": 5}])

    with pytest.raises(InvalidInput, match="duplicate _id 5"):
        embedded_store.insert_many("items", [{"_id": Int64(5)}])


def test_embedded_replace_collection_with_a_duplicate_changes_nothing(
    embedded_store: EmbeddedStore,
) -> None:
    embedded_store.insert_many("items", numbered(3))

    with pytest.raises(InvalidInput, match="duplicate _id 1"):
        embedded_store.replace_collection("items", [{"_id": 1}, {"_id": 1}])

    assert embedded_store.count("items") == 3


def test_embedded_apply_with_an_unencodable_document_changes_nothing(
    embedded_store: EmbeddedStore,
) -> None:
    embedded_store.insert_many("items", numbered(3))

    with pytest.raises(InvalidInput, match="cannot be stored"):
        embedded_store.apply("items", [{"_id": 9, "bad": object()}], delete_ids=[0])

    assert [doc["_id"] for doc in in_id_order(embedded_store.iter_documents("items"))] == [0, 1, 2]


# --- MongoDB specifics -----------------------------------------------------------------------


class FakeSession:
    """Records what a ``ClientSession`` is asked to do."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.in_transaction = False

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.events.append("ended")

    def start_transaction(self) -> FakeSession.Transaction:
        return FakeSession.Transaction(self)

    class Transaction:
        def __init__(self, session: FakeSession) -> None:
            self.session = session

        def __enter__(self) -> None:
            self.session.in_transaction = True
            self.session.events.append("started")

        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            self.session.in_transaction = False
            self.session.events.append("aborted" if exc_type else "committed")


class ReplicaSetClient:
    """mongomock answering ``hello`` like a replica set member, with recorded sessions.

    mongomock refuses sessions, so the recording collection passes ``bulk_write`` on without
    its session after noting whether it ran inside a transaction.
    """

    def __init__(self, fail_first_bulk_write_with: Exception | None = None) -> None:
        self.mock = mongomock.MongoClient()
        self.sessions: list[FakeSession] = []
        self.bulk_writes: list[tuple[FakeSession | None, bool]] = []
        self.admin = SimpleNamespace(command=self._command)
        self.failure = fail_first_bulk_write_with

    def _command(self, name: str) -> dict[str, Any]:
        if name == "hello":
            return {"isWritablePrimary": True, "setName": "rs0"}
        return {"ok": 1.0}

    def __getitem__(self, database: str) -> ItemDatabase:
        return ItemDatabase(lambda name: RecordingCollection(self, self.mock[database][name]))

    def start_session(self) -> FakeSession:
        self.sessions.append(FakeSession())
        return self.sessions[-1]

    def close(self) -> None:
        self.mock.close()


class RecordingCollection:
    def __init__(self, client: ReplicaSetClient, collection: Any) -> None:
        self.client = client
        self.collection = collection

    def bulk_write(self, requests: Any, ordered: bool, session: Any) -> Any:
        self.client.bulk_writes.append((session, bool(session and session.in_transaction)))
        if self.client.failure is not None:
            failure, self.client.failure = self.client.failure, None
            raise failure
        return self.collection.bulk_write(requests, ordered=ordered)

    def find(self, query: Any, session: Any = None) -> Any:
        self.client.bulk_writes.append((session, bool(session and session.in_transaction)))
        return self.collection.find(query)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)


class ItemDatabase:
    """``client[db][collection]`` for the fakes, which only need item access."""

    def __init__(self, get: Callable[[str], Any]) -> None:
        self.get = get

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def list_collections(self, filter: Any = None) -> list[dict[str, Any]]:
        return []  # no capped collection among the fakes'


def replica_set_store(client: ReplicaSetClient) -> MongoStore:
    return MongoStore(client, "db", retry=no_sleep_policy())  # type: ignore[arg-type]


def test_apply_on_a_replica_set_runs_in_one_transaction() -> None:
    client = ReplicaSetClient()
    store = replica_set_store(client)
    client.mock["db"]["items"].insert_many(numbered(1500))

    upserts = [{"_id": number, "n": "new"} for number in range(1000, 1600)]
    counts = store.apply("items", upserts, delete_ids=list(range(600)))

    assert counts == WriteCounts(upserted=600, deleted=600)
    (session,) = client.sessions
    assert session.events == ["started", "committed", "ended"]
    assert len(client.bulk_writes) == 2
    assert all(used is session and inside for used, inside in client.bulk_writes)
    assert client.mock["db"]["items"].count_documents({}) == 1500 - 600 + 100


def test_a_transient_transaction_error_retries_the_whole_transaction() -> None:
    failure = OperationFailure(
        "conflict", code=112, details={"errorLabels": ["TransientTransactionError"]}
    )
    client = ReplicaSetClient(fail_first_bulk_write_with=failure)
    store = replica_set_store(client)

    counts = store.apply("items", [{"_id": 1}], [])

    assert counts == WriteCounts(upserted=1, deleted=0)
    assert [session.events for session in client.sessions] == [
        ["started", "aborted", "ended"],
        ["started", "committed", "ended"],
    ]


def test_compare_and_set_on_a_replica_set_writes_and_reads_back_in_one_transaction() -> None:
    failure = OperationFailure(
        "write conflict", code=112, details={"errorLabels": ["TransientTransactionError"]}
    )
    client = ReplicaSetClient(fail_first_bulk_write_with=failure)
    store = replica_set_store(client)
    client.mock["db"]["items"].insert_many([{"_id": 1, "v": 0}])
    change = Change(1, bson.encode({"_id": 1, "v": 0}), {"_id": 1, "v": 1})

    counts = store.apply_changes("items", [change], lambda planned, current: None)

    assert counts.written == 1 and counts.redecided == 0
    assert [session.events for session in client.sessions] == [
        ["started", "aborted", "ended"],
        ["started", "committed", "ended"],
    ]
    assert all(used is not None and inside for used, inside in client.bulk_writes[1:])
    assert client.mock["db"]["items"].find_one({"_id": 1}) == {"_id": 1, "v": 1}


def test_a_failed_transaction_is_aborted_and_reported() -> None:
    client = ReplicaSetClient(fail_first_bulk_write_with=OperationFailure("bad", code=2))
    store = replica_set_store(client)

    with pytest.raises(DbsyncError, match="apply changes to 'items' in a transaction failed"):
        store.apply("items", [{"_id": 1}], [])

    assert client.sessions[0].events == ["started", "aborted", "ended"]
    assert client.mock["db"]["items"].count_documents({}) == 0


def test_apply_on_a_standalone_server_uses_no_session(mongo_store: MongoStore) -> None:
    mongo_store._client.start_session = None  # type: ignore[method-assign,assignment]

    assert mongo_store.apply("items", [{"_id": 1}], []) == WriteCounts(1, 0)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"isWritablePrimary": True, "setName": "rs0"}, True),
        ({"isWritablePrimary": True, "msg": "isdbgrid"}, True),
        ({"isWritablePrimary": True}, False),
    ],
)
def test_is_replicated_reads_the_hello_reply(reply: dict[str, Any], expected: bool) -> None:
    assert is_replicated(reply) is expected


def test_a_server_refusing_hello_is_taken_for_standalone() -> None:
    client = mongomock.MongoClient()
    refusing = SimpleNamespace(command=raising(OperationFailure("no such command: 'hello'")))
    store = MongoStore(client, "db", retry=no_sleep_policy())
    store._client = SimpleNamespace(admin=refusing)  # type: ignore[assignment]

    assert store._is_replicated() is False


def test_write_operations_delete_first_then_upsert() -> None:
    operations = write_operations([{"_id": 1, "v": 1}], [2, 3])

    assert [type(operation).__name__ for operation in operations] == [
        "DeleteOne",
        "DeleteOne",
        "ReplaceOne",
    ]
    assert operations[2]._filter == {"_id": 1}
    assert operations[2]._upsert is True


class FailingOnce:
    """Wraps a mongomock object: the first call of each method raises AutoReconnect."""

    def __init__(self, target: Any, failed: set[str]) -> None:
        self._target = target
        self._failed = failed

    def __getitem__(self, name: str) -> FailingOnce:
        return FailingOnce(self._target[name], self._failed)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name == "admin":
            return FailingOnce(attribute, self._failed)
        if not callable(attribute) or name == "close":
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if name not in self._failed:
                self._failed.add(name)
                raise AutoReconnect(f"connection lost during {name}")
            return attribute(*args, **kwargs)

        return call


STORE_CALLS: dict[str, Callable[[MongoStore], Any]] = {
    "collection_names": lambda store: store.collection_names(),
    "count": lambda store: store.count("items"),
    "size_bytes": lambda store: store.size_bytes("items"),
    "iter_documents": lambda store: list(store.iter_documents("items")),
    "find_by_ids": lambda store: store.find_by_ids("items", [1]),
    "apply": lambda store: store.apply("items", [{"_id": 3}], [2]),
    "insert_many": lambda store: store.insert_many("items", [{"_id": 3}]),
    "replace_collection": lambda store: store.replace_collection("items", [{"_id": 3}]),
    "ping": lambda store: store.ping(),
}


@pytest.mark.parametrize("method", sorted(STORE_CALLS))
def test_every_mongo_store_method_retries_a_lost_connection(method: str) -> None:
    client = mongomock.MongoClient()
    client["db"]["items"].insert_many([{"_id": 1}, {"_id": 2}])
    failed: set[str] = set()
    sleeps: list[float] = []
    policy = RetryPolicy(sleep=sleeps.append, rng=lambda: 1.0)
    store = MongoStore(FailingOnce(client, failed), "db", retry=policy)  # type: ignore[arg-type]

    STORE_CALLS[method](store)

    assert failed, "no call was made through the failing client"
    assert len(sleeps) == len(failed)


def test_a_read_resumes_after_the_last_id_returned() -> None:
    collection = ResumableCollection(list(range(10)), fail_at=[4, 5])
    store = MongoStore({"db": {"items": collection}}, "db", retry=no_sleep_policy())  # type: ignore[arg-type]

    ids = [document["_id"] for document in store.iter_documents("items", batch_size=3)]

    assert ids == list(range(10))
    assert [cursor.bound for cursor in collection.cursors] == [None, 2, 5]


class ResumableCollection:
    """A collection whose successive cursors each fail once after ``fail_at[i]`` documents."""

    def __init__(self, ids: list[int], fail_at: list[int]) -> None:
        self.documents = [{"_id": number} for number in ids]
        self.fail_at = list(fail_at)
        self.cursors: list[FakeCursor] = []

    def find(self, _filter: Any, *, sort: Any, batch_size: int) -> FakeCursor:
        assert sort == [("_id", 1)]
        fail_at = self.fail_at.pop(0) if self.fail_at else None
        self.cursors.append(FakeCursor(self.documents, fail_at))
        return self.cursors[-1]


class FakeCursor:
    def __init__(self, documents: list[dict[str, Any]], fail_at: int | None) -> None:
        self.documents = documents
        self.fail_at = fail_at
        self.bound: Any = None
        self.position = 0

    def hint(self, spec: Any) -> FakeCursor:
        assert spec == [("_id", 1)]
        return self

    def min(self, spec: Any) -> FakeCursor:
        ((field, self.bound),) = spec
        self.documents = [doc for doc in self.documents if doc[field] >= self.bound]
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.position == self.fail_at:
            raise AutoReconnect("primary stepped down")
        if self.position >= len(self.documents):
            raise StopIteration
        self.position += 1
        return self.documents[self.position - 1]


class PartlyInserting:
    """``insert_many`` that inserts two documents, then fails with a retryable error."""

    name = "items"

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def insert_many(self, documents: list[dict[str, Any]], ordered: bool) -> None:
        self.calls.append([document["_id"] for document in documents])
        if len(self.calls) == 1:
            details = {"nInserted": 2, "writeErrors": [], "errorLabels": ["RetryableWriteError"]}
            raise BulkWriteError(details)


def test_a_retried_insert_sends_only_what_was_not_inserted() -> None:
    collection = PartlyInserting()
    store = MongoStore({"db": {"items": collection}}, "db", retry=no_sleep_policy())  # type: ignore[arg-type]

    assert store.insert_many("items", numbered(5)) == 5

    assert collection.calls == [[0, 1, 2, 3, 4], [2, 3, 4]]


def test_size_bytes_adds_up_the_shards_stats() -> None:
    stats = [{"storageStats": {"size": 100}}, {"storageStats": {"size": 23}}]
    collection = SimpleNamespace(aggregate=lambda pipeline: iter(stats))
    store = MongoStore({"db": {"items": collection}}, "db", retry=no_sleep_policy())  # type: ignore[arg-type]

    assert store.size_bytes("items") == 123


def test_a_non_transient_error_names_the_host_without_password() -> None:
    uri = "mongodb://admin:hunter2secret@db.example:27017/app"
    failing = SimpleNamespace(
        count_documents=raising(
            OperationFailure("bad query from mongodb://admin:hunter2secret@db.example:27017")
        )
    )
    store = MongoStore({"app": {"items": failing}}, "app", retry=no_sleep_policy(), uri=uri)  # type: ignore[arg-type]

    with pytest.raises(DbsyncError) as caught:
        store.count("items")

    assert "hunter2secret" not in str(caught.value)
    assert "admin:***@db.example:27017" in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (OperationFailure("Authentication failed.", code=18), DatabaseUnreachable, "log in"),
        (OperationFailure("requires authentication", code=13), DatabaseUnreachable, "PASSWORD@"),
        (
            BulkWriteError({"writeErrors": [{"code": 2, "errmsg": "bad op"}]}),
            DbsyncError,
            "bad op",
        ),
    ],
)
def test_translate_pymongo_error(error: Exception, kind: type, text: str) -> None:
    translated = translate_pymongo_error(error, "count", "mongodb://h")  # type: ignore[arg-type]

    assert type(translated) is kind
    assert text in str(translated)


def test_a_user_without_the_role_is_told_to_grant_it_not_to_report_a_bug() -> None:
    refused = OperationFailure("not authorized on shop to execute command", code=13)

    translated = translate_pymongo_error(refused, "count", "mongodb://u:***@h", ("pw",))

    assert type(translated) is DatabaseUnreachable  # exit 3: not a bug (1)
    assert "readWrite" in str(translated)


def test_a_duplicate_key_from_mongodb_becomes_invalid_input(mongo_store: MongoStore) -> None:
    mongo_store.insert_many("items", [{"_id": OID}])

    with pytest.raises(InvalidInput, match=re.escape(f'duplicate _id {{"$oid": "{OID}"}}')):
        mongo_store.insert_many("items", [{"_id": 1}, {"_id": 2}, {"_id": OID}])

    assert mongo_store.count("items") == 3


# --- Retry policy ----------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def policy(self, **overrides: Any) -> RetryPolicy:
        return RetryPolicy(sleep=self.sleep, clock=self.clock, **overrides)


def failing_then(result: Any, failures: list[Exception]) -> Callable[[], Any]:
    """An operation that raises each of ``failures`` in turn, then returns ``result``."""
    remaining = iter(failures)

    def operation() -> Any:
        failure = next(remaining, None)
        if failure is not None:
            raise failure
        return result

    return operation


def test_backoff_doubles_up_to_the_maximum_delay() -> None:
    policy = RetryPolicy(initial_delay=0.1, max_delay=1.0, rng=lambda: 1.0)

    delays = [backoff_delay(policy, attempt) for attempt in range(7)]

    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


@given(attempt=st.integers(0, 10_000), draw=st.floats(0.0, 1.0, exclude_max=True))
def test_jitter_stays_between_zero_and_the_exponential_ceiling(attempt: int, draw: float) -> None:
    policy = RetryPolicy(initial_delay=0.05, max_delay=3.0, rng=lambda: draw)

    delay = backoff_delay(policy, attempt)

    assert 0.0 <= delay <= min(3.0, 0.05 * 2.0 ** min(attempt, 62))


def test_an_operation_failing_twice_then_succeeding_is_retried() -> None:
    time = FakeTime()
    operation = failing_then("done", [AutoReconnect("a"), NotPrimaryError("b")])

    assert call_with_retries(time.policy(rng=lambda: 0.5), operation, "read", "h") == "done"

    assert time.sleeps == pytest.approx([0.05, 0.1])


def test_retries_stop_when_the_budget_is_spent_without_sleeping_past_it() -> None:
    time = FakeTime()
    policy = time.policy(budget_seconds=10.0, max_delay=4.0, rng=lambda: 1.0)
    calls = itertools.count()

    def always_failing() -> None:
        next(calls)
        raise ServerSelectionTimeoutError("db.example:27017: [Errno 111] Connection refused")

    with pytest.raises(DatabaseUnreachable) as caught:
        call_with_retries(policy, always_failing, "ping", "mongodb://u:***@db.example:27017")

    assert time.now == pytest.approx(10.0)
    assert sum(time.sleeps) <= 10.0
    assert time.sleeps[-1] < 4.0  # the last wait was cut to what was left of the budget
    assert next(calls) == len(time.sleeps) + 1
    message = str(caught.value)
    assert message.startswith("cannot reach mongodb://u:***@db.example:27017: ")
    assert "Connection refused" in message
    assert "is mongod running?" in message


def test_a_zero_budget_makes_a_single_attempt() -> None:
    time = FakeTime()
    operation = failing_then(None, [AutoReconnect("down")] * 5)

    with pytest.raises(DatabaseUnreachable):
        call_with_retries(time.policy(budget_seconds=0.0), operation, "ping", "h")

    assert time.sleeps == []


def test_a_non_transient_error_propagates_at_once() -> None:
    time = FakeTime()
    error = OperationFailure("unknown operator: $foo", code=2)

    with pytest.raises(OperationFailure) as caught:
        call_with_retries(time.policy(), failing_then(None, [error]), "find", "h")

    assert caught.value is error
    assert time.sleeps == []


def test_errors_other_than_the_drivers_propagate_at_once() -> None:
    time = FakeTime()

    with pytest.raises(KeyError):
        call_with_retries(time.policy(), failing_then(None, [KeyError("x")]), "find", "h")

    assert time.sleeps == []


def test_the_unreachable_message_holds_no_password() -> None:
    time = FakeTime()
    error = AutoReconnect("cannot connect to mongodb://root:Sup3rS3cret@h:1 (Sup3rS3cret)")

    with pytest.raises(DatabaseUnreachable) as caught:
        call_with_retries(
            time.policy(budget_seconds=1.0),
            failing_then(None, [error] * 1000),
            "ping",
            "mongodb://root:***@h:1",
            secrets=("Sup3rS3cret",),
        )

    assert "Sup3rS3cret" not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    "error",
    [
        AutoReconnect("x"),
        NotPrimaryError("x"),
        NetworkTimeout("x"),
        ServerSelectionTimeoutError("x"),
        ConnectionFailure("x"),
        OperationFailure("x", details={"errorLabels": ["TransientTransactionError"]}),
        OperationFailure("x", details={"errorLabels": ["RetryableWriteError"]}),
        BulkWriteError({"writeErrors": [], "errorLabels": ["RetryableWriteError"]}),
    ],
    ids=repr,
)
def test_transient_errors(error: Exception) -> None:
    assert is_transient(error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        OperationFailure("x", code=2),
        DuplicateKeyError("E11000", code=11000),
        BulkWriteError({"writeErrors": [{"code": 11000}]}),
    ],
    ids=repr,
)
def test_non_transient_errors(error: Exception) -> None:
    assert not is_transient(error)  # type: ignore[arg-type]


def test_a_retry_policy_refuses_negative_values() -> None:
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(budget_seconds=-1)


# --- open_store ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["", "localhost:27017", "postgres://u:pw@h/db", "embedded:/x", "http://h", "MONGO://h"],
)
def test_open_store_refuses_unknown_schemes(uri: str) -> None:
    with pytest.raises(UsageError) as caught:
        open_store(uri, "db")

    assert "unsupported database URI" in caught.value.message
    assert caught.value.hint is not None
    for scheme in ("mongodb://", "mongodb+srv://", "embedded://"):
        assert scheme in caught.value.hint
    assert "pw" not in str(caught.value)


def test_open_store_refuses_a_relative_embedded_path() -> None:
    with pytest.raises(UsageError, match="not absolute"):
        open_store("embedded://relative/dir", "db")


def test_open_store_creates_the_embedded_directory(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"

    store = open_store(f"embedded://{directory}", "db")

    assert isinstance(store, EmbeddedStore)
    assert directory.is_dir()
    store.insert_many("items", [{"_id": 1}])
    assert store.count("items") == 1


def test_open_store_gives_a_mongo_store_without_connecting() -> None:
    store = open_store("mongodb://127.0.0.1:1/", "db")

    assert isinstance(store, MongoStore)
    store.close()


def test_open_store_refuses_an_invalid_mongodb_uri_without_echoing_the_password() -> None:
    with pytest.raises(UsageError) as caught:
        open_store("mongodb://user:topsecret@host:notaport/", "db")

    assert "topsecret" not in str(caught.value)
    assert "user:***@host" in str(caught.value)


def test_an_unreachable_server_is_reported_without_password() -> None:
    uri = "mongodb://dbsync:n0tTheP4ss@127.0.0.1:1/?authSource=admin"
    store = open_store(uri, "db", retry=RetryPolicy(budget_seconds=0))

    with pytest.raises(DatabaseUnreachable) as caught:
        store.ping()

    assert "n0tTheP4ss" not in str(caught.value)
    assert "cannot reach mongodb://dbsync:***@127.0.0.1:1/" in str(caught.value)
    store.close()


@pytest.mark.parametrize(
    "name", ["", "a/b", "a\\b", "a.b", "a b", 'a"b', "a$b", "a\x00b", "x" * 64, "é" * 32]
)
def test_database_names_mongodb_refuses_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError, match="database name"):
        validate_database_name(name)
    with pytest.raises(UsageError):
        open_store("mongodb://h/", name)


@pytest.mark.parametrize("name", ["telegram", "x" * 63, "my-db_2", "données"])
def test_database_names_mongodb_accepts_open_that_database(name: str) -> None:
    assert validate_database_name(name) is None
    client = mongomock.MongoClient()
    store = MongoStore(client, name, retry=no_sleep_policy())
    store.insert_many("items", [{"_id": 1}])
    assert client.list_database_names() == [name]  # used as given: not cut, not escaped
    assert list(client[name]["items"].find()) == [{"_id": 1}]
    store.close()


# --- Redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "redacted"),
    [
        ("mongodb://user:pass@h:1/db?x=y", "mongodb://user:***@h:1/db?x=y"),
        (
            "mongodb+srv://user:p%40ss@cluster.example.net/",
            "mongodb+srv://user:***@cluster.example.net/",
        ),
        ("mongodb://u:pw@h1:1,h2:2/?replicaSet=rs", "mongodb://u:***@h1:1,h2:2/?replicaSet=rs"),
        ("mongodb://u:p@ss@h/db", "mongodb://u:***@h/db"),
        ("mongodb://u:pa/ss@h/db?x=y", "mongodb://u:***@h/db?x=y"),
        ("mongodb://u:pa?ss@h/db", "mongodb://u:***@h/db"),
        ("mongodb://u:@h/", "mongodb://u:***@h/"),
        ("mongodb://h:1/db?x=y", "mongodb://h:1/db?x=y"),
        ("mongodb://h/db?appName=me@home", "mongodb://h/db?appName=me@home"),
        (
            "mongodb://user@h/?authMechanism=MONGODB-X509",
            "mongodb://user@h/?authMechanism=MONGODB-X509",
        ),
        ("mongodb://localhost", "mongodb://localhost"),
        ("embedded:///srv/store", "embedded:///srv/store"),
        ("not a uri", "not a uri"),
    ],
)
def test_redact_uri(uri: str, redacted: str) -> None:
    assert redact_uri(uri) == redacted


@given(password=st.text(min_size=1))
def test_redact_uri_hides_any_percent_encoded_password(password: str) -> None:
    uri = f"mongodb://user:{quote(password, safe='')}@db.example:27017/app?w=1"

    assert redact_uri(uri) == "mongodb://user:***@db.example:27017/app?w=1"


def test_uri_secrets_are_the_password_as_written_and_decoded() -> None:
    assert uri_secrets("mongodb+srv://user:p%40ss@cluster.example.net/") == ("p%40ss", "p@ss")
    assert uri_secrets("mongodb://h/") == ()
    assert uri_secrets("mongodb://user@h/") == ()


def test_scrub_secrets_redacts_uris_and_literal_passwords() -> None:
    text = "failed: mongodb://u:abc123xyz@h:1/db; auth abc123xyz rejected"

    assert (
        scrub_secrets(text, ("abc123xyz",)) == "failed: mongodb://u:***@h:1/db; auth *** rejected"
    )


# --- Small pure helpers ----------------------------------------------------------------------


def test_id_key_follows_mongodb_equality() -> None:
    assert id_key(5) == id_key(Int64(5)) == id_key(5.0)
    assert id_key(True) != id_key(1)
    assert id_key("5") != id_key(5)
    assert id_key(Code("x")) != id_key("x")
    assert id_key(OID) == id_key(ObjectId(str(OID)))
    assert id_key(OID) != id_key(str(OID))
    assert id_key(float("nan")) == id_key(float("nan"))
    assert id_key({"a": 1, "b": 2}) != id_key({"b": 2, "a": 1})


def test_in_requested_order() -> None:
    documents = [{"_id": 1}, {"_id": 2}, {"_id": 3}]

    assert in_requested_order([3, 9, 1, 3], documents) == [{"_id": 3}, {"_id": 1}]


def test_chunks_never_yield_an_empty_list() -> None:
    assert list(chunks(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(chunks([], 2)) == []


def test_raw_documents_are_the_stored_bson_of_every_document(store):
    documents = [{"_id": index, "n": bson.Int64(index), "s": "x" * index} for index in range(5)]
    store.insert_many("raw", [dict(document) for document in documents])
    raw = list(store.iter_raw_documents("raw", batch_size=2))
    decoded = sorted((decode_raw(item) for item in raw), key=lambda document: document["_id"])
    assert decoded == documents
    assert sorted(raw) == sorted(bson.encode(document) for document in documents)
    assert list(store.iter_raw_documents("absent")) == []
