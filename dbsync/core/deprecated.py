"""BSON's deprecated types (Symbol, Undefined, DBPointer), found in raw BSON so they are named.

pymongo has no Python type for them: it reads a Symbol as a string, Undefined as null and a
DBPointer as a DBRef, and writes them back so. Neither store can keep them once they pass
through Python, so dbsync keeps what pymongo reads and says so, naming the field, never silently.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import bson

_INT32 = struct.Struct("<i").unpack_from
_MAY_HOLD = re.compile(rb"[\x06\x0c\x0e]")  # bytes without these three type bytes hold none
BECOMES = {
    0x06: ("Undefined", "null"),
    0x0C: ("DBPointer", "a DBRef"),
    0x0E: ("Symbol", "a string"),
}
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8}
_FIXED |= {0x13: 16, 0x7F: 0, 0xFF: 0}


def converted_fields(raw: bytes, document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field path, "Symbol became a string")`` for each deprecated value in ``raw``.

    ``document`` is ``raw`` as decoded: when it encodes back to the same bytes nothing was
    converted, which clears the documents whose bytes merely contain a type byte's value.
    """
    if _MAY_HOLD.search(raw) is None or bson.encode(document) == raw:
        return []
    return [
        (path, f"{BECOMES[kind][0]} became {BECOMES[kind][1]}")
        for path, kind in _elements(raw, 4, "")
        if kind in BECOMES
    ]


def _elements(raw: bytes, start: int, prefix: str) -> Iterator[tuple[str, int]]:
    """Every element of the document starting at ``start`` (after its length), depth first."""
    position = start
    while raw[position] != 0:
        kind = raw[position]
        name_end = raw.index(b"\x00", position + 1)
        path = prefix + raw[position + 1 : name_end].decode("utf-8", "replace")
        position = name_end + 1
        yield path, kind
        if kind in (0x03, 0x04):
            yield from _elements(raw, position + 4, path + ".")
        position += _size(raw, kind, position)


def _size(raw: bytes, kind: int, position: int) -> int:
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed
    if kind in (0x02, 0x0D, 0x0E):  # a string: its length, then its bytes and NUL
        return 4 + int(_INT32(raw, position)[0])
    if kind in (0x03, 0x04, 0x0F):  # a document, an array, code with scope: their total length
        return int(_INT32(raw, position)[0])
    if kind == 0x05:  # binary: its length, its subtype, its bytes
        return 5 + int(_INT32(raw, position)[0])
    if kind == 0x0B:  # a regex: two C strings
        end = raw.index(b"\x00", position)
        return raw.index(b"\x00", end + 1) + 1 - position
    if kind == 0x0C:  # a DBPointer: a string, then 12 bytes of ObjectId
        return 4 + int(_INT32(raw, position)[0]) + 12
    raise ValueError(f"unknown BSON type 0x{kind:02x}")
