"""``dbsync conflicts``: the losing versions of every conflict decided on this asset.

They are read from the state store (``losing_versions``), where merge, the hooks, the merge
driver and dedupe record them; ``show`` compares a loser with its winner field by field, and
``restore`` brings the loser back as the current version (``dbsync.runs.bring_back``).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

import orjson

from dbsync.config import Config
from dbsync.edges.state import LosingVersion, reading_state
from dbsync.edges.store import Store
from dbsync.errors import UsageError
from dbsync.runs.bring_back import BroughtBack, bring_back
from dbsync.runs.log import FieldDiff, field_diffs

_RELATIVE = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def since_text(given: str, now: datetime.datetime | None = None) -> str:
    """``--since``: an ISO-8601 date or time (UTC when it has no zone), or ``7d``/``12h``/``30m``
    ago; as the state store writes times."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    relative = _RELATIVE.match(given.strip())
    if relative:
        moment = now - datetime.timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    else:
        try:
            moment = datetime.datetime.fromisoformat(given.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"--since {given}: not a date", hint="write 2026-11-30, 2026-11-30T12:00 or 7d"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _document(body: str | None) -> Any:
    return None if body is None else orjson.loads(body)


def conflict_json(version: LosingVersion) -> dict[str, Any]:
    """One losing version as ``conflicts --json`` lists it."""
    return {
        "id": version.id,
        "time": version.time,
        "collection": version.collection,
        "key": orjson.loads(version.key),
        "rule": version.rule,
        "place": version.place,
        "asset": version.asset,
        "report": version.report,
        "winner_hash": version.winner_hash,
        "winner": _document(version.winner),
        "loser": _document(version.loser),
    }


def list_conflicts(
    config: Config, collection: str | None = None, since: str | None = None
) -> list[LosingVersion]:
    """Newest first; nothing recorded yet is an empty list (read-only: creates nothing)."""
    with reading_state(config.state_dir) as state:
        if state is None:
            return []
        return state.losing_versions(collection, since_text(since) if since else None)


def find_conflict(config: Config, conflict_id: int) -> LosingVersion:
    with reading_state(config.state_dir) as state:
        try:
            if state is not None:
                return state.losing_version(conflict_id)
        except KeyError:
            pass
    raise UsageError(f"no losing version {conflict_id}", hint="'dbsync conflicts' lists them")


@dataclass(frozen=True)
class Comparison:
    version: LosingVersion
    changes: list[FieldDiff]
    """From the winner to the loser: what restoring the loser would change."""


def compare(version: LosingVersion) -> Comparison:
    winner, loser = _document(version.winner), _document(version.loser)
    return Comparison(version, field_diffs(winner, loser) if winner is not None else [])


def restore_conflict(
    config: Config, store: Store, conflict_id: int, now: datetime.datetime | None = None
) -> BroughtBack:
    """Make a losing version the current one: backed up, merged, reported, timestamped now."""
    version = find_conflict(config, conflict_id)
    loser = _document(version.loser)
    return bring_back(config, store, version.collection, loser, f"conflict {conflict_id}", now)


def conflict_line(version: LosingVersion) -> str:
    """One losing version per line in ``dbsync conflicts``."""
    key = ", ".join(_short(value) for value in orjson.loads(version.key))
    return (
        f"{version.id:>5}  {version.time}  {version.collection} [{key}]  lost by "
        f"'{version.rule}' ({version.place} on {version.asset})"
    )


def _short(value: Any, limit: int = 60) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def comparison_text(comparison: Comparison) -> list[str]:
    """``dbsync conflicts show ID``: the two versions side by side, field by field."""
    version = comparison.version
    lines = [
        f"losing version {version.id} of {version.collection} "
        f"{orjson.dumps(orjson.loads(version.key)).decode()}",
        f"decided {version.time} by '{version.rule}' ({version.place} on {version.asset})"
        + (f"; report {version.report}" if version.report else ""),
    ]
    if version.winner is None:
        lines.append(f"winner: hash {version.winner_hash} (its document was not recorded)")
        lines.append(f"loser:  {version.loser}")
        return lines
    lines.append("field-by-field, winner → loser:")
    for change in comparison.changes:
        before = "(absent)" if change.change == "added" else orjson.dumps(change.old).decode()
        after = "(absent)" if change.change == "removed" else orjson.dumps(change.new).decode()
        lines.append(f"    {change.field}: {before} → {after}")
    if not comparison.changes:
        lines.append("    (no field differs)")
    lines.append(f"restore it: dbsync conflicts restore {version.id}")
    return lines
