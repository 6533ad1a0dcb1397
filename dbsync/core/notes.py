"""Records that lack what the collection's rules rely on, counted so that dbsync can say so.

A record missing a key field (or holding null there) is keyed by null, the same way on every
asset; two such records clash like any duplicate key and are refused. A record without a
readable timestamp loses every conflict to a dated version (then the more complete version
wins, then the larger hash). Both behaviours are deterministic; these notes make them visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from dbsync.core import extjson
from dbsync.core.conflict import timestamp_millis
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


class RecordNotes:
    """Counts, for one collection, records with a null key field or no readable timestamp."""

    def __init__(self, collection: str, rules: Rules, what: str = "record(s)") -> None:
        self.collection, self.rules, self.what = collection, rules, what
        self.null_key = _Tally()
        self.no_timestamp = _Tally()
        self.converted = _Tally()  # examples: "_id 5, field a: Symbol became a string"

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
        """One record as stored (``raw``) and as read: a deprecated BSON type read as another."""
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
        return found
