import datetime
import json
import uuid

import bson
import pytest
from bson import (
    SON,
    Binary,
    Code,
    DBRef,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    json_util,
)
from bson.datetime_ms import DatetimeMS
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS, JSONOptions
from bson.timestamp import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from dbsync.core import extjson
from dbsync.core.snapshot import encode_record, record_line
from dbsync.edges.changes import line_record_id, line_value, record_id
from dbsync.errors import InvalidInput
from tests.strategies import documents, dollar_documents

NAIVE = JSONOptions(tz_aware=False)


def every_type() -> dict:
    return {
        "_id": ObjectId("65a1b2c3d4e5f60718293a4b"),
        "int32": -7,
        "int64": Int64(2**53 + 1),
        "big": Int64(-(2**63)),
        "double": 2.5,
        "whole_double": 3.0,
        "negative_zero": -0.0,
        "nan": float("nan"),
        "infinity": float("inf"),
        "minus_infinity": float("-inf"),
        "smallest": 5e-324,
        "decimal": Decimal128("1.2300E+6000"),
        "decimal_nan": Decimal128("NaN"),
        "decimal_zeros": Decimal128("10.000"),
        "before_1970": datetime.datetime(1903, 5, 6, 7, 8, 9, 123000),
        "after_2038": datetime.datetime(2242, 1, 1),
        "bytes": b"\x00\xff",
        "uuid": Binary(uuid.UUID("12345678-1234-5678-1234-567812345678").bytes, 4),
        "user_binary": Binary(b"x", 0x80),
        "old_binary": Binary(b"yz", 2),
        "regex": Regex("^a.b$", "imx"),
        "timestamp": Timestamp(1700000000, 7),
        "min": MinKey(),
        "max": MaxKey(),
        "code": Code("function () { return 1; }"),
        "code_scope": Code("x", {"x": 1}),
        "ref": DBRef("users", ObjectId("65a1b2c3d4e5f60718293a4c"), "shop", note="extra"),
        "nested": {"z": 1, "a": [1, {"b": None}, []], "e": {}},
        "text": "héllo\x00wörld 😀",
        "empty_text": "",
        "flag": False,
        "nothing": None,
    }


def roundtrip(doc: dict) -> dict:
    raw = bson.encode(doc)
    return bson.decode(raw)


def test_every_type_survives_snapshot_mode_byte_for_byte():
    doc = roundtrip(every_type())
    line = extjson.encode_document(doc)
    assert bson.encode(extjson.decode_document(line)) == bson.encode(doc)
    assert list(extjson.decode_document(line)) == list(doc)  # field order


def test_snapshot_mode_writes_int32_and_finite_doubles_bare():
    line = extjson.encode_document({"i": 5, "d": 3.0, "z": -0.0, "l": Int64(5), "n": float("nan")})
    assert line == (b'{"i":5,"d":3.0,"z":-0.0,"l":{"$numberLong":"5"},"n":{"$numberDouble":"NaN"}}')


def test_plain_python_int_beyond_int32_is_written_as_int64():
    assert extjson.encode_document({"n": 2**40}) == b'{"n":{"$numberLong":"1099511627776"}}'
    with pytest.raises(InvalidInput):
        extjson.encode_document({"n": 2**64})


def test_canonical_mode_matches_json_util_canonical():
    doc = roundtrip(every_type())
    ours = json.loads(extjson.encode_canonical(doc))
    theirs = json.loads(json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS))
    assert ours == theirs


def test_json_util_reads_both_modes_back_to_the_same_bson():
    doc = roundtrip(every_type())
    for data in (extjson.encode_document(doc), extjson.encode_canonical(doc)):
        assert bson.encode(json_util.loads(data, json_options=NAIVE)) == bson.encode(doc)


def test_dates_outside_python_datetime_survive():
    doc = {"early": DatetimeMS(-(2**62)), "late": DatetimeMS(2**62)}
    line = extjson.encode_document(doc)
    assert bson.encode(extjson.decode_document(line)) == bson.encode(doc)


def test_son_and_tuples_encode_like_dicts_and_lists():
    assert extjson.encode_document(SON([("b", 1), ("a", (1, 2))])) == b'{"b":1,"a":[1,2]}'


def test_mongoexport_relaxed_lines_decode():
    line = (
        '{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"},"n":5,"big":12345678901,'
        '"f":1.5,"whole":2.0,"when":{"$date":"2024-03-01T12:30:00.250Z"},'
        '"early":{"$date":{"$numberLong":"-86400000"}},'
        '"bin":{"$binary":{"base64":"AQI=","subType":"00"}},'
        '"legacy_bin":{"$binary":"AQI=","$type":"80"},'
        '"u":{"$uuid":"12345678-1234-5678-1234-567812345678"},'
        '"re":{"$regex":"a+","$options":"i"},'
        '"ts":{"$timestamp":{"t":5,"i":1}},'
        '"offset":{"$date":"2024-03-01T14:30:00+02:00"}}'
    )
    doc = extjson.decode_document(line)
    assert doc["_id"] == ObjectId("65a1b2c3d4e5f60718293a4b")
    assert type(doc["n"]) is int and doc["n"] == 5
    assert type(doc["big"]) is Int64
    assert type(doc["whole"]) is float
    assert doc["when"] == datetime.datetime(2024, 3, 1, 12, 30, 0, 250000)
    assert doc["offset"] == datetime.datetime(2024, 3, 1, 12, 30)
    assert doc["early"] == datetime.datetime(1969, 12, 31)
    assert doc["bin"] == b"\x01\x02"
    assert doc["legacy_bin"] == Binary(b"\x01\x02", 0x80)
    assert doc["u"] == Binary(uuid.UUID("12345678-1234-5678-1234-567812345678").bytes, 4)
    assert doc["re"].pattern == "a+" and doc["re"].flags == 2  # re.IGNORECASE
    assert doc["ts"] == Timestamp(5, 1)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"a":{"$numberInt":"x"}}', "a: $numberInt wants a string of digits"),
        ('{"a":{"$numberInt":"99999999999"}}', "does not fit in $numberInt"),
        ('{"a":{"$numberLong":"1.5"}}', "$numberLong wants a string of digits"),
        ('{"a":{"b":[{"$oid":"123"}]}}', "a.b.0: $oid wants 24 hex digits"),
        ('{"a":{"$date":"yesterday"}}', "$date wants"),
        ('{"a":{"$binary":{"base64":"!!","subType":"00"}}}', "bad base64"),
        ('{"a":{"$binary":{"base64":"AA==","subType":"100"}}}', "not one byte"),
        ('{"a":{"$timestamp":{"t":-1,"i":0}}}', "unsigned 32-bit"),
        ('{"a":{"$minKey":2}}', "$minKey wants the integer 1"),
        ('{"a":{"$date":1000}}', "$date wants"),  # the corpus: a bare number is not a date
        ('{"a":{"$regularExpression":{"pattern":"a","options":"q"}}}', "not among"),
        ('{"a":{"$numberDecimal":"abc"}}', "is not a Decimal128"),
        ('{"a":{"$numberDouble":"one"}}', "$numberDouble wants a number"),
        ('{"a":18000000000000000000}', "does not fit in a BSON Int64"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_values_that_lie_about_their_type_are_refused_with_their_path(text, problem):
    with pytest.raises(InvalidInput) as caught:
        extjson.decode_document(text)
    assert problem in caught.value.message


def test_unknown_dollar_keys_are_plain_fields():
    assert extjson.decode_document('{"a":{"$set":1}}') == {"a": {"$set": 1}}


@settings(max_examples=300, deadline=None)
@given(documents())
def test_property_snapshot_mode_round_trips_every_bson_value(doc):
    doc = roundtrip(doc)
    line = extjson.encode_document(doc)
    assert bson.encode(extjson.decode_document(line)) == bson.encode(doc)
    assert extjson.encode_document(extjson.decode_document(line)) == line  # a fixed point


@settings(max_examples=300, deadline=None)
@given(documents())
def test_property_agrees_with_json_util(doc):
    doc = roundtrip(doc)
    raw = bson.encode(doc)
    assert bson.encode(json_util.loads(extjson.encode_canonical(doc), json_options=NAIVE)) == raw
    assert bson.encode(json_util.loads(extjson.encode_document(doc), json_options=NAIVE)) == raw
    canonical = json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS)
    assert bson.encode(extjson.decode_document(canonical)) == raw
    # Relaxed mode cannot tell a small Int64 from an Int32: we must read it as json_util does.
    relaxed = json_util.dumps(doc, json_options=RELAXED_JSON_OPTIONS)
    expected = bson.encode(json_util.loads(relaxed, json_options=NAIVE))
    assert bson.encode(extjson.decode_document(relaxed)) == expected


def test_nan_payloads_are_normalised_to_the_one_nan_extended_json_knows():
    negative_nan = bson.decode(bytes.fromhex("10000000016e00000000000000f8ff00"))
    line = extjson.encode_document(negative_nan)
    assert line == b'{"n":{"$numberDouble":"NaN"}}'


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_property_decimal128_text_is_str_of_any_128_bits(bid):
    # the fast path reads the bits itself: it must say what pymongo says, for every pattern
    value = Decimal128.from_bid(bid)
    assert extjson.decimal128_text(value) == str(value)


@pytest.mark.parametrize(
    "text",
    ["0", "-0", "0E+3", "0E-8", "-0.00", "0.000001", "0.0000001", "123E-7", "1E+2", "-12.5"]
    + ["1.2300E+6000", "9.999999999999999999999999999999999E+6144", "1E-6176", "NaN", "-Infinity"],
)
def test_decimal128_text_at_the_edges_of_plain_and_scientific_notation(text):
    assert extjson.decimal128_text(Decimal128(text)) == str(Decimal128(text))


NUMBER_TEXT = st.from_regex(r"-?[0-9]{1,40}(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,5})?", fullmatch=True)


@settings(max_examples=500, deadline=None)
@given(NUMBER_TEXT | st.sampled_from(["NaN", "-Infinity", "1_0", " 1", ".5", "1E+6112", "0E-6177"]))
def test_property_decimal128_from_text_is_decimal128_of_any_text(text):
    try:
        expected = Decimal128(text).bid
    except Exception as error:
        with pytest.raises(type(error)):
            extjson.decimal128_from_text(text)
    else:
        assert extjson.decimal128_from_text(text).bid == expected


@given(
    st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31))
)
def test_milliseconds_of_a_naive_date_are_floored_as_bson_stores_them(
    value: datetime.datetime,
) -> None:
    expected = (value - datetime.datetime(1970, 1, 1)) // datetime.timedelta(milliseconds=1)
    assert extjson.naive_millis(value) == expected
    assert extjson.encode_plain({"d": value}) == extjson.encode_document({"d": value})


@settings(max_examples=300, deadline=None)
@given(dollar_documents())
def test_a_record_s_id_read_alone_is_the_one_the_whole_document_holds(doc: dict) -> None:
    """``line_record_id`` decodes only ``_id``; it must give what decoding the whole line and
    taking its ``_id`` gives, the type included (compared as BSON)."""
    line = encode_record(doc, ("_id",))[1]
    whole = record_id(line_value(line))
    assert bson.encode({"v": line_record_id(line)}) == bson.encode({"v": whole})


def test_a_record_s_id_is_read_from_an_escaped_top_level_as_from_the_whole_line() -> None:
    """No store writes a top level that starts with ``$`` (``_id`` comes first), but a line
    may hold one escaped, and its ``_id`` is then inside the escape."""
    line = record_line(b'{"$document":{"_id":{"$numberLong":"5"},"$set":1}}')
    assert line_record_id(line) == record_id(line_value(line)) == Int64(5)
    assert isinstance(line_record_id(line), Int64)


def test_a_record_without_an_id_is_named_whichever_way_its_id_is_read() -> None:
    line = encode_record({"name": "x"}, ("name",))[1]
    with pytest.raises(InvalidInput, match="a record has no _id"):
        line_record_id(line)
