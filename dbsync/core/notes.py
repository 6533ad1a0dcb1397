"""Records that lack what the collection's rules rely on, counted so that dbsync can say so.

A record missing a key field (or holding null there) is keyed by null, the same way on every
asset; two such records clash like any duplicate key and are refused. A record without a
readable timestamp loses every conflict to a dated version (then the more complete version
wins, then the larger hash). Both behaviours are deterministic; these notes make them visible.

A collection whose rules name no timestamp, while most of its records carry a date (a BSON date,
or ISO-8601 text) in one field, gets that field proposed, with the line to add to dbsync.toml:
``init`` proposes one only for data that exists when it runs, and without it the first
conflict is decided by completeness or hash. The proposal is a ``OnceNote``: the CLI says it
on the collection's first export only.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from dbsync.core import extjson
from dbsync.core.conflict import TIMESTAMP_NAMES, timestamp_millis
from dbsync.core.deprecated import converted_fields
from dbsync.core.ordering import SortKey, sort_key
from dbsync.core.rules import Rules

EXAMPLES = 3
_NULL = (2,)  # sort_value(None): the key value of a missing or null field


@dataclass
class _Tally:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, identifier: Any) -> None:
        self.add_shown(orjson.dumps(identifier).decode())

    def add_shown(self, text: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)

    def shown(self) -> str:
        more = ", ..." if self.count > len(self.examples) else ""
        return ", ".join(self.examples) + more


DATES_SAMPLED = 1000
"""Records an export looks at for a timestamp field (its first): enough to see "most"."""
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class OnceNote(str):
    """A suggestion rather than a finding: said on a collection's first export only, since
    every later export would repeat it."""


def _dated(value: Any) -> bool:
    if isinstance(value, datetime.datetime):
        return True
    return (
        isinstance(value, str)
        and bool(_ISO_DATE.match(value))
        and (timestamp_millis(value) is not None)
    )


@dataclass
class _DateFields:
    """Per top-level field, how many of the first ``DATES_SAMPLED`` records hold a date in it."""

    seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def see(self, document: Mapping[str, Any]) -> None:
        if self.seen >= DATES_SAMPLED:
            return
        self.seen += 1
        for name, value in document.items():
            if name != "_id" and _dated(value):
                self.counts[name] = self.counts.get(name, 0) + 1

    def obvious(self) -> str | None:
        """The field dated in most records read: a usual name first, else the most dated."""
        most = [name for name, count in self.counts.items() if count * 2 > self.seen]
        usual = [name for name in TIMESTAMP_NAMES if name in most]
        if usual or not most:
            return usual[0] if usual else None
        return max(most, key=self.counts.__getitem__)


class RecordNotes:
    """Counts, for one collection, records with a null key field or no readable timestamp."""

    def __init__(self, collection: str, rules: Rules, what: str = "record(s)") -> None:
        self.collection, self.rules, self.what = collection, rules, what
        self.null_key = _Tally()
        self.no_timestamp = _Tally()
        self.converted = _Tally()  # examples: "_id 5, field a: Symbol became a string"
        self.dates = _DateFields()

    @property
    def wanted(self) -> bool:
        """Whether there is anything to look for (a natural key, or a timestamp field)."""
        return self.rules.key != ("_id",) or self.rules.timestamp is not None

    def see(self, key: SortKey, identifier: Any, stamp: Any) -> None:
        """One record: its sort key, its ``_id`` and its timestamp field, as JSON values."""
        if _NULL in key:
            self.null_key.add(identifier)
        if self.rules.timestamp is not None and timestamp_millis(stamp) is None:
            self.no_timestamp.add(identifier)

    def see_document(self, document: Mapping[str, Any]) -> None:
        """One record as plain JSON values (Extended JSON wrappers kept)."""
        stamp = document.get(self.rules.timestamp) if self.rules.timestamp else None
        self.see(sort_key(document, self.rules.key), document.get("_id"), stamp)

    def see_bson(self, document: Mapping[str, Any], key: SortKey) -> None:
        """One record as the database returns it (only the two fields are converted)."""
        stamp = document.get(self.rules.timestamp) if self.rules.timestamp else None
        identifier = extjson.value_to_json(document.get("_id"))
        self.see(key, identifier, None if stamp is None else extjson.value_to_json(stamp))

    def see_raw(self, raw: bytes, document: Mapping[str, Any]) -> None:
        """One record as stored (``raw``) and as read: a deprecated BSON type read as another,
        and its dated fields when the rules name no timestamp."""
        if self.rules.timestamp is None:
            self.dates.see(document)
        for path, what in converted_fields(raw, document):
            identifier = orjson.dumps(extjson.value_to_json(document.get("_id"))).decode()
            self.converted.add_shown(f"_id {identifier}, field {path}: {what}")

    def messages(self) -> list[str]:
        found = []
        if self.converted.count:
            found.append(
                f"{self.collection}: {self.converted.count} value(s) of BSON's deprecated types "
                f"were exported as what pymongo reads them as ({self.converted.shown()}); the "
                "stores cannot keep these types, so a merge writes the converted value"
            )
        if self.null_key.count:
            fields = ", ".join(self.rules.key)
            found.append(
                f"{self.collection}: {self.null_key.count} {self.what} lack a key field "
                f"({fields}) or hold null there (_id {self.null_key.shown()}): they are keyed "
                "by null, the same way on every asset"
            )
        if self.no_timestamp.count:
            found.append(
                f"{self.collection}: {self.no_timestamp.count} {self.what} have no readable "
                f"'{self.rules.timestamp}' timestamp (_id {self.no_timestamp.shown()}): in a "
                "conflict they lose to any dated version"
            )
        proposed = self.dates.obvious() if self.rules.timestamp is None else None
        if proposed is not None:
            found.append(self._timestamp_advice(proposed))
        return found

    def _timestamp_advice(self, name: str) -> OnceNote:
        dated, seen, collection = self.dates.counts[name], self.dates.seen, self.collection
        return OnceNote(
            f"{collection}: {dated} of {seen} records read carry a date in '{name}', and no "
            f"timestamp is configured for {collection}, so a conflict is decided by the more "
            f"complete version or the larger hash, not by the newer one: if '{name}' says when "
            f'a version was written, add timestamp = "{name}" under [collections.{collection}] '
            "in dbsync.toml"
        )
