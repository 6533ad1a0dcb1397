import datetime
import gc
import io
import json
import tracemalloc
from pathlib import Path

import bson
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex
from bson.datetime_ms import DatetimeMS
from bson.timestamp import Timestamp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dbsync.core import extjson, ordering, snapshot
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header
from dbsync.edges import snapshot_files
from dbsync.edges.store import decode_raw
from tests.strategies import documents, dollar_documents

RULES = Rules(key=("_id",))


def lines_for(docs, rules=RULES):
    pairs = (snapshot.encode_record(doc, rules.key) for doc in docs)
    return [
        line
        for _, line in snapshot_files.sorted_lines(
            pairs, lambda ln: snapshot.line_sort_key(ln, rules.key)
        )
    ]


def write(path: Path, docs, collection="pnl", rules=RULES) -> Path:
    snapshot_files.write_snapshot(path, Header(collection, rules), lines_for(docs, rules))
    return path


def problems(path: Path) -> list[str]:
    return [f"{p.line}: {p.message}" for p in snapshot_files.verify_file(path).problems]


def forge(path: Path, edit) -> None:
    """Rewrite a snapshot with recomputed hashes and trailer, as a deliberate forger would."""
    raw = path.read_bytes().splitlines(keepends=True)
    header, records = raw[0], raw[1:-1]
    records = edit(records)
    out = io.BytesIO()
    digest = snapshot.Digest(header)
    out.write(header)
    for line in records:
        body = snapshot.line_body(line) if line.startswith(b'{"h"') else line.rstrip(b"\n")
        forged = snapshot.record_line(body)
        digest.add(forged)
        out.write(forged)
    out.write(digest.trailer())
    path.write_bytes(out.getvalue())


DOCS = [{"_id": i, "user": f"u{i}", "profit": i * 1.5} for i in range(5)]


def test_a_written_snapshot_has_header_sorted_records_and_trailer(tmp_path):
    path = write(tmp_path / "pnl.jsonl", reversed(DOCS))
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[0]) == {
        "format": "dbsync-snapshot",
        "version": 1,
        "collection": "pnl",
        "key": ["_id"],
        "timestamp": None,
        "preserve": [],
    }
    assert [json.loads(line)["d"]["_id"] for line in lines[1:-1]] == [0, 1, 2, 3, 4]
    assert json.loads(lines[-1])["count"] == 5
    assert snapshot_files.verify_file(path).ok


def test_same_data_in_any_order_gives_the_same_bytes(tmp_path):
    first = write(tmp_path / "a.jsonl", DOCS).read_bytes()
    second = write(tmp_path / "b.jsonl", list(reversed(DOCS))).read_bytes()
    assert first == second


def test_nothing_time_or_machine_dependent_inside(tmp_path):
    text = write(tmp_path / "a.jsonl", DOCS).read_text()
    assert str(datetime.date.today().year) not in text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-1000, 1000), unique=True, max_size=60), st.integers(2, 7))
def test_spilling_to_disk_sorts_exactly_like_memory(keys, chunk):
    pairs = [snapshot.encode_record({"_id": k}, ("_id",)) for k in keys]
    key_of = lambda line: snapshot.line_sort_key(line, ("_id",))  # noqa: E731
    in_memory = [line for _, line in snapshot_files.sorted_lines(pairs, key_of)]
    spilled = [line for _, line in snapshot_files.sorted_lines(pairs, key_of, chunk_size=chunk)]
    assert spilled == in_memory
    assert [snapshot.line_document(line)["_id"] for line in spilled] == sorted(keys)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-50, 50), st.text(max_size=30)), max_size=80),
    st.integers(0, 2_000),
    st.integers(2, 4),
)
def test_a_byte_bound_spills_and_sorts_exactly_like_memory(records, bound, fan_in):
    """Past ``SORT_CHUNK_BYTES`` the chunk spills (merged ``SORT_FAN_IN`` at a time); equal
    keys keep the order they came in, as the in-memory sort keeps them."""
    fields = ("k",)
    pairs = [
        snapshot.encode_record({"_id": i, "k": k, "v": v}, fields)
        for i, (k, v) in enumerate(records)
    ]
    key_of = lambda line: snapshot.line_sort_key(line, fields)  # noqa: E731
    in_memory = [line for _, line in snapshot_files.sorted_lines(pairs, key_of)]
    spills = []
    spill = snapshot_files._spill
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshot_files, "SORT_CHUNK_BYTES", bound)
        patch.setattr(snapshot_files, "SORT_FAN_IN", fan_in)
        patch.setattr(
            snapshot_files, "_spill", lambda chunk: spills.append(len(chunk)) or spill(chunk)
        )
        spilled = [line for _, line in snapshot_files.sorted_lines(pairs, key_of)]
    assert spilled == in_memory
    assert in_memory == [line for _, line in sorted(pairs, key=lambda pair: pair[0])]
    held, expected = 0, 0  # the chunks a byte bound cuts
    for pair in pairs:
        held += snapshot_files._pair_bytes(pair)
        if held >= bound:
            expected, held = expected + 1, 0
    assert len(spills) == (expected + 1 if expected else 0)


def test_a_chunk_is_bounded_by_bytes_not_records():
    pairs = [snapshot.encode_record({"_id": i, "v": "x" * 1_000}, ("_id",)) for i in range(40)]
    key_of = lambda line: snapshot.line_sort_key(line, ("_id",))  # noqa: E731
    spills = []
    spill = snapshot_files._spill
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshot_files, "SORT_CHUNK_BYTES", 10_000)
        patch.setattr(
            snapshot_files, "_spill", lambda chunk: spills.append(len(chunk)) or spill(chunk)
        )
        lines = [line for _, line in snapshot_files.sorted_lines(reversed(pairs), key_of)]
    assert lines == [line for _, line in pairs]
    assert len(spills) > 1 and max(spills) < 10  # ~1.2 KB a record: under 10 in 10 KB


def test_key_order_is_total_across_types_in_mongodb_type_order():
    ordered = [
        MinKey(),
        None,
        float("nan"),
        float("-inf"),
        -5,
        1.5,
        Int64(2),
        Decimal128("2.5"),
        float("inf"),
        "",
        "a",
        "b",
        {"a": 1},
        [1, 2],
        b"\x01",
        Binary(b"\x01\x02", 0x80),
        ObjectId("000000000000000000000001"),
        ObjectId("ffffffffffffffffffffffff"),
        False,
        True,
        datetime.datetime(1960, 1, 1),
        datetime.datetime(2030, 1, 1),
        Timestamp(1, 1),
        Regex("a", "i"),
        Code("x"),
        MaxKey(),
    ]
    keys = [ordering.sort_value(extjson.value_to_json(value)) for value in ordered]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_numbers_of_different_types_with_one_value_are_one_key():
    values = [1, 1.0, Int64(1), Decimal128("1.000")]
    keys = {ordering.sort_value(extjson.value_to_json(value)) for value in values}
    assert len(keys) == 1


def test_compound_keys_and_missing_fields_sort_as_null():
    fields = ("user", "ticker")
    a = ordering.sort_key({"user": "x"}, fields)
    b = ordering.sort_key({"user": "x", "ticker": None}, fields)
    c = ordering.sort_key({"user": "x", "ticker": "SOL"}, fields)
    assert a == b < c
    assert ordering.sort_key({"meta": {"id": 3}}, ("meta.id",)) == ((3, 1, 3),)


def test_file_names_escape_unsafe_characters():
    assert snapshot.snapshot_filename("pnl_data") == "pnl_data.jsonl"
    assert snapshot.snapshot_filename("a/b c") == "a%2Fb%20c.jsonl"
    assert snapshot.snapshot_filename(".hidden") == "%2Ehidden.jsonl"


# ------------------------------------------------------------- verify catches damage


@pytest.fixture
def good(tmp_path):
    return write(tmp_path / "pnl.jsonl", DOCS)


def test_verify_catches_a_changed_value(good):
    good.write_bytes(good.read_bytes().replace(b'"profit":3.0', b'"profit":4.0'))
    assert problems(good) == ["4: the record does not match its hash: it was edited or damaged"]


def test_verify_catches_a_file_cut_mid_line(good):
    data = good.read_bytes()
    trailer = data.splitlines(keepends=True)[-1]
    good.write_bytes(data[: -len(trailer) - 10])
    assert problems(good) == [
        "6: the line is cut short (no newline at its end): the file was truncated",
        "6: the file ends without its trailer line: it was cut short",
    ]


def test_verify_catches_a_file_cut_inside_the_trailer(good):
    good.write_bytes(good.read_bytes()[:-5])
    assert problems(good) == ["7: the trailer is cut short: the file was truncated"]


def test_verify_catches_a_file_cut_at_a_line_boundary(good):
    lines = good.read_bytes().splitlines(keepends=True)
    good.write_bytes(b"".join(lines[:-2]))
    assert problems(good) == ["5: the file ends without its trailer line: it was cut short"]


def test_verify_catches_a_removed_line(good):
    lines = good.read_bytes().splitlines(keepends=True)
    del lines[2]
    good.write_bytes(b"".join(lines))
    assert problems(good) == [
        "6: the trailer counts 5 records but the section holds 4: "
        "a record line was removed or added"
    ]


def test_verify_catches_reordered_lines(good):
    lines = good.read_bytes().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    good.write_bytes(b"".join(lines))
    found = problems(good)
    assert "2: out of order: _id=1 sorts before _id=0 on line 1" not in found
    assert "3: out of order: _id=0 sorts before _id=1 on line 2" in found
    assert any("lines were reordered or replaced" in p for p in found)


def test_verify_catches_a_non_json_line(good):
    lines = good.read_bytes().splitlines(keepends=True)
    lines[3] = b"this is not json\n"
    good.write_bytes(b"".join(lines))
    assert "4: not a record line" in problems(good)[0]


def test_verify_catches_forged_reordering_and_duplicates(good):
    forge(good, lambda records: [records[1], records[0], *records[2:]])
    assert problems(good) == ["3: out of order: _id=0 sorts before _id=1 on line 2"]
    forge(good, lambda records: [*records, records[-1]])
    assert "duplicate key _id=4" in problems(good)[-1]


def test_verify_catches_forged_values_that_lie_about_their_type(good):
    def lie(records):
        records[0] = b'{"_id":0,"n":{"$numberInt":"abc"}}\n'
        return records

    forge(good, lie)
    assert "a value lies about its type: n: $numberInt" in problems(good)[0]


def test_verify_catches_a_forged_document_no_store_can_hold(good):
    def nul(records):
        records[0] = b'{"_id":0,"a\\u0000b":1}\n'
        return records

    forge(good, nul)
    assert "no store can hold this document" in problems(good)[0]


def test_verify_catches_forged_non_canonical_writing(good):
    def respace(records):
        records[0] = b'{"_id":0, "profit":0.0}\n'
        return records

    forge(good, respace)
    assert "not written the way dbsync writes it" in problems(good)[0]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "the file is empty"),
        (b"\x00\x01\x02binary\xff\n", "not a dbsync snapshot"),
        (b'{"some":"json"}\n', "not a dbsync snapshot"),
    ],
)
def test_verify_refuses_what_is_not_a_snapshot(tmp_path, content, problem):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    assert problem in " ".join(problems(path))


def test_verify_refuses_an_unknown_format_version(good):
    lines = good.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"version":1', b'"version":99')
    good.write_bytes(b"".join(lines))
    assert "format version 99 is not supported" in problems(good)[0]


def test_verify_refuses_an_edited_header(good):
    good.write_bytes(good.read_bytes().replace(b'"key":["_id"]', b'"key":["user"]', 1))
    assert any("digest" in p for p in problems(good))


def test_verify_refuses_huge_lines_without_reading_them_whole(tmp_path, monkeypatch):
    path = write(tmp_path / "pnl.jsonl", [*DOCS, {"_id": 9, "blob": "x" * 5000}])
    monkeypatch.setattr(snapshot, "MAX_LINE_BYTES", 1000)
    assert problems(path) == ["7: the line is longer than 1000 bytes: not a snapshot"]


def lines_cut_at(handle, limit):
    """The reference: ``readline`` with a limit, the rest of a long line skipped."""
    while line := handle.readline(limit + 1):
        yield line
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := handle.readline(limit)) and not rest.endswith(b"\n"):
                pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"\r")), max_size=30),
    st.booleans(),
    st.integers(min_value=1, max_value=64),
)
def test_batches_hold_every_line_cut_where_it_is_too_long(pieces, ends_with_newline, size):
    """Every line, whatever the read size, as reading it line by line with a limit gives it:
    whole up to ``MAX_LINE_BYTES + 1`` bytes, else cut there and the rest skipped; a ``\r``
    is not a line end."""
    data = b"\n".join(pieces) + (b"\n" if ends_with_newline else b"")
    maximum = snapshot.MAX_LINE_BYTES
    snapshot.MAX_LINE_BYTES = 20
    try:
        batches = snapshot_files.read_line_batches(io.BytesIO(data), size)
        batched = [line for batch in batches for line in batch]
        assert batched == list(lines_cut_at(io.BytesIO(data), 20))
    finally:
        snapshot.MAX_LINE_BYTES = maximum


MANY = [{"_id": i, "user": f"u{i}", "profit": i * 1.5} for i in range(60)]


@pytest.mark.parametrize("size", [64, 700, 1 << 20])
def test_a_lying_line_read_in_a_batch_is_named_with_its_line(tmp_path, monkeypatch, size):
    """A batch of usual lines is checked at once; one that holds a line whose hash lies is
    checked line by line, which names it, whatever batch it falls in."""
    path = write(tmp_path / "pnl.jsonl", MANY)
    monkeypatch.setattr(snapshot_files, "READ_BATCH_BYTES", size)
    sections = [(s.header.collection, list(s.records)) for s in snapshot_files.read_sections(path)]
    assert sections == [("pnl", lines_for(MANY))]
    lines = path.read_bytes().splitlines(keepends=True)
    lines[41] = lines[41].replace(b'"profit":60.0', b'"profit":61.0')
    path.write_bytes(b"".join(lines))
    with pytest.raises(snapshot.SnapshotError) as caught:
        for section in snapshot_files.read_sections(path):
            list(section.records)
    assert caught.value.line == 42 and "hash" in caught.value.problem
    forge(path, lambda records: [records[1], records[0], *records[2:]])  # hashes recomputed
    assert any("out of order" in p for p in problems(path))


def test_several_sections_in_one_file(tmp_path):
    path = tmp_path / "all.jsonl"
    with path.open("wb") as handle:
        snapshot.write_section(handle, Header("a", RULES), lines_for(DOCS[:2]))
        snapshot.write_section(handle, Header("b", RULES), lines_for(DOCS[2:]))
    result = snapshot_files.verify_file(path)
    assert result.ok and result.sections == [("a", 2), ("b", 3)]
    sections = [
        (s.header.collection, len(list(s.records))) for s in snapshot_files.read_sections(path)
    ]
    assert sections == [("a", 2), ("b", 3)]


def test_strict_reading_raises_naming_file_and_line(good):
    good.write_bytes(good.read_bytes().replace(b'"profit":3.0', b'"profit":4.0'))
    with pytest.raises(snapshot.SnapshotError) as caught:
        for section in snapshot_files.read_sections(good):
            list(section.records)
    assert caught.value.exit_code == 4
    assert f"{good}:4:" in caught.value.message


def test_real_pnl_records_snapshot_and_verify(tmp_path, pnl_records):
    docs = [bson.decode(bson.encode(extjson.decode_document(json.dumps(r)))) for r in pnl_records]
    path = write(tmp_path / "pnls.jsonl", docs)
    assert snapshot_files.verify_file(path).sections == [("pnl", 190)]


def test_sorting_pauses_the_cyclic_gc_only_while_it_reads():
    pairs = [snapshot.encode_record({"_id": i}, ("_id",)) for i in (3, 1, 2)]

    def key(line):
        return snapshot.line_sort_key(line, ("_id",))

    sorted_pairs = snapshot_files.sorted_lines(iter(pairs), key, chunk_size=2)
    assert next(sorted_pairs)[0] == ordering.sort_key({"_id": 1}, ("_id",))
    assert gc.isenabled()
    assert [pair[0] for pair in sorted_pairs] == [((3, 1, 2),), ((3, 1, 3),)]
    gc.disable()
    try:
        list(snapshot_files.sorted_lines(iter(pairs), key))
        assert not gc.isenabled()  # left as it found it
    finally:
        gc.enable()


def test_sort_keys_of_documents_do_not_keep_orjson_buffers():
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keys = [ordering.sort_key({"_id": {"user": "u", "n": i}}, ("_id",)) for i in range(1000)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(keys) == 1000
    assert held < 1000 * 512  # orjson's own result would hold 4 KiB per key


# ---------------------------------------------------------------- $-named fields: the escape


def snapshot_round_trip(doc: dict) -> tuple[bytes, dict]:
    """A document as a store gives it back, its record line, and the line read back."""
    stored = decode_raw(bson.encode(doc))
    _, line = snapshot.encode_record(stored, ["_id"])
    return line, extjson.from_json_value(snapshot.line_document(line))


@pytest.mark.parametrize(
    ("field", "written"),
    [
        ({"$numberLong": "7"}, '{"$document":{"$numberLong":"7"}}'),
        ({"$oid": "65a1b2c3d4e5f60718293a4b"}, '{"$document":{"$oid":"65a1b2c3d4e5f60718293a4b"}}'),
        ({"$regex": "^a", "$options": "i"}, '{"$document":{"$regex":"^a","$options":"i"}}'),
        ({"$binary": {"base64": "AQI=", "subType": "00"}}, None),
        ({"$date": {"$numberLong": "0"}}, None),
        ({"$document": {"a": 1}}, '{"$document":{"$document":{"a":1}}}'),
        ({"$in": [{"$set": 1}]}, '{"$document":{"$in":[{"$document":{"$set":1}}]}}'),
        ({"$ref": 5, "$id": 1}, '{"$document":{"$ref":5,"$id":1}}'),
        ({"a": {"$gt": 1}, "b": 2}, '{"a":{"$document":{"$gt":1}},"b":2}'),
    ],
)
def test_sub_documents_named_like_wrappers_are_escaped_and_read_back_as_documents(field, written):
    doc = {"_id": 1, "payload": field}
    line, back = snapshot_round_trip(doc)
    assert bson.encode(back) == bson.encode(doc)
    assert type(back["payload"]) is dict
    if written is not None:
        assert f'"payload":{written}' in line.decode()
    assert snapshot._Checker(Header("c", RULES), b"", deep=True).deep_problem(line, 1) is None


def test_a_dbref_stays_a_dbref_and_is_not_escaped():
    doc = {"_id": 1, "ref": bson.DBRef("users", 5, "shop", note={"$x": 1})}
    line, back = snapshot_round_trip(doc)
    assert b'"ref":{"$ref":"users","$id":5,"$db":"shop","note":{"$document":{"$x":1}}}' in line
    assert back == doc


def test_dates_across_the_whole_bson_range_round_trip():
    for millis in (-(2**63), -62135596800001, 253402300800000, 2**63 - 1):
        doc = {"_id": 1, "when": DatetimeMS(millis)}
        line, back = snapshot_round_trip(doc)
        assert f'{{"$date":{{"$numberLong":"{millis}"}}}}' in line.decode()
        assert bson.encode(back) == bson.encode(doc)


def test_a_document_whose_first_field_is_dollar_named_is_refused_not_written():
    with pytest.raises(extjson.EncodeError, match="would read back as a type wrapper"):
        snapshot.encode_record({"$oid": "65a1b2c3d4e5f60718293a4b", "_id": 1}, ["_id"])


@settings(max_examples=400, deadline=None)
@given(dollar_documents())
@example({"_id": 0, "0": {"$numberLong": {"$id": None, "$ref": Code("", None)}}})  # a DBRef to
# pymongo (a Code is a str), a plain document once its $ref is JSON: written as that document
def test_property_whatever_export_writes_reads_back_to_the_same_document(doc):
    try:
        raw = bson.encode(doc)
    except (bson.errors.InvalidDocument, OverflowError):
        return  # no store holds it: import refuses it
    line, back = snapshot_round_trip(doc)
    assert bson.encode(back) == bson.encode(decode_raw(raw))
    assert snapshot._Checker(Header("c", RULES), b"", deep=True).deep_problem(line, 1) is None


# ---------------------------------------------------------------- the raw fast path


@pytest.mark.parametrize(
    "doc",
    [
        {"_id": 1, "x": float("nan")},
        {"_id": 1, "x": [1, {"y": float("-inf")}]},
        {"_id": 1, "q": {"$regex": "^a"}},
        {"_id": 1, "q": [{"$in": [1]}]},
    ],
)
def test_plain_bson_never_clears_a_nan_or_a_dollar_field_name(doc):
    assert not extjson.plain_bson(bson.encode(doc))
    assert not extjson.plain_document(decode_raw(bson.encode(doc)))


def test_plain_document_clears_binary_bytes_that_look_like_a_dollar_name_or_a_nan():
    lookalike = b"\x02$a" + b"\xf8\x7f\x01"  # a string's type byte then "$"; a NaN's last bytes
    stored = decode_raw(bson.encode({"_id": 1, "payload": lookalike, "f": 1.5}))
    assert not extjson.plain_bson(bson.encode(stored))
    assert extjson.plain_document(stored)
    assert extjson.encode_plain(stored) == extjson.encode_document(stored)


def test_plain_bson_clears_a_dollar_inside_a_string():
    assert extjson.plain_bson(bson.encode({"_id": 1, "price": "$5", "f": 1.5}))


@settings(max_examples=400, deadline=None)
@given(dollar_documents(), st.sampled_from([("_id",), ("a", "_id"), ("$oid",), ("a.b",)]))
def test_property_the_raw_fast_path_gives_the_walks_line_and_key(doc, fields):
    try:
        raw = bson.encode(doc)
    except (bson.errors.InvalidDocument, OverflowError):
        return
    stored = decode_raw(raw)
    assert snapshot.encode_record(stored, fields, raw) == snapshot.encode_record(stored, fields)


@settings(max_examples=300, deadline=None)
@given(documents())
def test_property_encode_plain_writes_what_the_walk_writes(fields):
    raw = bson.encode({"_id": 1, **fields})
    stored = decode_raw(raw)
    if extjson.plain_bson(raw) or extjson.plain_document(stored):
        assert extjson.encode_plain(stored) == extjson.encode_document(stored)


def test_a_line_written_before_the_escape_still_verifies(good):
    def old_style(records):
        records[0] = b'{"_id":0,"query":{"$gt":1,"$in":[{"$set":2}]}}\n'
        return records

    forge(good, old_style)
    assert problems(good) == []


def test_verify_gives_the_header_of_every_section_it_read(tmp_path):
    path = write(tmp_path / "pnl.jsonl", DOCS)
    result = snapshot_files.verify_file(path)
    assert result.headers == [Header("pnl", RULES)] and result.sections == [("pnl", 5)]


@pytest.mark.parametrize("docs", [DOCS, []], ids=["records", "empty"])
def test_a_section_as_written_is_known_with_the_summary_writing_it_gives(docs):
    out = io.BytesIO()
    header = Header("pnl", RULES)
    summary = snapshot.write_section(out, header, lines_for(docs))
    assert snapshot.written_section(header, out.getvalue()) == summary


def test_a_section_written_otherwise_is_not_kept_as_it_is():
    out = io.BytesIO()
    header = Header("pnl", RULES)
    snapshot.write_section(out, header, lines_for(DOCS))
    data = out.getvalue()
    spaced = data.replace(b'"count":', b'"count": ')  # a trailer not in canonical form
    assert snapshot.written_section(header, spaced) is None
    assert snapshot.written_section(Header("other", RULES), data) is None
    assert snapshot.written_section(Header("pnl", Rules(key=("user",))), data) is None
    assert snapshot.written_section(header, data[:-1]) is None  # cut short


def test_a_reader_that_leaves_the_hashes_to_its_caller_still_checks_the_rest(tmp_path):
    """``hashes=False``: a damaged body passes the read and ``hashes_hold`` names it false; a
    line whose stated hash changed still fails the trailer's digest."""
    path = write(tmp_path / "pnl.jsonl", DOCS)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"u3"', b'"u9"'))
    sections = snapshot_files.read_sections(path, hashes=False)
    lines = list(next(sections).records)
    assert len(lines) == len(DOCS) and not snapshot.hashes_hold(lines)
    assert snapshot.hashes_hold([line for line in lines if b'"u9"' not in line])
    with pytest.raises(snapshot.SnapshotError, match="does not match its hash"):
        list(snapshot_files.read_sections(path))
    stated = snapshot.line_hash(lines[3]).encode()
    path.write_bytes(data.replace(stated, stated[::-1]))
    with pytest.raises(snapshot.SnapshotError, match="trailer's digest"):
        list(snapshot_files.read_sections(path, hashes=False))
