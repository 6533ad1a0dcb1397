"""Extended JSON v2 on orjson: documents as pymongo decodes them ⇄ JSON bytes, losslessly.

Two output modes:

* **snapshot** — the lossless subset PRODUCT.md §3 allows: Int32 values and finite Doubles are
  bare JSON numbers (orjson always writes a Double with a ``.`` or an exponent, so ``1.0`` stays a
  Double and ``1`` an Int32); every other type uses its canonical wrapper (``$numberLong``,
  ``$oid``, ``$date`` with ``$numberLong`` inside, ...). Measured about 4x faster than
  ``bson.json_util`` canonical and easier to read in a diff.
* **canonical** — Extended JSON v2 canonical mode, for ``dbsync dump``.

Both are deterministic: equal documents give equal bytes, field order kept.

Decoding accepts canonical, relaxed and the legacy forms mongoexport writes, and refuses a wrapper
that lies about its type (``{"$numberInt": "x"}``, an ``$oid`` of 23 digits...) with
``InvalidInput`` naming the path inside the document.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import math
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import bson
import orjson
from bson import SON, Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex
from bson.datetime_ms import DatetimeMS
from bson.errors import InvalidDocument
from bson.timestamp import Timestamp

from dbsync.errors import InvalidInput

Document = dict[str, Any]
JsonValue = Any

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime.datetime(1970, 1, 1)
_ONE_MS = datetime.timedelta(milliseconds=1)
_DECIMAL_INFINITY = 0x7800000000000000  # these bits set: NaN, sNaN or an infinity
_DECIMAL_LARGE_FORM = 0x6000000000000000
_DECIMAL_BIAS = 6176
_DECIMAL_MAX_COEFFICIENT = 10**34 - 1
_REGEX_FLAGS = (("i", re.I), ("l", re.L), ("m", re.M), ("s", re.S), ("u", re.U), ("x", re.X))


WRAPPER_KEYS = frozenset(
    {
        "$oid", "$numberInt", "$numberLong", "$numberDouble", "$numberDecimal", "$binary",
        "$uuid", "$code", "$scope", "$timestamp", "$regularExpression", "$date", "$minKey",
        "$maxKey", "$symbol", "$undefined", "$dbPointer",
    }
)  # fmt: skip
"""Keys that make a JSON object a type wrapper: with any other key beside them it is refused
(the corpus's parse errors), never read as a plain document."""

ESCAPE = "$document"
"""The snapshot's escape: ``{"$document": {...}}`` is the plain sub-document inside, whatever its
field names. Snapshot mode writes every sub-document with a ``$``-prefixed field name this way,
so a stored query or a wrapper-shaped sub-document never reads back as another type."""


class EncodeError(InvalidInput):
    """A value that has no BSON form (a Python int beyond Int64, an unknown type...)."""


# ---------------------------------------------------------------- encoding: BSON -> JSON value


def _long(value: int) -> JsonValue:
    if not INT64_MIN <= value <= INT64_MAX:
        raise EncodeError(f"integer {value} does not fit in a BSON Int64")
    return {"$numberLong": str(value)}


def _double_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _non_finite(value: float) -> JsonValue:
    return {"$numberDouble": _double_text(value)}


def naive_millis(value: datetime.datetime) -> int:
    """Milliseconds since the epoch of a naive UTC datetime (as pymongo decodes a date), floored
    as BSON stores them. From the timedelta's normalised fields (days, then seconds and
    microseconds, never negative): exact before 1970 too, and a third cheaper than dividing
    the timedelta by a millisecond."""
    since = value - _EPOCH
    return since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000


def _millis(value: datetime.datetime) -> int:
    offset = value.utcoffset()
    naive = value.replace(tzinfo=None) if offset is not None else value
    millis = naive_millis(naive)
    return millis if offset is None else millis - offset // _ONE_MS


def _date(value: datetime.datetime) -> JsonValue:
    if value.tzinfo is None:  # what pymongo returns: naive UTC, the subtraction is all it takes
        return {"$date": {"$numberLong": str(naive_millis(value))}}
    return {"$date": {"$numberLong": str(_millis(value))}}


def _binary(data: bytes, subtype: int) -> JsonValue:
    text = binascii.b2a_base64(data, newline=False).decode()  # base64.b64encode, minus a call
    return {"$binary": {"base64": text, "subType": f"{subtype:02x}"}}


# One function per type, each called straight from the walk: no lambda around a helper.


def _object_id(value: ObjectId) -> JsonValue:
    return {"$oid": value.binary.hex()}


def _int64(value: Int64) -> JsonValue:
    return {"$numberLong": str(int(value))}


def _decimal128(value: Decimal128) -> JsonValue:
    return {"$numberDecimal": decimal128_text(value)}


def _bytes(value: bytes) -> JsonValue:
    return {
        "$binary": {"base64": binascii.b2a_base64(value, newline=False).decode(), "subType": "00"}
    }


def _binary_json(value: Binary) -> JsonValue:
    text = binascii.b2a_base64(value, newline=False).decode()
    return {"$binary": {"base64": text, "subType": f"{value.subtype:02x}"}}


def decimal128_text(value: Decimal128) -> str:
    """``str(value)``, six times faster: pymongo's goes through a ``decimal`` context per call.

    The coefficient and exponent are read from the 128 bits as pymongo reads them, and written
    as the General Decimal Arithmetic's to-scientific-string says (what ``str(Decimal)`` does).
    NaN and infinities are rare: pymongo says them. A coefficient that fits the low 64 bits
    (prices, amounts) leaves the high word holding the sign and exponent alone: they are read
    once per high word (``_SMALL_DECIMALS``), the low word is the coefficient.
    """
    high, low = value.__getstate__()  # the two halves as ints: ``bid`` packs them to bytes
    small = _SMALL_DECIMALS.get(high)
    if small is not None:
        return _decimal_string(small[0].decode(), str(low), small[1])
    if (high & _DECIMAL_INFINITY) == _DECIMAL_INFINITY:
        return str(value)
    if (high & _DECIMAL_LARGE_FORM) == _DECIMAL_LARGE_FORM:  # a coefficient past 34 digits: 0
        coefficient, exponent = 0, ((high >> 47) & 0x3FFF) - _DECIMAL_BIAS
    else:
        coefficient = ((high & 0x1FFFFFFFFFFFF) << 64) | low
        exponent = ((high >> 49) & 0x3FFF) - _DECIMAL_BIAS
        if coefficient > _DECIMAL_MAX_COEFFICIENT:
            coefficient = 0
        elif not high & 0x1FFFFFFFFFFFF:  # the coefficient is the low word: remember the high
            _SMALL_DECIMALS[high] = (b"-" if high >> 63 else b"", exponent)
    sign = "-" if high >> 63 else ""
    return _decimal_string(sign, str(coefficient), exponent)


_SMALL_DECIMALS: dict[int, tuple[bytes, int]] = {}
"""High words of finite decimals whose coefficient is their low word → (sign, exponent). At
most two signs times 12,288 exponents, whatever the data. ``write_wrapped`` writes the usual
ones from it directly."""


def _decimal_string(sign: str, digits: str, exponent: int) -> str:
    adjusted = exponent + len(digits) - 1
    if exponent > 0 or adjusted < -6:  # scientific notation: 1.2345E+8
        point = "." + digits[1:] if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{point}E{'+' if adjusted >= 0 else ''}{adjusted}"
    if exponent == 0:
        return sign + digits
    if len(digits) > -exponent:
        return f"{sign}{digits[:exponent]}.{digits[exponent:]}"
    return f"{sign}0.{'0' * (-exponent - len(digits))}{digits}"


def regex_options(flags: int | str) -> str:
    """BSON regex options, alphabetical, from Python ``re`` flags or an option string."""
    if isinstance(flags, str):
        return "".join(sorted(set(flags)))
    return "".join(letter for letter, bit in _REGEX_FLAGS if flags & bit)


def _regex(value: Regex[Any] | re.Pattern[Any]) -> JsonValue:
    pattern = value.pattern if isinstance(value.pattern, str) else value.pattern.decode()
    return {"$regularExpression": {"pattern": pattern, "options": regex_options(value.flags)}}


def _code(value: Code, encode: Callable[[Any], JsonValue]) -> JsonValue:
    if value.scope is None:
        return {"$code": str(value)}
    return {"$code": str(value), "$scope": encode(value.scope)}


def _dbref(
    value: DBRef,
    encode: Callable[[Mapping[str, Any]], JsonValue],
    escaped: Callable[[Mapping[str, Any]], JsonValue],
) -> JsonValue:
    """The fields of a DBRef as they are, never escaped: read back as a DBRef, as pymongo
    reads them (``_is_dbref``). pymongo also makes one of a ``$ref`` that is a Code (a ``str``
    to it), which JSON holds as ``{"$code": ...}`` and so reads back as a plain document: that
    one is written as the plain document it then is (escaped; the same BSON)."""
    database = value.database
    if type(value.collection) is str and (database is None or type(database) is str):
        return encode(value.as_doc())
    return escaped(value.as_doc())


def has_dollar_key(doc: Mapping[str, Any]) -> bool:
    """Whether a field name starts with ``$``. ``min`` runs in C: a ``$`` key sorts below ``%``,
    and letters, digits and ``_`` sort above it, so most documents are cleared by one call."""
    return min(doc, default="%") < "%" and any(key[:1] == "$" for key in doc)


class _Encoder:
    """Walks a document once, replacing what JSON cannot say with Extended JSON wrappers.

    Scalars orjson writes natively are checked inline (no call per value): this walk is the
    whole cost of encoding, so it is kept flat.
    """

    def __init__(self, *, canonical: bool, escape: bool = True) -> None:
        self.canonical = canonical
        self.escape = escape and not canonical
        simple: dict[type, Callable[[Any], JsonValue]] = {
            ObjectId: _object_id,
            Int64: _int64,
            datetime.datetime: _date,
            DatetimeMS: lambda v: {"$date": {"$numberLong": str(int(v))}},
            Decimal128: _decimal128,
            bytes: _bytes,
            Binary: _binary_json,
            uuid.UUID: lambda v: _binary(v.bytes, 4),
            Regex: _regex,
            re.Pattern: _regex,
            Timestamp: lambda v: {"$timestamp": {"t": v.time, "i": v.inc}},
            MinKey: lambda v: {"$minKey": 1},
            MaxKey: lambda v: {"$maxKey": 1},
            Code: lambda v: _code(v, self.value),
            DBRef: lambda v: _dbref(v, self.document, self.sub_document),
            dict: self.sub_document,
            SON: self.sub_document,
            list: self.array,
            tuple: self.array,
        }
        if canonical:
            simple[int] = self._int_canonical
            simple[float] = lambda v: {"$numberDouble": _double_text(v)}
        self.by_type = simple

    def value(self, value: Any) -> JsonValue:
        """One value, exactly as ``document`` converts each of its values."""
        kind = type(value)
        if kind is str or value is None or kind is bool:
            return value
        if kind is float and not self.canonical:
            return value if value - value == 0.0 else _non_finite(value)
        if kind is int and not self.canonical:
            return value if INT32_MIN <= value <= INT32_MAX else _long(value)
        return self._other(kind, value, self.by_type)

    def document(self, doc: Mapping[str, Any]) -> JsonValue:
        out: dict[str, JsonValue] = {}
        canonical = self.canonical
        by_type = self.by_type
        for key, value in doc.items():
            kind = type(value)
            if kind is str or value is None or kind is bool:
                out[key] = value
            elif kind is float and not canonical:
                out[key] = value if value - value == 0.0 else _non_finite(value)
            elif kind is int and not canonical:
                out[key] = value if INT32_MIN <= value <= INT32_MAX else _long(value)
            elif (encode := by_type.get(kind)) is not None:
                out[key] = encode(value)
            else:
                out[key] = self._other(kind, value, by_type)
        return out

    def sub_document(self, doc: Mapping[str, Any]) -> JsonValue:
        """A document inside a document; in snapshot mode escaped if a field name starts with
        ``$`` (canonical mode writes it as it is, as Extended JSON does, ambiguous or not)."""
        out = self.document(doc)
        if self.escape and has_dollar_key(doc):
            return {ESCAPE: out}
        return out

    def array(self, values: list[Any] | tuple[Any, ...]) -> JsonValue:
        out: list[JsonValue] = []
        append, canonical, by_type = out.append, self.canonical, self.by_type
        for value in values:  # the same tests as ``document``, kept inline for speed
            kind = type(value)
            if kind is str or value is None or kind is bool:
                append(value)
            elif kind is float and not canonical:
                append(value if value - value == 0.0 else _non_finite(value))
            elif kind is int and not canonical:
                append(value if INT32_MIN <= value <= INT32_MAX else _long(value))
            elif (encode := by_type.get(kind)) is not None:
                append(encode(value))
            else:
                append(self._other(kind, value, by_type))
        return out

    def _other(self, kind: type, value: Any, by_type: dict[type, Callable[[Any], Any]]) -> Any:
        encode = by_type.get(kind)
        if encode is not None:
            return encode(value)
        for base, encode in by_type.items():
            if isinstance(value, base) and base is not bool:
                return encode(value)
        raise EncodeError(f"cannot store a value of type {kind.__name__} in BSON")

    @staticmethod
    def _int_canonical(value: int) -> JsonValue:
        if INT32_MIN <= value <= INT32_MAX:
            return {"$numberInt": str(value)}
        return _long(value)


_SNAPSHOT = _Encoder(canonical=False)
_CANONICAL = _Encoder(canonical=True)
_BEFORE_ESCAPE = _Encoder(canonical=False, escape=False)


def written_before_escape(doc: Mapping[str, Any]) -> bytes:
    """Snapshot bytes as dbsync wrote them before the ``$document`` escape: such lines still
    read back to their documents (their ``$`` field names meant no wrapper), so they stay valid."""
    return orjson.dumps(_BEFORE_ESCAPE.document(doc))


def to_json_value(doc: Mapping[str, Any]) -> JsonValue:
    """The document as plain JSON values in snapshot mode (the lossless subset)."""
    if next(iter(doc), "")[:1] == "$":
        raise EncodeError(
            f"a document whose first field is {next(iter(doc))!r} would read back as a type "
            "wrapper: stores put _id first"
        )
    return _SNAPSHOT.document(doc)


def value_to_json(value: Any) -> JsonValue:
    """One BSON value as a plain JSON value in snapshot mode."""
    return _SNAPSHOT.value(value)


def encode_document(doc: Mapping[str, Any]) -> bytes:
    """Snapshot-mode bytes of a document: deterministic, one line, no trailing newline."""
    return orjson.dumps(to_json_value(doc))


def encode_canonical(doc: Mapping[str, Any]) -> bytes:
    """Canonical Extended JSON v2 bytes of a document (what ``dbsync dump`` prints)."""
    return orjson.dumps(_CANONICAL.document(doc))


def dumps_json(value: JsonValue) -> bytes:
    """Bytes of an already-encoded JSON value; the same bytes ``encode_document`` would give."""
    return orjson.dumps(value)


PLAIN_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
"""``orjson.dumps``'s options for a plain document (``encode_plain``): dates and subclasses
(Int64) are handed to ``write_wrapped``."""
_Fragment = orjson.Fragment  # JSON bytes orjson copies as they are: no dict to build and walk


_TYPE_BYTES = frozenset([*range(0x01, 0x14), 0x7F, 0xFF])  # what precedes a BSON field name
_NEXT_BYTES = _TYPE_BYTES | {0x00}  # what follows a value: the next type byte, or the end


def plain_bson(raw: bytes) -> bool:
    """Whether BSON bytes hold no ``$``-prefixed field name and no NaN or infinity.

    Then orjson can write the decoded document itself (``encode_plain``), with a wrapper only
    for the types JSON has not. A field name follows its type byte, so a ``$`` name shows as a
    type byte then ``$``; a NaN or an infinity ends in the bytes ``[f0-ff][7f|ff]`` (all
    exponent bits set), then comes a type byte or the end of its document. Each byte is first
    asked for with ``in`` (a memchr in C, cheaper than a ``find`` call), and only a byte that is
    there is looked at closely with ``find``: a ``$`` inside a string or a 0x7f byte of an
    ObjectId costs a second look, and a document that merely might hold one (bytes of a random
    binary) is asked of ``plain_document``, which is exact. (An int, not b"$": ``in`` a bytes
    needle is 6x slower, measured.)
    """
    if 0x24 in raw:
        at = raw.find(0x24, 5)
        while at != -1:
            if raw[at - 1] in _TYPE_BYTES:
                return False
            at = raw.find(0x24, at + 1)
    if 0x7F in raw and not _finite_after(raw, 0x7F):
        return False
    return 0xFF not in raw or _finite_after(raw, 0xFF)


def _finite_after(raw: bytes, top: int) -> bool:
    """Whether no ``top`` byte (0x7f or 0xff) of BSON bytes ends a NaN or an infinity."""
    at = raw.find(top, 5)
    while at != -1:
        if raw[at - 1] >= 0xF0 and raw[at + 1] in _NEXT_BYTES:
            return False
        at = raw.find(top, at + 1)
    return True


def plain_document(value: Any) -> bool:
    """What ``plain_bson`` looks for, told exactly from the decoded document: no ``$``-prefixed
    field name at any depth, no NaN or infinity.

    A call per value, so asked only of the bytes ``plain_bson`` could not clear: random binary
    bytes can look like a ``$`` name or a NaN, and the walk it spares costs several times more.
    """
    kind = type(value)
    if kind is float:
        return bool(value - value == 0.0)
    if kind is dict:
        return not has_dollar_key(value) and all(map(plain_document, value.values()))
    if kind is list:
        return all(map(plain_document, value))
    return True  # anything else orjson hands back to ``write_wrapped``, which writes as the walk


def write_wrapped(value: Any) -> JsonValue:
    """orjson's callback for the types it has not (and Int64, a subclass it is told to pass).

    The usual types are written here as ``orjson.Fragment`` bytes, the walk's wrappers as text,
    without a call per type: orjson calls this for every ObjectId, Int64, date, Decimal128 and
    binary, and it is most of what a document holding them costs (measured on the benchmark's
    mixed documents: 3 µs of 6 for their eight wrapped values). An ObjectId is the walk's own
    wrapper instead, a dict of its hex text: orjson writes that faster than the Fragment's
    bytes are formatted (measured: a PNL line, whose one wrapped value is its ``_id``, 5 %
    faster).

    The bytes of an ObjectId, the two words of a Decimal128 and a Binary's subtype are read
    from pymongo's own attributes (``_ObjectId__id``...), not through the public properties
    and ``__getstate__``: each of those is a Python call, a third of what such a value costs
    here (``test_record_line`` checks both read the same). Should a pymongo no longer have
    them, the ``AttributeError`` fails orjson's write and its callers write the document by
    the general walk (``encode_document``): the same bytes, at its cost.
    """
    kind = type(value)
    if kind is ObjectId:  # a dict of a str: orjson writes it faster than a Fragment is made
        return {"$oid": value._ObjectId__id.hex()}
    if kind is Int64:
        return _Fragment(b'{"$numberLong":"%d"}' % value)
    if kind is _DATETIME and value.tzinfo is None:  # as pymongo decodes: naive UTC
        since = value - _EPOCH  # naive_millis, inline: a call is most of what a date costs
        millis = since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000
        return _Fragment(b'{"$date":{"$numberLong":"%d"}}' % millis)
    if kind is Decimal128:
        small = _SMALL_DECIMALS.get(value._Decimal128__high)
        digits = b"%d" % value._Decimal128__low
        if small is not None and -len(digits) < small[1] < 0:  # 2209195.40
            sign, exponent = small
            return _Fragment(_DECIMAL_POINT % (sign, digits[:exponent], digits[exponent:]))
        return _Fragment(b'{"$numberDecimal":"%s"}' % decimal128_text(value).encode())
    if kind is bytes:
        text = _b2a_base64(value, newline=False)
        return _Fragment(b'{"$binary":{"base64":"%s","subType":"00"}}' % text)
    if kind is Binary:
        text = _b2a_base64(value, newline=False)
        return _Fragment(_BINARY_FORMATS[value._Binary__subtype] % text)
    return _SNAPSHOT.value(value)


_DATETIME, _b2a_base64 = datetime.datetime, binascii.b2a_base64
_DECIMAL_POINT = b'{"$numberDecimal":"%s%s.%s"}'
_BINARY_FORMATS = [b'{"$binary":{"base64":"%%s","subType":"%02x"}}' % n for n in range(256)]
"""The text of a binary of each subtype, its base64 left to fill in."""


def encode_plain(doc: Mapping[str, Any]) -> bytes:
    """``encode_document`` for a document ``plain_bson`` cleared, decoded as the stores decode
    (so every ``int`` is an Int32 and every ``float`` finite): the same bytes, written by orjson
    in C, which calls back only for ObjectIds, dates and the other wrapped types.

    The usual wrapped types come back as ``orjson.Fragment`` bytes, the same text the walk's
    wrappers give (tested on every document the property tests draw).
    """
    try:
        return orjson.dumps(doc, default=write_wrapped, option=PLAIN_OPTIONS)
    except orjson.JSONEncodeError:  # something orjson refuses (too deep...): the walk says what
        return encode_document(doc)


# ---------------------------------------------------------------- decoding: JSON value -> BSON

_DIGITS = re.compile(r"-?[0-9]+")
_DOUBLE_TEXT = re.compile(r"-?[0-9.]+([eE][-+]?[0-9]+)?")
_OID_TEXT = re.compile(r"[0-9a-fA-F]{24}")
_PLAIN_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]{1,6}))?")
_LOW_64 = (1 << 64) - 1


def _fail(path: str, problem: str) -> InvalidInput:
    where = path or "the document"
    return InvalidInput(f"{where}: {problem}")


def _int_text(text: Any, path: str, low: int, high: int, kind: str) -> int:
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        raise _fail(path, f"{kind} wants a string of digits, got {text!r}")
    number = int(text)
    if not low <= number <= high:
        raise _fail(path, f"{text} does not fit in {kind}")
    return number


def _number_int(text: Any, path: str) -> int:
    return _int_text(text, path, INT32_MIN, INT32_MAX, "$numberInt")


def _number_long(text: Any, path: str) -> Int64:
    return Int64(_int_text(text, path, INT64_MIN, INT64_MAX, "$numberLong"))


def _double(text: Any, path: str) -> float:
    specials = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    if isinstance(text, str) and text in specials:
        return specials[text]
    if not isinstance(text, str) or not _DOUBLE_TEXT.fullmatch(text):
        raise _fail(path, f"$numberDouble wants a number as a string, got {text!r}")
    return float(text)


def decimal128_from_text(text: str) -> Decimal128:
    """``Decimal128(text)``, 3.8 times faster for plain numbers such as ``-12.50`` or ``1E+3``.

    pymongo's constructor runs a ``decimal`` context and loops over bits in Python. A number
    of at most 34 digits whose exponent needs no clamping is exact in Decimal128: its bits
    are the coefficient and the biased exponent, as pymongo lays them out. Anything else
    (more digits, extreme exponents, NaN, Infinity, other spellings) goes to pymongo.
    """
    match = _PLAIN_DECIMAL.fullmatch(text)
    if match is not None:
        sign, whole, fraction, power = match.groups()
        coefficient = int(whole + (fraction or ""))
        exponent = int(power or 0) - len(fraction or "")
        if coefficient <= _DECIMAL_MAX_COEFFICIENT and -_DECIMAL_BIAS <= exponent <= 6111:
            high = (coefficient >> 64) | ((exponent + _DECIMAL_BIAS) << 49)
            bits = (high | (1 << 63) if sign else high, coefficient & _LOW_64)
            return Decimal128(bits)  # type: ignore[arg-type]  # (high, low): documented, untyped
    return Decimal128(text)


def _decimal(text: Any, path: str) -> Decimal128:
    if not isinstance(text, str):
        raise _fail(path, f"$numberDecimal wants a string, got {text!r}")
    try:
        return decimal128_from_text(text)
    except Exception as error:
        raise _fail(path, f"$numberDecimal {text!r} is not a Decimal128 ({error})") from None


def _from_millis(millis: int) -> datetime.datetime | DatetimeMS:
    try:
        return _EPOCH + millis * _ONE_MS
    except OverflowError:
        return DatetimeMS(millis)


_ISO_DATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})"
)


def _date_value(raw: Any, path: str) -> datetime.datetime | DatetimeMS:
    if isinstance(raw, dict) and list(raw) == ["$numberLong"]:
        return _from_millis(_int_text(raw["$numberLong"], path, INT64_MIN, INT64_MAX, "$date"))
    if isinstance(raw, str) and _ISO_DATE.fullmatch(raw):
        text = raw.replace("Z", "+00:00")
        try:
            aware = datetime.datetime.fromisoformat(_trim_fraction(text))
        except ValueError:
            raise _fail(path, f"$date {raw!r} is not a valid date") from None
        return _from_millis(_millis(aware))
    raise _fail(path, f"$date wants {{'$numberLong': ...}} or ISO-8601 text, got {raw!r}")


def _trim_fraction(text: str) -> str:
    """fromisoformat on Python 3.10 takes 3 or 6 fraction digits only; BSON keeps milliseconds."""
    match = re.search(r"\.(\d+)", text)
    if match is None:
        return text
    return text[: match.start(1)] + match.group(1)[:3].ljust(3, "0") + text[match.end(1) :]


def _binary_value(data: Any, subtype: Any, path: str) -> bytes | Binary:
    if not isinstance(data, str) or not isinstance(subtype, str):
        raise _fail(path, "$binary wants a base64 string and a hex subType string")
    try:
        raw = base64.b64decode(data, validate=True)
        kind = int(subtype, 16)
    except ValueError:
        raise _fail(path, f"$binary has bad base64 or subType {subtype!r}") from None
    if not 0 <= kind <= 255 or len(subtype) > 2:
        raise _fail(path, f"$binary subType {subtype!r} is not one byte")
    return raw if kind == 0 else Binary(raw, kind)


def _binary_wrapper(single: Any, path: str) -> Any:
    """``{"$binary": {"base64": ..., "subType": ...}}``; the legacy form has two keys."""
    if not isinstance(single, dict) or sorted(single) != ["base64", "subType"]:
        raise _fail(path, "$binary wants exactly 'base64' and 'subType'")
    return _binary_value(single["base64"], single["subType"], path)


def _oid_value(raw: Any, path: str) -> ObjectId:
    if not isinstance(raw, str) or not _OID_TEXT.fullmatch(raw):
        raise _fail(path, f"$oid wants 24 hex digits, got {raw!r}")
    return ObjectId(raw)


def _timestamp_value(raw: Any, path: str) -> Timestamp:
    if not isinstance(raw, dict) or sorted(raw) != ["i", "t"]:
        raise _fail(path, f"$timestamp wants {{'t': ..., 'i': ...}}, got {raw!r}")
    t, i = raw["t"], raw["i"]
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32 for x in (t, i)):
        raise _fail(path, f"$timestamp t and i must be unsigned 32-bit integers, got {raw!r}")
    return Timestamp(t, i)


def _regex_value(pattern: Any, options: Any, path: str) -> Regex[str]:
    if not isinstance(pattern, str) or not isinstance(options, str):
        raise _fail(path, "a regular expression wants a string pattern and string options")
    if set(options) - set("ilmsux"):
        raise _fail(path, f"regular expression options {options!r} are not among 'ilmsux'")
    return Regex(pattern, options)


_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def _uuid_value(raw: Any, path: str) -> Binary:
    if not isinstance(raw, str) or not _UUID_TEXT.fullmatch(raw):  # uuid.UUID takes any hyphens
        raise _fail(path, f"$uuid wants 8-4-4-4-12 hex digits, got {raw!r}")
    try:
        value: Binary = Binary(uuid.UUID(raw).bytes, 4)
    except (ValueError, TypeError, AttributeError):
        raise _fail(path, f"$uuid {raw!r} is not a UUID") from None
    return value


def _is_dbref(value: dict[str, Any]) -> bool:
    """pymongo's rule (and the corpus's): a string ``$ref``, an ``$id``, no ``$db`` or a string."""
    return (
        isinstance(value.get("$ref"), str)
        and "$id" in value
        and isinstance(value.get("$db", ""), str)
    )


class _Decoder:
    """Turns parsed JSON back into BSON values. Wrappers are recognised by their exact keys.

    ``escapes``: whether ``{"$document": {...}}`` is the snapshot's escape (snapshot lines) or
    an ordinary sub-document (Extended JSON from elsewhere, as ``dbsync import`` reads it).
    """

    def __init__(self, *, escapes: bool, notes: list[str] | None = None) -> None:
        self.escapes = escapes
        self.notes = notes  # where a deprecated type read as another is named, if anywhere

    def converted(self, path: str, what: str) -> None:
        if self.notes is not None:
            self.notes.append(f"field {path or '(top)'}: {what}")

    def value(self, value: JsonValue, path: str) -> Any:
        kind = type(value)
        if kind is str or kind is float or kind is bool or value is None:
            return value
        if kind is int:
            if INT32_MIN <= value <= INT32_MAX:
                return value
            if INT64_MIN <= value <= INT64_MAX:
                return Int64(value)
            raise _fail(path, f"integer {value} does not fit in a BSON Int64")
        if kind is list:
            return self.array(value, path)
        if kind is dict:
            return self.mapping(value, path)
        raise _fail(path, f"unexpected JSON value {value!r}")

    def array(self, value: list[Any], path: str) -> list[Any]:
        out = []
        for index, item in enumerate(value):
            kind = type(item)
            if kind is str or kind is float or kind is bool or item is None:
                out.append(item)  # as ``value`` returns it, without building its path
            else:
                out.append(self.value(item, f"{path}.{index}" if path else str(index)))
        return out

    def mapping(self, value: dict[str, Any], path: str) -> Any:
        first = next(iter(value), "")
        if not first.startswith("$"):
            return self.document(value, path)
        simple = _SIMPLE_WRAPPERS.get(first) if len(value) == 1 else None
        if simple is not None:  # what ``wrapper`` does, without sorting keys and matching
            return simple(value[first], path)
        if first == ESCAPE and self.escapes and len(value) == 1:
            inner = value[first]
            if not isinstance(inner, dict):
                raise _fail(path, f"{ESCAPE} wants a document, got {inner!r}")
            return self.document(inner, path)
        if _is_dbref(value):  # before wrappers: a DBRef's other fields may have any name
            return self.dbref(value, path)
        if not WRAPPER_KEYS.isdisjoint(value):
            return self.wrapper(value, path)
        if "$regex" in value and _legacy_regex(value):
            return _regex_value(value["$regex"], value.get("$options", ""), path)
        return self.document(value, path)

    def document(self, value: dict[str, Any], path: str) -> Document:
        out = {}
        for key, item in value.items():
            kind = type(item)
            if kind is str or kind is float or kind is bool or item is None:
                out[key] = item  # as ``value`` returns it, without building its path
            else:
                out[key] = self.value(item, f"{path}.{key}" if path else key)
        return out

    def dbref(self, value: dict[str, Any], path: str) -> DBRef:
        extra = {
            k: self.value(v, f"{path}.{k}")
            for k, v in value.items()
            if k not in ("$ref", "$id", "$db")
        }
        identifier = self.value(value["$id"], f"{path}.$id")
        return DBRef(value["$ref"], identifier, value.get("$db"), **extra)

    def wrapper(self, value: dict[str, Any], path: str) -> Any:
        """A JSON object with a wrapper's key: exactly one of the wrapper forms, or refused."""
        keys = sorted(value)
        single = value[keys[0]] if len(keys) == 1 else None
        match keys:
            case ["$oid"]:
                return _oid_value(single, path)
            case ["$numberInt"]:
                return _number_int(single, path)
            case ["$numberLong"]:
                return _number_long(single, path)
            case ["$numberDouble"]:
                return _double(single, path)
            case ["$numberDecimal"]:
                return _decimal(single, path)
            case ["$date"]:
                return _date_value(single, path)
            case ["$binary"]:
                return _binary_wrapper(single, path)
            case ["$binary", "$type"]:
                return _binary_value(value["$binary"], value["$type"], path)
            case ["$uuid"]:
                return _uuid_value(single, path)
            case ["$regularExpression"]:
                if not isinstance(single, dict) or sorted(single) != ["options", "pattern"]:
                    raise _fail(path, "$regularExpression wants exactly 'pattern' and 'options'")
                return _regex_value(single["pattern"], single["options"], path)
            case ["$timestamp"]:
                return _timestamp_value(single, path)
            case ["$minKey"] | ["$maxKey"]:
                if type(single) is not int or single != 1:
                    raise _fail(path, f"{keys[0]} wants the integer 1, got {single!r}")
                return MinKey() if keys[0] == "$minKey" else MaxKey()
            case ["$code"]:
                if not isinstance(single, str):
                    raise _fail(path, "$code wants a string")
                return Code(single)
            case ["$code", "$scope"]:
                code, scope = value["$code"], value["$scope"]
                if not isinstance(code, str) or not isinstance(scope, dict):
                    raise _fail(path, "$code with $scope wants a string and a document")
                return Code(code, self.document(scope, f"{path}.$scope"))
            case ["$symbol"]:
                if not isinstance(single, str):
                    raise _fail(path, "$symbol wants a string")
                self.converted(path, "Symbol became a string")
                return single
            case ["$undefined"]:
                if single is not True:
                    raise _fail(path, f"$undefined wants true, got {single!r}")
                self.converted(path, "Undefined became null")
                return None
            case ["$dbPointer"]:
                pointer = self.db_pointer(single, path)
                self.converted(path, "DBPointer became a DBRef")
                return pointer
        wrappers = sorted(WRAPPER_KEYS.intersection(value))
        raise _fail(
            path,
            f"{', '.join(wrappers)} beside {', '.join(k for k in keys if k not in wrappers)}: "
            "a type wrapper takes no other field",
        )

    def db_pointer(self, single: Any, path: str) -> DBRef:
        if not isinstance(single, dict) or sorted(single) != ["$id", "$ref"]:
            raise _fail(path, "$dbPointer wants exactly '$ref' and '$id'")
        identifier = self.value(single["$id"], f"{path}.$id")
        if not isinstance(single["$ref"], str) or type(identifier) is not ObjectId:
            raise _fail(path, "$dbPointer wants a string $ref and an ObjectId $id")
        return DBRef(single["$ref"], identifier)


def _legacy_regex(value: dict[str, Any]) -> bool:
    """``{"$regex": "...", "$options": "..."}`` (mongoexport's legacy form) is a regex; a query
    such as ``{"$regex": {...}}`` or one with more operators is an ordinary document."""
    if not set(value) <= {"$regex", "$options"}:
        return False
    return isinstance(value["$regex"], str) and isinstance(value.get("$options", ""), str)


_SIMPLE_WRAPPERS: dict[str, Callable[[Any, str], Any]] = {
    "$oid": _oid_value,
    "$numberInt": _number_int,
    "$numberLong": _number_long,
    "$numberDouble": _double,
    "$numberDecimal": _decimal,
    "$date": _date_value,
    "$binary": _binary_wrapper,
}
_DECODER = _Decoder(escapes=True)
_FOREIGN = _Decoder(escapes=False)


def from_json_value(value: JsonValue, path: str = "") -> Any:
    """A value of a snapshot line (escapes undone) as BSON values; ``InvalidInput`` if it lies."""
    return _DECODER.value(value, path)


def from_extended_json(
    value: dict[str, Any], path: str = "", notes: list[str] | None = None
) -> Document:
    """A document of Extended JSON from elsewhere (any mode, ``$document`` an ordinary field).

    The top level is always a document: its ``$``-prefixed field names are field names.
    ``notes`` receives one line per deprecated type read as another (``$symbol``...): no
    store keeps those types.
    """
    decoder = _FOREIGN if notes is None else _Decoder(escapes=False, notes=notes)
    return decoder.document(value, path)


def check_storable(doc: Document) -> None:
    """Refuse a document no store can hold (a NUL in a field name or a regex...), before any
    write: BSON's own encoder is the judge."""
    try:
        bson.encode(doc)
    except (InvalidDocument, OverflowError, TypeError) as error:
        raise InvalidInput(f"cannot be stored in BSON: {error}") from None


def decode_document(data: bytes | str) -> Document:
    """One Extended JSON document from elsewhere (any mode) as a pymongo-style document."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"not valid JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise InvalidInput(f"a document must be a JSON object, got {type(parsed).__name__}")
    return from_extended_json(parsed)
