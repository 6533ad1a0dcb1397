"""``dbsync diff A B``: record-level differences between two snapshots (or ``db``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dbsync.config import Config
from dbsync.core.merge import align
from dbsync.core.ordering import key_values
from dbsync.core.rules import Rules
from dbsync.core.snapshot import line_document
from dbsync.edges.files import scratch_folder
from dbsync.edges.sources import index_sections
from dbsync.edges.store import Store
from dbsync.errors import UsageError
from dbsync.runs.export import export

DATABASE = "db"


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class RecordChange:
    """``added``, ``removed`` or ``changed``, with the key and the documents involved."""

    collection: str
    kind: str
    key: dict[str, Any]
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    fields: list[FieldChange] = field(default_factory=list)


def field_changes(old: dict[str, Any], new: dict[str, Any]) -> list[FieldChange]:
    """Top-level fields that differ, in the new document's order, then removed fields."""
    missing = object()
    names = list(new) + [name for name in old if name not in new]
    changes = []
    for name in names:
        before, after = old.get(name, missing), new.get(name, missing)
        if before != after or type(before) is not type(after):
            changes.append(
                FieldChange(
                    name, None if before is missing else before, None if after is missing else after
                )
            )
    return changes


def diff_collection(
    collection: str, rules: Rules, old: Iterator[bytes], new: Iterator[bytes]
) -> Iterator[RecordChange]:
    for before, after in align([old, new], rules.key):
        if before == after:
            continue
        old_doc = line_document(before) if before is not None else None
        new_doc = line_document(after) if after is not None else None
        sample = new_doc if new_doc is not None else old_doc
        assert sample is not None
        key = dict(zip(rules.key, key_values(sample, rules.key), strict=True))
        if old_doc is None:
            yield RecordChange(collection, "added", key, None, new_doc)
        elif new_doc is None:
            yield RecordChange(collection, "removed", key, old_doc, None)
        else:
            changes = field_changes(old_doc, new_doc)
            yield RecordChange(collection, "changed", key, old_doc, new_doc, changes)


def diff_paths(old: Path, new: Path) -> Iterator[RecordChange]:
    """Every record that differs between two snapshot files or directories."""
    before, after = index_sections(old), index_sections(new)
    for collection in sorted(set(before) | set(after)):
        rules = (after.get(collection) or before[collection]).header.rules
        old_lines = before[collection].lines() if collection in before else iter(())
        new_lines = after[collection].lines() if collection in after else iter(())
        yield from diff_collection(collection, rules, old_lines, new_lines)


def diff(
    config: Config, open_store: Callable[[], Store], first: str, second: str
) -> Iterator[RecordChange]:
    """``db`` on either side means the live database, exported to a temporary folder first."""
    if first == DATABASE and second == DATABASE:
        raise UsageError("give at least one snapshot path: 'db' against 'db' never differs")
    with scratch_folder("diff") as scratch:
        exported = Path(scratch)
        if DATABASE in (first, second):
            with open_store() as store:
                export(config, store, target_dir=exported)
        old, new = (exported if side == DATABASE else Path(side) for side in (first, second))
        yield from diff_paths(old, new)


def change_json(change: RecordChange) -> dict[str, Any]:
    return {
        "collection": change.collection,
        "change": change.kind,
        "key": change.key,
        "old": change.old,
        "new": change.new,
        "fields": [{"field": f.field, "old": f.old, "new": f.new} for f in change.fields],
    }


def change_text(change: RecordChange) -> str:
    """``+``, ``-`` or ``~`` and the key; a changed record lists its fields, old → new."""
    key = ", ".join(f"{name}={_json(value)}" for name, value in change.key.items())
    if change.kind == "added":
        return f"+ {change.collection} {key}: {_json(change.new)}"
    if change.kind == "removed":
        return f"- {change.collection} {key}: {_json(change.old)}"
    lines = [f"~ {change.collection} {key}"]
    lines += [f"    {f.field}: {_json(f.old)} → {_json(f.new)}" for f in change.fields]
    return "\n".join(lines)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
