"""The plain three-way merge of snapshot files, the baseline of dbsync's merge and merge driver.

A plain implementation with ``json`` and ``hashlib``, written the way a competent engineer would
write it without dbsync's tricks: load the three snapshot files into dicts by key (``json.loads``
of every line, a ``sha256`` of every record to see what changed), walk the sorted union of keys,
decide with the same rules, write the result. It keeps each line's bytes rather than its parsed
document, and parses again only the records in conflict. The conflict rule's last tie-break is
"the larger content hash", which the format defines as the record's ``h``: the plain merge reads
it from the line, it does not recompute it.

Only the standard library: ``python -m bench.plain BASE OURS THEIRS OUTPUT`` is the plain merge
as a process of its own, next to ``dbsync merge-driver`` (``bench.pull``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Entry = tuple[bytes, bytes]  # (sha256 of the line, the line)


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def load_snapshot(path: Path) -> tuple[dict[str, Any], dict[Any, Entry]]:
    """The header and the records of a snapshot file, by key; checks the trailer's count."""
    records: dict[Any, Entry] = {}
    trailer: dict[str, Any] = {}
    with path.open("rb") as handle:
        header = json.loads(handle.readline())
        key = header["key"]
        for line in handle:
            record = json.loads(line)
            if "end" in record:
                trailer = record
                break
            doc = record["d"]
            record_key = tuple(_hashable(doc.get(name)) for name in key)
            if record_key in records:
                raise ValueError(f"{path}: duplicate key {record_key}")
            records[record_key] = (hashlib.sha256(line).digest(), line)
    if trailer.get("count") != len(records):
        raise ValueError(f"{path}: the trailer does not count {len(records)} records")
    return header, records


def _millis(value: Any) -> int | None:
    """A timestamp in UTC milliseconds: ISO text, epoch seconds or milliseconds, ``$date``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return int(value * 1000 if abs(value) < 100_000_000_000 else value)
    if isinstance(value, dict) and "$date" in value:
        inner = value["$date"]
        return int(inner["$numberLong"]) if isinstance(inner, dict) else _millis(inner)
    if isinstance(value, str):
        try:
            return _millis(float(value))
        except ValueError:
            pass
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return int(moment.timestamp() * 1000)
    return None


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _completeness(value: Any) -> int:
    if isinstance(value, dict):
        if value and next(iter(value)).startswith("$"):
            return 1
        return sum(_completeness(item) for item in value.values())
    if isinstance(value, list):
        return sum(_completeness(item) for item in value)
    return 0 if _empty(value) else 1


def _resolve(first: bytes, second: bytes, header: dict[str, Any]) -> bytes:
    """The line that wins between two versions of a record, with ``preserve`` filled in."""
    records = json.loads(first), json.loads(second)
    stamp_field = header["timestamp"]

    def rank(record: dict[str, Any]) -> tuple[Any, ...]:
        stamp = _millis(record["d"].get(stamp_field)) if stamp_field else None
        return (stamp is not None, stamp or 0, _completeness(record["d"]), record["h"])

    won = 0 if rank(records[0]) > rank(records[1]) else 1
    winner, loser = records[won]["d"], records[1 - won]["d"]
    taken = False
    for name in header["preserve"]:
        if _empty(winner.get(name)) and not _empty(loser.get(name)):
            winner[name] = loser[name]
            taken = True
    if not taken:
        return (first, second)[won]
    body = json.dumps(winner, separators=(",", ":"), ensure_ascii=False).encode()
    digest = hashlib.sha256(body).hexdigest()
    return b'{"h":"' + digest.encode() + b'","d":' + body + b"}\n"


@dataclass
class PlainResult:
    records: int = 0
    conflicts: int = 0
    writes: int = 0  # keys whose result differs from ours: what applying must write
    changed_ids: list[str] = field(default_factory=list)


def plain_merge(base: Path, ours: Path, theirs: Path, output: Path) -> PlainResult:
    """Three-way merge of three snapshot files into ``output``, by the plain method."""
    header, ours_records = load_snapshot(ours)
    base_header, base_records = load_snapshot(base)
    theirs_header, theirs_records = load_snapshot(theirs)
    if not base_header["key"] == header["key"] == theirs_header["key"]:
        raise ValueError("the three snapshots are not keyed alike")
    result = PlainResult()
    digest = hashlib.sha256()
    keys = sorted(base_records.keys() | ours_records.keys() | theirs_records.keys())
    with output.open("wb") as handle:
        handle.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
        for record_key in keys:
            b, o, t = (
                records.get(record_key) for records in (base_records, ours_records, theirs_records)
            )
            line = _decide(b, o, t, header, result)
            ours_line = o[1] if o is not None else None
            if line != ours_line:
                result.writes += 1
                result.changed_ids.append(_id_text(line or ours_line))
            if line is not None:
                handle.write(line)
                digest.update(line)
                result.records += 1
        trailer = {"end": "plain", "count": result.records, "digest": digest.hexdigest()}
        handle.write(json.dumps(trailer).encode() + b"\n")
    return result


def _decide(
    base: Entry | None,
    ours: Entry | None,
    theirs: Entry | None,
    header: dict[str, Any],
    result: PlainResult,
) -> bytes | None:
    base_hash, ours_hash, theirs_hash = (e[0] if e else None for e in (base, ours, theirs))
    if ours_hash == theirs_hash:
        return ours[1] if ours else None
    if base_hash == ours_hash:  # only theirs changed it
        return theirs[1] if theirs else None
    if base_hash == theirs_hash:  # only ours changed it
        return ours[1] if ours else None
    result.conflicts += 1
    if ours is None or theirs is None:  # deleted on one side, changed on the other: keep it
        return (ours or theirs)[1]  # type: ignore[index]
    return _resolve(ours[1], theirs[1], header)


def _id_text(line: bytes | None) -> str:
    assert line is not None
    return json.dumps(json.loads(line)["d"]["_id"], separators=(",", ":"), sort_keys=True)


if __name__ == "__main__":
    plain_merge(*(Path(argument) for argument in sys.argv[1:5]))
