"""The record line's fast paths write what the exact walk writes (the benchmark times them)."""

from __future__ import annotations

import bson
from bson import Decimal128, ObjectId
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
