"""The record line's fast paths write what the exact walk writes (the benchmark times them)."""

from __future__ import annotations

import bson
from bson import Binary, Decimal128, ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from dbsync.core import extjson, snapshot
from dbsync.core.ordering import native_key, sort_key
from dbsync.core.rules import Rules

small_decimals = st.builds(
    lambda sign, coefficient, exponent: Decimal128(f"{sign}{coefficient}E{exponent}"),
    st.sampled_from(["", "-"]),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=-40, max_value=12),
)


@settings(max_examples=500, deadline=None)
@given(small_decimals, st.integers(min_value=0, max_value=2**64 - 1))
def test_property_a_decimal_read_through_its_remembered_high_word_is_its_text(value, low):
    """The first decimal of a high word fills ``_SMALL_DECIMALS``; the next ones, another
    coefficient in the same low word, are written from it: each as ``str`` says."""
    high, _ = value.__getstate__()
    other = Decimal128.from_bid(low.to_bytes(8, "little") + high.to_bytes(8, "little"))
    for decimal in (value, value, other, other):
        expected = b'{"d":{"$numberDecimal":"%s"}}' % str(decimal).encode()
        assert extjson.encode_plain({"d": decimal}) == expected
        assert extjson.decimal128_text(decimal) == str(decimal)


key_values = st.one_of(
    st.text(max_size=5),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
    st.booleans(),
    st.builds(ObjectId),
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=2, max_value=5).flatmap(
        lambda count: st.tuples(
            st.just(tuple(f"k{n}" for n in range(count))),
            st.dictionaries(st.sampled_from([f"k{n}" for n in range(count)]), key_values),
        )
    )
)
def test_property_the_key_of_several_fields_is_the_json_forms(fields_and_values):
    """The key function written for the number of fields agrees with ``sort_key`` of the
    document's JSON form, missing fields (null) included."""
    fields, values = fields_and_values
    stored = {"_id": 1, **values}
    key = native_key(fields)
    assert key is not None
    assert key(stored) == sort_key(extjson.to_json_value(stored), fields)
    raw = bson.encode(stored)
    assert snapshot.encode_record(stored, fields, raw) == snapshot.encode_record(stored, fields)


def test_the_line_s_fields_are_read_through_the_format():
    """The hash as a line holds it and whether a line is a record, as the change index and
    ``dbsync log`` read them."""
    _, line = snapshot.encode_record({"_id": 1, "name": "é"}, ["_id"])
    assert snapshot.line_hash_bytes(line) == snapshot.line_hash(line).encode()
    assert (
        snapshot.line_hash_bytes(line) == snapshot.content_hash(snapshot.line_body(line)).encode()
    )
    assert snapshot.is_record_line(line)
    header = snapshot.Header("items", Rules(("_id",), None, ())).line()
    assert not snapshot.is_record_line(header)
    assert not snapshot.is_record_line(snapshot.trailer_line(1, "0" * 32))


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=12, max_size=12),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=255),
)
def test_property_pymongo_s_attributes_that_write_wrapped_reads_are_its_public_values(
    oid_bytes, high, low, subtype
):
    """``write_wrapped`` reads pymongo's private attributes for speed: they hold what the
    public properties give, or this fails the day pymongo renames them."""
    oid = ObjectId(oid_bytes)
    assert oid._ObjectId__id == oid.binary
    decimal = Decimal128.from_bid(low.to_bytes(8, "little") + high.to_bytes(8, "little"))
    assert (decimal._Decimal128__high, decimal._Decimal128__low) == decimal.__getstate__()
    binary = Binary(oid_bytes, subtype)
    assert binary._Binary__subtype == binary.subtype
    doc = {"_id": oid, "d": decimal, "b": binary}
    assert extjson.encode_plain(doc) == extjson.encode_document(doc)


_TYPE_BYTES = {*range(0x01, 0x14), 0x7F, 0xFF}


def _plain_bson_reference(raw: bytes) -> bool:
    """``plain_bson`` as its docstring says it, one byte at a time."""
    for at in range(5, len(raw) - 1):
        if raw[at] == 0x24 and raw[at - 1] in _TYPE_BYTES:
            return False
        if raw[at] in (0x7F, 0xFF) and raw[at - 1] >= 0xF0 and raw[at + 1] in {0, *_TYPE_BYTES}:
            return False
    return True


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([0x00, 0x01, 0x13, 0x24, 0x41, 0x7F, 0xF0, 0xF8, 0xFF])))
def test_property_plain_bson_is_its_byte_by_byte_reference(body):
    """The scans that look only where a ``$``, a 0x7f or a 0xff is find what a byte-by-byte
    scan finds, whichever of those bytes a document holds (a length and a type byte first,
    the end byte last, as BSON has them)."""
    raw = b"\x24\x24\x24\x24\x02" + bytes(body) + b"\x00"
    assert extjson.plain_bson(raw) == _plain_bson_reference(raw)


def test_a_wrapped_value_write_wrapped_cannot_read_falls_back_to_the_general_walk(monkeypatch):
    """Should pymongo rename the attributes ``write_wrapped`` reads, orjson's write fails and
    the line is written by the general walk: the same bytes."""
    doc = {
        "_id": ObjectId("65a1b2c3d4e5f60718293a4b"),
        "n": bson.int64.Int64(7),
        "d": Decimal128("2209195.40"),
        "b": Binary(b"xy", 4),
    }
    raw = bson.encode(doc)
    expected = snapshot.encode_record(doc, ("_id",), raw)

    def renamed(value):
        raise AttributeError("'ObjectId' object has no attribute '_ObjectId__id'")

    monkeypatch.setattr(snapshot, "_write_wrapped", renamed)
    assert snapshot.encode_record(doc, ("_id",), raw) == expected
