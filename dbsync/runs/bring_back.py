"""Bring an old version of one record back as the current one (``conflicts restore``, ``log
--restore``): the one service both restores share.

The version goes in through the ordinary merge, three-way: the base is the record as the
database holds it now (or nothing, for a deleted record) and the incoming side is the old
version. Only the incoming side changed, so it is taken whatever the conflict rule would say,
and the merge does what every merge does: a backup first, a report, a rollback on failure.

Its timestamp field (the collection's ``timestamp`` rule) is set to now, in the type the
version already uses, so that newest-wins carries it to every other asset at their next sync,
even one that edited the record meanwhile.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dbsync.config import Config
from dbsync.core import extjson
from dbsync.core.ordering import JsonDoc, describe_key, sort_key
from dbsync.core.report import MergeReport
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, line_sort_key, record_line, snapshot_filename
from dbsync.edges.files import scratch_folder
from dbsync.edges.parts import collection_files
from dbsync.edges.snapshot_files import write_snapshot
from dbsync.edges.store import Store
from dbsync.errors import InvalidInput
from dbsync.runs import merge as merge_service
from dbsync.runs.export import export

_SECONDS_LIMIT = 100_000_000_000  # as dbsync.core.conflict reads epoch numbers: below, seconds


@dataclass(frozen=True)
class BroughtBack:
    collection: str
    key: str
    document: JsonDoc
    report: MergeReport
    timestamp_field: str | None
    """The field set to now; None when it was not (``unstamped`` says why)."""
    timestamp_value: Any = None
    unstamped: str | None = None


def stamped_now(value: Any, now: datetime.datetime) -> Any:
    """``now`` written the way ``value`` (the version's timestamp) is written: a BSON date, an
    ISO-8601 text (with or without a zone, as it was), epoch seconds or milliseconds."""
    millis = int(now.timestamp() * 1000)
    if isinstance(value, str):
        text = now.replace(tzinfo=None).isoformat(timespec="milliseconds")
        if value.endswith("Z"):
            return text + "Z"
        return text + ("+00:00" if value[-6:-5] in ("+", "-") and value[-3:-2] == ":" else "")
    if isinstance(value, bool) or value is None:
        return {"$date": {"$numberLong": str(millis)}}
    if isinstance(value, int):
        return millis // 1000 if abs(value) < _SECONDS_LIMIT else millis
    if isinstance(value, float):
        return round(now.timestamp(), 3)
    if isinstance(value, dict) and "$numberLong" in value:
        number = int(value["$numberLong"])
        return {"$numberLong": str(millis // 1000 if abs(number) < _SECONDS_LIMIT else millis)}
    return {"$date": {"$numberLong": str(millis)}}


def unstamped_reason(collection: str, rules: Rules) -> str | None:
    """Why a brought-back version keeps its timestamp as it was, or None (it is set to now)."""
    if rules.timestamp is None:
        return f"{collection} has no timestamp configured"
    if rules.timestamp in rules.key:  # a new timestamp would make it another record
        return f"{collection}'s timestamp field {rules.timestamp} is part of its key"
    return None


def with_timestamp(document: JsonDoc, rules: Rules, now: datetime.datetime) -> JsonDoc:
    """The document with its timestamp field set to now, when the rules allow it."""
    if rules.timestamp is None or rules.timestamp in rules.key:
        return dict(document)
    return {**document, rules.timestamp: stamped_now(document.get(rules.timestamp), now)}


def snapshot_line(document: JsonDoc) -> bytes:
    """The record line of a document given as snapshot JSON, re-encoded the way export would."""
    decoded = extjson.from_json_value(document)
    if not isinstance(decoded, dict):
        raise InvalidInput("the version to bring back is not a document")
    return record_line(extjson.encode_document(decoded))


def current_line(
    config: Config, store: Store, collection: str, folder: Path, key: Any
) -> bytes | None:
    """The record with this sort key as the database holds it now (exported to ``folder``)."""
    if collection not in store.collection_names():  # dropped since: the record is new again
        return None
    export(config, store, collections=[collection], target_dir=folder)
    files = collection_files(folder).get(collection)
    if files is None:
        return None
    fields = config.rules(collection).key
    for line in files.lines():
        found = line_sort_key(line, fields)
        if found == key:
            return line
        if found > key:
            return None
    return None


def bring_back(
    config: Config,
    store: Store,
    collection: str,
    document: JsonDoc,
    label: str,
    now: datetime.datetime | None = None,
) -> BroughtBack:
    """Make ``document`` the current version of its record (see the module docstring)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    rules = config.rules(collection)
    restored = with_timestamp(document, rules, now)
    line = snapshot_line(restored)
    key = sort_key(restored, rules.key)
    with scratch_folder("bring-back") as scratch:
        work = Path(scratch)
        base = current_line(config, store, collection, work / "now", key)
        header = Header(collection, rules)
        write_snapshot(work / "base.jsonl", header, [] if base is None else [base])
        incoming = work / label.replace(" ", "-") / snapshot_filename(collection)
        incoming.parent.mkdir()
        write_snapshot(incoming, header, [line])
        options = merge_service.MergeOptions(base=work / "base.jsonl", collections=[collection])
        report = merge_service.merge_snapshot(config, store, incoming, options)
    reason = unstamped_reason(collection, rules)
    field = None if reason else rules.timestamp
    stamp = restored.get(field) if field else None
    shown = describe_key(restored, rules.key)
    return BroughtBack(collection, shown, restored, report, field, stamp, reason)


def spreading_note(result: BroughtBack) -> str:
    """How the brought-back version reaches the other assets, and what to know about it."""
    if result.timestamp_field is not None:
        value = orjson.dumps(result.timestamp_value).decode()
        return (
            f"its timestamp field {result.timestamp_field} is set to now ({value}): "
            "newest-wins carries it to every other asset at the next sync "
            "(dbsync sync, or export, commit and push)"
        )
    fix = (
        f'; set timestamp = "FIELD" under [collections.{result.collection}] in dbsync.toml'
        if "no timestamp" in (result.unstamped or "")
        else ""
    )
    return (
        f"{result.unstamped}: the version was brought back with its timestamp as it was. It "
        "reaches the other assets with your next sync (export, commit, push); but if another "
        "asset edits this record meanwhile, that conflict is decided by completeness and "
        f"content hash, not by time{fix}"
    )
