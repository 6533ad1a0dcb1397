"""MongoDB's official BSON corpus through every codec path, and through the CLI on two assets
(embedded stores, and two databases on a MongoDB server).

The corpus (tests/data/bson-corpus, see its README) is what every MongoDB driver is tested with.
For each valid case: raw BSON → document → BSON gives the same bytes; the document's canonical
Extended JSON is the corpus's; the corpus's Extended JSON (canonical, relaxed, degenerate) reads
back to the same BSON; a snapshot line reads back to the same BSON and re-encodes to itself.
Every parse error is refused by import with nothing written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bson
import montydb
import orjson
import pytest
from bson.codec_options import DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument
from pymongo.errors import OperationFailure

from dbsync.config import Config, load_config
from dbsync.core import extjson, snapshot
from dbsync.edges.embedded import EmbeddedStore
from dbsync.edges.store import decode_raw, id_key
from dbsync.errors import InvalidInput
from dbsync.runs.import_file import ImportMode, import_file
from tests.cli_helpers import Project, new_project
from tests.corpus import ParseError, Valid, parse_error_cases, valid_cases
from tests.mongo_servers import MongoServer

VALID = valid_cases()
PARSE_ERRORS = parse_error_cases()


def test_the_corpus_is_all_there():
    assert len(VALID) == 728 and len(PARSE_ERRORS) == 180
    assert sum(case.lossy for case in VALID) == 10  # NaN payloads: Extended JSON cannot say them


def _comparable(value: Any) -> Any:
    """Parsed Extended JSON with doubles as numbers: the corpus writes ``1.2345678921232E+18``
    where Python writes ``1.2345678921232e+18`` (the spec lets parsers compare values)."""
    if isinstance(value, dict):
        if list(value) == ["$numberDouble"] and value["$numberDouble"] != "NaN":
            return ("double", float(value["$numberDouble"]))
        return [(key, _comparable(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    return value


def same_extjson(left: bytes | str, right: bytes | str) -> bool:
    return bool(_comparable(orjson.loads(left)) == _comparable(orjson.loads(right)))


def with_id(document: dict[str, Any], number: int) -> dict[str, Any]:
    """A corpus document as a store holds it: ``_id`` first (its own, or ``number``)."""
    return document if "_id" in document else {"_id": number, **document}


def without_id(document: dict[str, Any], case: Valid) -> dict[str, Any]:
    if "_id" in decode_raw(case.bson):
        return document
    return {key: value for key, value in document.items() if key != "_id"}


@pytest.mark.parametrize("case", VALID, ids=lambda case: case.name)
def test_valid_case_round_trips_through_every_codec_path(case: Valid):
    document = decode_raw(case.bson)
    assert bson.encode(document) == case.stored
    if not case.deprecated:  # pymongo reads a symbol as a string: its Extended JSON differs
        assert same_extjson(extjson.encode_canonical(document), case.canonical)
    if not case.lossy:
        assert bson.encode(extjson.from_extended_json(orjson.loads(case.canonical))) == case.stored
    if case.degenerate_bson is not None:
        assert bson.encode(decode_raw(case.degenerate_bson)) == case.stored
    if case.degenerate is not None and not case.lossy:
        degenerate = extjson.from_extended_json(orjson.loads(case.degenerate))
        assert bson.encode(degenerate) == case.stored
    if case.relaxed is not None:
        relaxed = extjson.from_extended_json(orjson.loads(case.relaxed))
        relaxed_again = decode_raw(bson.encode(relaxed))
        assert extjson.encode_canonical(relaxed_again) == extjson.encode_canonical(relaxed)

    _, line = snapshot.encode_record(with_id(document, 1), ["_id"])
    body = snapshot.line_body(line)
    read_back = extjson.from_json_value(orjson.loads(body))
    assert extjson.encode_document(read_back) == body
    if not case.lossy:
        assert bson.encode(without_id(read_back, case)) == case.stored


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    opened = EmbeddedStore(tmp_path_factory.mktemp("corpus-store"), "corpus")
    yield opened
    opened.close()


def corpus_config(folder: Path) -> Config:
    (folder / "dbsync.toml").write_text('database = "corpus"\n')
    return load_config(cwd=folder, environ={})


@pytest.mark.parametrize("case", PARSE_ERRORS, ids=lambda case: case.name)
def test_parse_error_is_refused_by_import_with_nothing_written(
    case: ParseError, store: EmbeddedStore, tmp_path: Path
):
    source = tmp_path / "input.json"
    source.write_text('{"_id": 1, "fine": true}\n' + case.text.replace("\n", " ") + "\n")
    for mode in ImportMode:
        with pytest.raises(InvalidInput) as caught:
            import_file(corpus_config(tmp_path), store, source, "bad", mode)
        assert f"{source}:2:" in caught.value.message
    assert store.count("bad") == 0


def _import_lines(cases: list[Valid]) -> str:
    lines = []
    for number, case in enumerate(cases):
        document = json.loads(case.canonical)  # the corpus's own text, in its field order
        if "_id" not in document:
            document = {"_id": {"$numberInt": str(number)}, **document}
        lines.append(json.dumps(document))
    return "\n".join(lines) + "\n"


def test_every_valid_case_syncs_through_the_cli_to_a_second_asset(tmp_path: Path):
    """import, export, verify, dump on one asset; merge, dump, export on another: the same.

    Deprecated types go to their own collection (the two "All BSON types" cases share an _id).
    """
    a, b = new_project(tmp_path / "a"), new_project(tmp_path / "b")
    groups = {
        "corpus": [case for case in VALID if not case.deprecated],
        "deprecated": [case for case in VALID if case.deprecated],
    }
    for collection, cases in groups.items():
        source = tmp_path / f"{collection}.json"
        source.write_text(_import_lines(cases))
        imported = a.ok("import", str(source), "-c", collection)
        warned = "Symbol became a string" in imported.output
        assert warned == (collection == "deprecated"), imported.output
    a.ok("export")
    a.ok("verify", "database_backup")
    b.ok("merge", str(a.root / "database_backup"))
    b.ok("export")
    for collection, cases in groups.items():
        dumped = a.ok("dump", collection).out.splitlines()
        assert len(dumped) == len(cases)
        assert b.ok("dump", collection).out.splitlines() == dumped
        assert b.snapshot(collection) == a.snapshot(collection)
        _assert_dump_holds(dumped, cases)


def _assert_dump_holds(dumped: list[str], cases: list[Valid]) -> None:
    by_id = {}
    for line in dumped:
        document = extjson.decode_document(line)
        by_id[document["_id"]] = document
    for number, case in enumerate(cases):
        if case.lossy:
            continue
        original = decode_raw(case.bson)
        document = by_id[original.get("_id", number)]
        assert bson.encode(without_id(document, case)) == case.stored, case.name


def test_a_parse_error_in_a_file_fails_the_cli_import_with_exit_4_and_nothing_written(
    tmp_path: Path,
):
    project = new_project(tmp_path / "a")
    bad = tmp_path / "bad.json"
    bad.write_text('{"_id": 1}\n{"_id": 2, "a": {"$oid": "56e1fc72e0c917e9c4714161", "x": 1}}\n')
    result = project.run("import", str(bad), "-c", "things")
    assert result.code == 4, result.output
    assert "a type wrapper takes no other field" in result.output
    assert "things" not in project.ok("stats").output


def _store_of(project: Project) -> EmbeddedStore:
    uri, database = load_config(cwd=project.root, environ={}).require_database()
    return EmbeddedStore(Path(uri.removeprefix("embedded://")), database)


BOT_DOCUMENTS = [
    {"_id": 1, "payload": {"$numberLong": "7"}},
    {"_id": 2, "ref": {"$oid": "65a1b2c3d4e5f60718293a4b"}},
    {"_id": 3, "query": {"name": {"$regex": "^a", "$options": "i"}}},
    {"_id": 4, "raw": {"$binary": {"base64": "AQI=", "subType": "00"}}, "at": {"$date": 5}},
    {"_id": 5, "escape": {"$document": {"a": 1}}, "in": {"$in": [{"$type": "string"}]}},
    {"_id": 6, "when": DatetimeMS(253402300800000), "before": DatetimeMS(-62135596800001)},
    {"_id": 7, "dbref_like": {"$ref": 5, "$id": 1}, "dotted": {"a.b": 1}},
]


def test_dollar_named_fields_and_far_dates_sync_between_two_assets_and_compare_identical(
    tmp_path: Path,
):
    """What a bot stores through the store's own client exports, merges and reads back intact."""
    a, b = new_project(tmp_path / "a"), new_project(tmp_path / "b")
    store = _store_of(a)
    store.insert_many("bot", [dict(document) for document in BOT_DOCUMENTS])
    store.close()
    a.ok("export")
    a.ok("verify", "database_backup")
    b.ok("merge", str(a.root / "database_backup"))
    assert b.ok("dump", "bot").out == a.ok("dump", "bot").out
    b.ok("export")
    assert b.snapshot("bot") == a.snapshot("bot")
    received = _store_of(b)
    documents = sorted(received.iter_documents("bot"), key=lambda document: document["_id"])
    received.close()
    assert [bson.encode(document) for document in documents] == [
        bson.encode(document) for document in BOT_DOCUMENTS
    ]
    assert b"$document" in a.snapshot("bot")  # the escape, documented in docs/snapshot-format.md


def test_deprecated_types_a_bot_stored_are_named_by_export_never_silently(tmp_path: Path):
    """Raw BSON with a Symbol, an Undefined and a DBPointer (the corpus's own bytes)."""
    project = new_project(tmp_path / "a")
    _store_of(project).close()  # creates the store as dbsync configures it (SQLite, BSON)
    uri, database = load_config(cwd=project.root, environ={}).require_database()
    client = montydb.MontyClient(uri.removeprefix("embedded://"))  # the store's own client
    deprecated = [case for case in VALID if case.deprecated]
    stored = [RawBSONDocument(_raw_with_id(case.bson, n)) for n, case in enumerate(deprecated)]
    client[database]["old"].insert_many(stored)
    client.close()
    exported = project.ok("export")
    assert "old: 13 value(s) of BSON's deprecated types" in exported.output, exported.output
    assert "_id 0, field a: DBPointer became a DBRef" in exported.output
    project.ok("verify", "database_backup")


def _raw_with_id(raw: bytes, number: int) -> bytes:
    """The corpus document's BSON with ``_id: number`` first, unless it has an _id already."""
    if "_id" in decode_raw(raw):
        return raw
    body = b"\x10_id\x00" + number.to_bytes(4, "little") + raw[4:]
    return (len(body) + 4).to_bytes(4, "little") + body


# ---------------------------------------------------------------- on MongoDB: two databases

BSON_DATE_RANGE = (-62135596800000, 253402300799999)  # 0001-01-01 to 9999-12-31, in ms
FAR_DATE = (
    "SecantusDB refuses a BSON date outside years 1-9999 (it decodes with Python datetimes); "
    "mongod stores any 64-bit count of milliseconds since the epoch (MongoDB manual, BSON "
    "Types: Date), and dbsync carries it (the embedded store's run above)"
)
LOSSY = "Extended JSON cannot say this value's exact bits (the corpus marks the case lossy)"


@dataclass
class Arrival:
    """One corpus case on MongoDB: the BSON asset a's server stored (None: it refused the
    document, ``refusal`` says why) and the BSON asset b's database holds after the merge."""

    expected: bytes
    stored: bytes | None
    received: bytes | None
    refusal: str = ""


def _far_dates(raw: bytes) -> bool:
    """Whether the document holds a date outside years 1-9999, at any depth."""
    options = bson.CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)

    def far(value: Any) -> bool:
        if isinstance(value, DatetimeMS):
            return not BSON_DATE_RANGE[0] <= int(value) <= BSON_DATE_RANGE[1]
        if isinstance(value, dict):
            return any(far(item) for item in value.values())
        if isinstance(value, list):
            return any(far(item) for item in value)
        return False

    return far(bson.decode(raw, codec_options=options))


def _raw_by_id(server: MongoServer, database: str, collection: str) -> dict[Any, bytes]:
    with server.client() as client:
        raw = client[database][collection].with_options(
            codec_options=bson.CodecOptions(document_class=RawBSONDocument)
        )
        return {id_key(document["_id"]): bytes(document.raw) for document in raw.find()}


@pytest.fixture(scope="module")
def mongo_arrivals(
    replica_set: MongoServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[Valid, Arrival]:
    """Every valid case inserted as raw BSON into asset a's database on a MongoDB server, a
    ``dbsync export`` there, a ``dbsync merge`` of it into asset b's database on the same
    server (the real CLI both times); what each case became."""
    folder = tmp_path_factory.mktemp("corpus-mongodb")
    a, b = Project(folder / "a"), Project(folder / "b")
    databases = {"a": replica_set.new_database(), "b": replica_set.new_database()}
    for asset in (a, b):
        asset.root.mkdir()
        name = asset.root.name
        asset.ok("init", "--uri", replica_set.uri, "--database", databases[name], "--asset", name)
    groups = {
        "corpus": [case for case in VALID if not case.deprecated],
        "deprecated": [case for case in VALID if case.deprecated],
    }
    inserted: dict[Valid, tuple[str, bytes, str]] = {}
    with replica_set.client() as client:
        for collection, cases in groups.items():
            target = client[databases["a"]][collection]
            for number, case in enumerate(cases):
                try:
                    target.insert_one(RawBSONDocument(_raw_with_id(case.bson, number)))
                    refusal = ""
                except OperationFailure as error:
                    refusal = str(error.details.get("errmsg") if error.details else error)
                expected = _raw_with_id(case.stored, number)
                inserted[case] = (collection, expected, refusal)
    exported = a.ok("export").output
    a.ok("verify", "database_backup")
    b.ok("merge", str(a.root / "database_backup"))
    arrivals = {}
    for collection in groups:
        stored = _raw_by_id(replica_set, databases["a"], collection)
        received = _raw_by_id(replica_set, databases["b"], collection)
        for case, (where, expected, refusal) in inserted.items():
            if where == collection:
                key = id_key(decode_raw(expected)["_id"])
                arrivals[case] = Arrival(
                    expected, stored.get(key), received.get(key), refusal=refusal
                )
    deprecated_kept = any(
        arrivals[case].stored == _raw_with_id(case.bson, number)
        for number, case in enumerate(groups["deprecated"])
    )
    assert ("value(s) of BSON's deprecated types" in exported) == deprecated_kept, exported
    return arrivals


@pytest.mark.parametrize("case", VALID, ids=lambda case: case.name)
def test_valid_case_arrives_byte_exact_in_another_mongodb_database(
    case: Valid, mongo_arrivals: dict[Valid, Arrival]
):
    """Raw BSON compared: what b's database holds is the very BSON a's held. Deprecated types
    arrive as what pymongo reads them as (a string, null, a DBRef): mongod keeps them as
    given and dbsync's export names each in a warning; SecantusDB converts them when it
    stores them, so there the export has nothing to name."""
    arrival = mongo_arrivals[case]
    if arrival.stored is None:
        assert _far_dates(case.bson), f"the server refused a document: {arrival.refusal}"
        assert "out of range" in arrival.refusal, arrival.refusal
        pytest.skip(FAR_DATE)
    if case.lossy:
        pytest.skip(LOSSY)
    if not case.deprecated:
        assert arrival.stored == arrival.expected  # the server stored the corpus's bytes
    assert arrival.received == arrival.expected
