"""The conflict rule: which of two versions of one record wins, and what the winner keeps.

Pure functions over record lines (see ``snapshot``). The rule never looks at which side is
local, so every asset picks the same winner:

1. the newer timestamp (the collection's ``timestamp`` field in UTC milliseconds, whatever its
   type: BSON date, ISO-8601 string, epoch seconds or milliseconds; missing or unreadable is
   the oldest);
2. then the more complete version (more non-empty leaf fields; null, "", [] and {} are empty);
3. then the larger content hash.

Fields listed in ``preserve`` that the winner lacks or leaves empty are taken from the loser.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from dbsync.core import extjson
from dbsync.core.ordering import JsonDoc
from dbsync.core.rules import Rules
from dbsync.core.snapshot import line_document, line_hash, record_line

NEWER = "newer timestamp"
MORE_COMPLETE = "more complete"
LARGER_HASH = "larger content hash"

_SECONDS_LIMIT = 100_000_000_000  # epoch numbers below this are seconds (until year 5138)


def _epoch_number(number: float | Decimal) -> int:
    if -_SECONDS_LIMIT < number < _SECONDS_LIMIT:
        number = number * 1000
    return int(number)


def _from_text(text: str) -> int | None:
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        number = None
    if number is not None:
        return _epoch_number(number) if number.is_finite() else None
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000)


def timestamp_millis(value: Any) -> int | None:
    """A timestamp field's value (plain JSON / Extended JSON) in UTC milliseconds, or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return _epoch_number(value) if value - value == 0 else None
    if isinstance(value, str):
        return _from_text(value)
    if not isinstance(value, dict) or len(value) != 1:
        return None
    ((name, inner),) = value.items()
    if name == "$date":
        if isinstance(inner, dict) and "$numberLong" in inner:
            return int(inner["$numberLong"])
        return timestamp_millis(inner) if isinstance(inner, (str, int)) else None
    if name in ("$numberLong", "$numberInt", "$numberDouble", "$numberDecimal"):
        return _from_text(inner) if isinstance(inner, str) and inner[-1:].isdigit() else None
    if name == "$timestamp" and isinstance(inner, dict):
        return int(inner.get("t", 0)) * 1000
    return None


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def completeness(value: Any) -> int:
    """Non-empty leaf fields; an Extended JSON wrapper (``{"$date": ...}``) is one leaf."""
    if isinstance(value, dict):
        if value and next(iter(value)).startswith("$"):
            return 1
        return sum(completeness(item) for item in value.values())
    if isinstance(value, list):
        return sum(completeness(item) for item in value)
    return 0 if is_empty(value) else 1


def rank(doc: JsonDoc, digest: str, rules: Rules) -> tuple[Any, ...]:
    """The order in which versions win; larger wins."""
    stamp = timestamp_millis(doc.get(rules.timestamp)) if rules.timestamp else None
    return (stamp is not None, stamp or 0, completeness(doc), digest)


def deciding_rule(winner: tuple[Any, ...], loser: tuple[Any, ...]) -> str:
    if winner[:2] != loser[:2]:
        return NEWER
    return MORE_COMPLETE if winner[2] != loser[2] else LARGER_HASH


@dataclass(frozen=True)
class Resolution:
    """The outcome of a conflict: the line to keep, the losing line, and the rule that decided."""

    line: bytes
    winner: bytes
    loser: bytes
    rule: str
    preserved: tuple[str, ...] = ()


def fill_preserved(winner: JsonDoc, loser: JsonDoc, fields: Sequence[str]) -> tuple[str, ...]:
    """Copy into ``winner`` the ``fields`` it lacks or leaves empty but ``loser`` has."""
    taken = []
    for name in fields:
        if is_empty(winner.get(name)) and not is_empty(loser.get(name)):
            winner[name] = loser[name]
            taken.append(name)
    return tuple(taken)


def resolve(first: bytes, second: bytes, rules: Rules) -> Resolution:
    """Decide between two differing versions (record lines) of one record. Symmetric."""
    docs = line_document(first), line_document(second)
    ranks = rank(docs[0], line_hash(first), rules), rank(docs[1], line_hash(second), rules)
    won = 0 if ranks[0] > ranks[1] else 1
    lines = (first, second)
    winner, loser = lines[won], lines[1 - won]
    rule = deciding_rule(ranks[won], ranks[1 - won])
    kept = docs[won]
    taken = fill_preserved(kept, docs[1 - won], rules.preserve)
    line = record_line(extjson.dumps_json(kept)) if taken else winner
    return Resolution(line, winner, loser, rule, taken)


TIMESTAMP_NAMES = ("updated_at", "updatedAt", "modified", "timestamp")
"""Field names that say when a version was written, in the order ``obvious_timestamp`` tries."""


def _is_date(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "$date" in value


def obvious_timestamp(documents: Iterable[JsonDoc]) -> str | None:
    """The field that obviously says which version is newer, if one does: a usual name
    (``TIMESTAMP_NAMES``) readable as a time in every document, else the one date field
    present in every document. None when there is none, or more than one date field.
    One pass over ``documents``: they may be streamed."""
    names = list(TIMESTAMP_NAMES)  # the usual names still readable in every document
    dates: list[str] | None = None  # the first document's date fields still in every document
    for document in documents:
        names = [name for name in names if timestamp_millis(document.get(name)) is not None]
        if dates is None:
            dates = [name for name, value in document.items() if _is_date(value)]
        else:
            dates = [name for name in dates if _is_date(document.get(name))]
    if dates is None:
        return None
    if names:
        return names[0]
    return dates[0] if len(dates) == 1 else None
