"""Why the embedded store is montydb: BSON fidelity, accepted ``_id`` types, and speed.

Compares montydb (SQLite storage, ``use_bson=True``) with mongita (``MongitaClientDisk``) on
what ``dbsync.edges.embedded.EmbeddedStore`` needs, and times the montydb operations ``apply``
could be built from, so that the choice in ``EmbeddedStore.apply`` can be checked on any machine.

mongita is not a dependency of dbsync: install it only to run this comparison
(``pip install mongita``); without it its columns are skipped.

Run from the repository root: ``python bench/embedded_store_choice.py [--documents N]``.
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import montydb
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.dbref import DBRef

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dbsync.edges.embedded import EmbeddedStore  # noqa: E402
from dbsync.edges.store import id_key  # noqa: E402

Document = dict[str, Any]

TYPE_SAMPLES: dict[str, Any] = {
    "ObjectId": ObjectId("65a1b2c3d4e5f60718293a4b"),
    "Int32": 42,
    "Int64 > 2^53": Int64(2**53 + 1),
    "Double": 1.5,
    "Double NaN": float("nan"),
    "Double +inf": float("inf"),
    "Double -inf": float("-inf"),
    "Double -0.0": -0.0,
    "Decimal128": Decimal128("1.000000000000000000000000000000001"),
    "Date before 1970": datetime.datetime(1901, 12, 13, 20, 45, 52, 123000),
    "Date after 2038": datetime.datetime(2100, 12, 31, 23, 59, 59, 999000),
    "Binary subtype 0": b"\x00\x01\xff",
    "Binary UUID (4)": Binary(uuid.UUID(int=0x12345678123456781234567812345678).bytes, 4),
    "Binary 0x80": Binary(b"custom", 0x80),
    "Regex with flags": Regex("^a.*b$", "imsux"),
    "Timestamp": Timestamp(1700000000, 7),
    "MinKey": MinKey(),
    "MaxKey": MaxKey(),
    "Code": Code("function () { return 1; }"),
    "Code with scope": Code("return x;", {"x": 1}),
    "DBRef": DBRef("other", 1, "otherdb"),
    "nested document/array": {"a": [1, {"b": [[], {}]}], "z": None},
    "unicode and NUL": "héllo ✓ 日本語 🎉 a\x00b",
    "field order": {"z": 1, "a": 2, "m": 3},
    "dotted field name": {"example.com": 1},
}

ID_SAMPLES: dict[str, Any] = {
    "int": 7,
    "Int64": Int64(2**60),
    "str": "key",
    "ObjectId": ObjectId("65a1b2c3d4e5f60718293a4b"),
    "document": {"user": 1, "day": "2024-01-01"},
}


def open_montydb(directory: Path) -> Any:
    montydb.set_storage(str(directory), storage="sqlite", use_bson=True)
    return montydb.MontyClient(str(directory))


def open_mongita(directory: Path) -> Any | None:
    try:
        from mongita import MongitaClientDisk
    except ImportError:
        return None
    return MongitaClientDisk(str(directory))


def survives(collection: Any, number: int, value: Any) -> str:
    """Whether ``value`` comes back byte-identical from a round trip through ``collection``."""
    original = {"_id": f"doc-{number}", "value": value}
    try:
        collection.insert_one(dict(original))
        back = collection.find_one({"_id": original["_id"]})
    except Exception as error:  # any refusal is a result here, not a crash
        return f"refused ({type(error).__name__})"
    return "yes" if bson.encode(back) == bson.encode(original) else "changed"


def accepts_id(collection: Any, value: Any) -> str:
    try:
        collection.insert_one({"_id": value, "v": 1})
        found = [doc for doc in collection.find({}) if id_key(doc["_id"]) == id_key(value)]
    except Exception as error:
        return f"refused ({type(error).__name__})"
    return "yes" if len(found) == 1 else "lost"


def make_documents(count: int) -> list[Document]:
    """Documents shaped like dbsync's users' records: a few scalars, a date, a sub-document."""
    start = datetime.datetime(2024, 1, 1)
    return [
        {
            "_id": f"id-{number:06d}",
            "user_id": number % 500,
            "username": f"user{number}",
            "timestamp": start + datetime.timedelta(seconds=number),
            "profit_usd": number * 0.5,
            "tags": ["a", "b"],
            "meta": {"source": "bench", "n": number},
        }
        for number in range(count)
    ]


def seconds(operation: Callable[[], object]) -> float:
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def time_operations(client: Any, documents: list[Document], sample: list[str]) -> dict[str, str]:
    """Seconds per operation on a collection of ``len(documents)``; ``sample`` ids to touch."""
    database = client["bench"]
    collection = database["timed"]
    wanted = set(sample)
    figures = {
        "insert_many (all)": seconds(lambda: collection.insert_many([dict(d) for d in documents])),
        "full scan find({})": seconds(lambda: list(collection.find({}))),
        "scan sorted by _id": seconds(lambda: list(collection.find({}).sort("_id", 1))),
        f"find $in {len(sample)} ids": seconds(
            lambda: list(collection.find({"_id": {"$in": sample}}))
        ),
        f"scan + filter {len(sample)} ids in Python": seconds(
            lambda: [doc for doc in collection.find({}) if doc["_id"] in wanted]
        ),
    }
    few = sample[:5]
    figures["delete_one by _id (each)"] = seconds(
        lambda: [collection.delete_one({"_id": value}) for value in few]
    ) / len(few)
    replacements = [{"_id": value, "replaced": True} for value in few]
    figures["replace_one upsert by _id (each)"] = seconds(
        lambda: [collection.replace_one({"_id": d["_id"]}, d, upsert=True) for d in replacements]
    ) / len(few)
    fresh = [{"_id": f"fresh-{number}"} for number in range(len(sample))]
    figures[f"insert_many {len(sample)} into the full collection"] = seconds(
        lambda: collection.insert_many(fresh)
    )
    figures[f"delete_many $in {len(sample)} ids"] = seconds(
        lambda: collection.delete_many({"_id": {"$in": sample}})
    )
    figures["drop + insert_many (all)"] = seconds(
        lambda: (database.drop_collection("timed"), collection.insert_many(documents))
    )
    return {name: f"{value:.3f}" for name, value in figures.items()}


def time_embedded_apply(directory: Path, documents: list[Document], sample: list[str]) -> str:
    """``EmbeddedStore.apply`` replacing, deleting and inserting ``len(sample)`` each."""
    store = EmbeddedStore(directory, "bench")
    store.insert_many("items", [dict(document) for document in documents])
    half = len(sample) // 2
    upserts = [{"_id": value, "replaced": True} for value in sample[:half]]
    upserts += [{"_id": f"new-{number}"} for number in range(half)]
    elapsed = seconds(lambda: store.apply("items", upserts, delete_ids=sample[half:]))
    store.close()
    return f"{elapsed:.3f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fidelity_table(clients: dict[str, Any]) -> str:
    rows = []
    for number, (name, value) in enumerate(TYPE_SAMPLES.items()):
        cells = [survives(client["bench"]["types"], number, value) for client in clients.values()]
        rows.append([name, *cells])
    return markdown_table(["BSON value", *clients], rows)


def id_table(clients: dict[str, Any]) -> str:
    rows = []
    for name, value in ID_SAMPLES.items():
        rows.append([name, *(accepts_id(c["bench"]["ids"], value) for c in clients.values())])
    return markdown_table(["_id type", *clients], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--touched", type=int, default=100, help="ids read/deleted in bulk")
    arguments = parser.parse_args()
    documents = make_documents(arguments.documents)
    sample = random.Random(1).sample([d["_id"] for d in documents], arguments.touched)

    with tempfile.TemporaryDirectory(prefix="dbsync-bench-") as scratch:
        root = Path(scratch)
        clients = {"montydb (sqlite, bson)": open_montydb(root / "monty")}
        mongita = open_mongita(root / "mongita")
        if mongita is None:
            print("mongita is not installed: its columns are skipped (pip install mongita)\n")
        else:
            clients["mongita (disk)"] = mongita

        print("## BSON fidelity (byte-identical round trip)\n")
        print(fidelity_table(clients), end="\n\n")
        print(
            "montydb's insert refuses '.' and leading '$' in field names; EmbeddedStore stores"
            " those documents through replace_one(upsert=True), and its tests check them.\n"
        )
        print("## _id types accepted\n")
        print(id_table(clients), end="\n\n")
        print(f"## Seconds on {len(documents):,} documents ({len(sample)} ids touched)\n")
        timings = {name: time_operations(c, documents, sample) for name, c in clients.items()}
        operations = list(next(iter(timings.values())))
        rows = [[op, *(timings[name][op] for name in clients)] for op in operations]
        print(markdown_table(["operation", *clients], rows), end="\n\n")
        applied = time_embedded_apply(root / "embedded", documents, sample)
        half = len(sample) // 2
        print(
            f"EmbeddedStore.apply ({half} replaced, {len(sample) - half} deleted, "
            f"{half} inserted): {applied} s"
        )


if __name__ == "__main__":
    main()
