"""Hypothesis strategies for BSON documents as pymongo decodes them."""

from __future__ import annotations

import datetime

from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex
from bson.datetime_ms import DatetimeMS
from bson.timestamp import Timestamp
from hypothesis import strategies as st

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1).map(Int64)
# Extended JSON has one NaN ("NaN"): NaN sign and payload bits cannot survive any Extended JSON
# implementation, so the strategy draws the standard quiet NaN only.
DOUBLES = st.floats(allow_nan=False, allow_infinity=True) | st.sampled_from(
    [float("nan"), -0.0, 5e-324, 1.0, 1e300, 1e16, 0.1]
)
DECIMALS = st.sampled_from(
    [
        "0",
        "-0",
        "1.2300",
        "1.2300E+6000",
        "NaN",
        "Infinity",
        "-Infinity",
        "9.999999999999999999999999999999999E+6144",
        "1E-6176",
        "-12.5",
    ]
).map(Decimal128)
DATES = st.integers(min_value=-62135596800000, max_value=253402300799999).map(
    lambda ms: datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)
)
OBJECT_IDS = st.binary(min_size=12, max_size=12).map(ObjectId)
SUBTYPES = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 0x80, 0xFF])
BINARIES = st.binary(max_size=40) | st.builds(Binary, st.binary(max_size=40), SUBTYPES)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
REGEXES = st.builds(
    Regex,
    st.text(
        alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
        max_size=10,
    ),
    st.sets(st.sampled_from("imsux")).map(lambda flags: "".join(sorted(flags))),
)
TIMESTAMPS = st.builds(Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INT32,
    INT64,
    DOUBLES,
    DECIMALS,
    DATES,
    OBJECT_IDS,
    BINARIES,
    TEXT,
    REGEXES,
    TIMESTAMPS,
    st.just(MinKey()),
    st.just(MaxKey()),
    st.builds(Code, TEXT),
)
FIELD_NAMES = st.text(
    alphabet=st.characters(blacklist_characters="\x00.$", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=8,
)


def values(max_leaves: int = 20) -> st.SearchStrategy:
    return st.recursive(
        SCALARS,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(FIELD_NAMES, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def documents(max_leaves: int = 20) -> st.SearchStrategy:
    return st.dictionaries(FIELD_NAMES, values(max_leaves), max_size=6)


# Field names a bot may store (MongoDB 5+ keeps ``$``-prefixed and dotted names): Extended JSON's
# own wrapper keys, the snapshot's escape, query operators.
DOLLAR_NAMES = st.sampled_from(
    ["$numberLong", "$numberInt", "$numberDouble", "$numberDecimal", "$oid", "$date", "$binary"]
    + ["$type", "$uuid", "$regex", "$options", "$regularExpression", "$timestamp", "$minKey"]
    + ["$maxKey", "$code", "$scope", "$symbol", "$undefined", "$dbPointer", "$ref", "$id"]
    + ["$db", "$document", "$set", "$in", "$", "a.b", "$a.b"]
)
WIDE_DATES = st.integers(min_value=-(2**63), max_value=2**63 - 1).map(DatetimeMS)
"""Every BSON date, as ``DATETIME_AUTO`` reads the ones outside ``datetime``'s years 1-9999."""


def dollar_values(max_leaves: int = 12) -> st.SearchStrategy:
    """Values whose sub-documents have wrapper-shaped field names (and wrapper-like values)."""
    names = FIELD_NAMES | DOLLAR_NAMES
    leaves = SCALARS | WIDE_DATES | st.sampled_from(["7", "^a", "i", "00", "AQI=", 1])
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def dollar_documents() -> st.SearchStrategy:
    """Documents as a store holds them: ``_id`` first, then any names (``$`` ones included)."""
    rest = st.dictionaries(FIELD_NAMES | DOLLAR_NAMES, dollar_values(), max_size=5)
    return st.builds(lambda ident, fields: {"_id": ident, **fields}, INT32 | OBJECT_IDS, rest)
