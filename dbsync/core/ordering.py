"""The order of records in a snapshot: a total order over BSON values, MongoDB's type order.

``sort_key`` reads a record's key fields from its JSON form (``key_values``); the native key
functions read the same key from a document as the store decoded it (they must always agree);
``key_hash`` and ``part_of`` place a key in one part of a split collection, the same on every
machine. Pure: values in, comparable tuples out.
"""

from __future__ import annotations

import base64
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson
import xxhash
from bson import ObjectId

from dbsync.core import extjson

JsonDoc = dict[str, Any]
SortKey = tuple[Any, ...]


def _json_bytes(value: Any) -> bytes:
    """``orjson.dumps(value)``, copied to its own size.

    orjson's result keeps the 4 KiB buffer it was written in; a sort key holding one, kept for
    every record of an export chunk, took 440 MiB for 100k records keyed by a sub-document.
    """
    return bytes(memoryview(orjson.dumps(value)))


def _number(value: Any) -> SortKey:
    return (3, 1, value)


def _wrapped_sort_value(value: JsonDoc) -> SortKey:
    """Sort values of Extended JSON wrappers, in MongoDB's order of BSON types."""
    name = next(iter(value))
    inner = value[name]
    if len(value) > 1 and name != "$code":
        return (5, _json_bytes(value))
    if name == "$oid":  # the usual key first
        return (8, inner.lower())
    if name in ("$numberLong", "$numberInt"):
        return _number(int(inner))
    if name in ("$numberDouble", "$numberDecimal"):
        number = Decimal(inner)
        return (3, 0) if number.is_nan() else _number(number)
    if name == "$date":
        return (10, int(inner["$numberLong"]))
    if name == "$binary":
        data = base64.b64decode(inner["base64"])
        return (7, len(data), int(inner["subType"], 16), data)
    if name == "$timestamp":
        return (11, inner["t"], inner["i"])
    if name == "$regularExpression":
        return (12, inner["pattern"], inner["options"])
    if name == "$code":
        return (13, _json_bytes(value))
    if name == "$minKey":
        return (1,)
    if name == "$maxKey":
        return (14,)
    return (5, _json_bytes(value))


def sort_value(value: Any) -> SortKey:
    """A comparable value for one key field, total over every BSON type.

    Types rank as MongoDB ranks them (MinKey < null < numbers < strings < documents < arrays <
    binary < ObjectId < booleans < dates < timestamps < regexes < code < MaxKey). Numbers of any
    type compare by exact value (so ``1``, ``1.0`` and ``NumberLong(1)`` are one key, as in a
    MongoDB unique index; NaN sorts first); strings by code point; documents and arrays by their
    Extended JSON text.
    """
    kind = type(value)
    if kind is str:
        return (4, value)
    if kind is int or kind is float:
        return _number(value)
    if value is None:
        return (2,)
    if kind is bool:
        return (9, value)
    if kind is dict:
        if value and next(iter(value)).startswith("$"):
            return _wrapped_sort_value(value)
        return (5, _json_bytes(value))
    return (6, _json_bytes(value))


def key_values(doc: Mapping[str, Any], fields: Sequence[str]) -> list[Any]:
    """The JSON values of the key fields (dotted paths reach into sub-documents); missing → None."""
    if not isinstance(doc, dict):
        return [None] * len(fields)
    values = []
    for name in fields:
        if "." not in name:  # the usual case, without splitting
            values.append(doc.get(name))
            continue
        value: Any = doc
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values.append(value)
    return values


def sort_key(doc: Mapping[str, Any], fields: Sequence[str]) -> SortKey:
    """The position of a record in its snapshot; equal for records that are one record."""
    return tuple(map(sort_value, key_values(doc, fields)))  # map: no comprehension frame


def _stable(value: Any) -> Any:
    """A sort key with every number written one way (``1``, ``1.0`` and ``NumberLong(1)`` are
    one key, so they must land in one part)."""
    if isinstance(value, tuple):
        return tuple(_stable(item) for item in value)
    if isinstance(value, (int, float, Decimal)):
        return str(Decimal(value).normalize())
    return value


def key_hash(key: SortKey) -> int:
    """A 64-bit hash of a sort key, the same on every machine: ``part_of`` is it modulo."""
    return xxhash.xxh3_64_intdigest(repr(_stable(key)).encode())


def part_of(key: SortKey, count: int) -> int:
    """Which of ``count`` parts a record with this sort key belongs to (deterministic)."""
    return key_hash(key) % count


def describe_key(doc: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The key of a record as a user reads it: ``_id={"$oid": ...}`` or ``user=..., ticker=...``."""
    return ", ".join(
        f"{name}={orjson.dumps(value).decode()}"
        for name, value in zip(fields, key_values(doc, fields), strict=True)
    )


@functools.lru_cache(maxsize=64)
def native_key(fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], SortKey] | None:
    """``sort_key`` read from a document's own values, built once per key; None for a dotted
    key field (those are read from the JSON form, where a DBRef is a document too)."""
    if any("." in name for name in fields):
        return None
    if len(fields) == 1:
        name = fields[0]

        def one(doc: Mapping[str, Any]) -> SortKey:
            value: Any = doc.get(name)
            kind = type(value)
            if kind is str:
                return ((4, value),)
            if kind is ObjectId:
                return ((8, value.binary.hex()),)
            return (native_sort_value(value),)

        return one

    return _fields_key(fields)


def _fields_key(fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], SortKey]:
    """The key of several fields, by a function written for their number (as ``dataclasses``
    writes an ``__init__``): the values unpacked into locals, strings (most key fields) tested
    inline. A loop over the values took a third longer on Python 3.11, a call per value twice
    as long; a key is read for every record an export writes."""
    names = [f"v{number}" for number in range(len(fields))]
    unpacked = ", ".join(names)
    values = ", ".join(f"(4, {n}) if type({n}) is str else native_sort_value({n})" for n in names)
    source = (
        "def key(doc):\n"
        "    try:\n"
        f"        {unpacked}, = values_of(doc)\n"
        "    except KeyError:  # a missing field is null\n"
        f"        {unpacked}, = map(doc.get, fields)\n"
        f"    return ({values},)\n"
    )
    namespace: dict[str, Any] = {
        "values_of": operator.itemgetter(*fields),
        "fields": fields,
        "native_sort_value": native_sort_value,
    }
    exec(source, namespace)  # only names made here: the field names are never in the source
    key: Callable[[Mapping[str, Any]], SortKey] = namespace["key"]
    return key


def native_sort_value(value: Any) -> SortKey:
    """``sort_value`` of a value's JSON form, read from the value as the store decoded it.

    The usual key types directly; every other through its JSON form, so both always agree
    (a key is recomputed from the line when sorted chunks are merged, and by ``verify``).
    """
    kind = type(value)
    if kind is str:
        return (4, value)
    if kind is ObjectId:
        return (8, value.binary.hex())
    if kind is int:
        return (3, 1, value)
    if value is None:
        return (2,)
    if kind is float and value - value == 0.0:  # finite
        return (3, 1, value)
    return sort_value(extjson.value_to_json(value))
