"""Merge reports: the decisions of a merge, serialised for people (text) and programs (JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from dbsync.core.conflict import LARGER_HASH, MORE_COMPLETE, obvious_timestamp
from dbsync.core.merge import MergeCounts
from dbsync.core.rules import Rules

SUCCESS, FAILED, DRY_RUN = "success", "failed", "dry-run"

_FIGURES = (
    ("local only", "local_only"),
    ("remote only", "remote_only"),
    ("common", "common"),
    ("updated from remote", "updated"),
    ("kept local changes", "kept_local"),
    ("conflicts resolved", "conflicts_resolved"),
    ("deleted", "deleted"),
    ("deleted locally, stays deleted", "deleted_locally"),
    ("total after merge", "total"),
    ("documents written", "writes"),
)


@dataclass(frozen=True)
class DriverDecisions:
    """Conflicts the git merge driver decided in the snapshot files before this merge into the
    database: that merge finds them decided already, so it says where they are."""

    reports: tuple[str, ...]
    conflicts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.conflicts.values())

    def to_json(self) -> dict[str, Any]:
        return {"reports": list(self.reports), "conflicts": self.conflicts}

    def note(self) -> str:
        return (
            f"{self.total} conflict(s) were decided by the git merge driver when git merged the "
            f"snapshot files; their losing versions are in {', '.join(self.reports)} and in "
            "'dbsync conflicts'"
        )


@dataclass
class MergeReport:
    status: str
    time: str
    asset: str
    source: str
    base: str | None
    backup: str | None = None
    error: str | None = None
    collections: dict[str, MergeCounts] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Records lacking a key field or a timestamp (see ``dbsync.core.notes``): said, not refused."""
    merge_driver: DriverDecisions | None = None

    @property
    def mode(self) -> str:
        return "three-way" if self.base else "two-way"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "time": self.time,
            "asset": self.asset,
            "source": self.source,
            "base": self.base,
            "mode": self.mode,
            "backup": self.backup,
            "error": self.error,
            "notes": self.notes,
            "merge_driver": self.merge_driver.to_json() if self.merge_driver else None,
            "collections": {
                name: {
                    **{key: getattr(counts, key) for _, key in _FIGURES},
                    "conflicts_by_merge_driver": self._by_driver(name),
                    "status": self.status,
                    "conflicts": counts.conflicts,
                }
                for name, counts in self.collections.items()
            },
        }

    def _by_driver(self, collection: str) -> int:
        return self.merge_driver.conflicts.get(collection, 0) if self.merge_driver else 0

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2) + b"\n"

    def to_text(self) -> str:
        lines = [
            f"dbsync merge report — {self.time}",
            f"asset: {self.asset}",
            f"source: {self.source}",
            f"mode: {self.mode}" + (f" (base: {self.base})" if self.base else ""),
            f"status: {self.status}",
        ]
        if self.backup:
            lines.append(f"backup: {self.backup} (dbsync restore {self.backup})")
        if self.error:
            lines.append(f"error: {self.error}")
        lines += [f"note: {note}" for note in self.notes]
        if self.merge_driver:
            lines.append(f"merge driver: {self.merge_driver.note()}")
        for name, counts in self.collections.items():
            lines += ["", f"[{name}]"]
            lines += [f"  {label:32} {getattr(counts, key)}" for label, key in _FIGURES]
            if self._by_driver(name):
                lines.append(f"  {'conflicts by the merge driver':32} {self._by_driver(name)}")
            lines.append(f"  {'status':32} {self.status}")
            for conflict in counts.conflicts:
                lines.append(
                    f"  conflict {_text(conflict['key'])}: kept by rule '{conflict['rule']}'"
                )
                lines.append(f"    kept:  {_text(conflict['winner'])}")
                lines.append(f"    lost:  {_text(conflict['loser'])}")
        return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def tie_break_notes(collection: str, rules: Rules, counts: MergeCounts) -> list[str]:
    """Said once per collection and merge: conflicts that "newest wins" could not decide
    because the collection has no ``timestamp`` configured, with the setting that fixes it."""
    if rules.timestamp is not None:
        return []
    decided = [c for c in counts.conflicts if c["rule"] in (MORE_COMPLETE, LARGER_HASH)]
    if not decided:
        return []
    versions = [doc for c in decided for doc in (c["winner"], c["loser"]) if doc is not None]
    field = obvious_timestamp(versions)
    setting = f'timestamp = "{field or "FIELD"}"'
    rule_names = " or ".join(sorted({str(c["rule"]) for c in decided}))
    return [
        f"{collection}: {len(decided)} conflict(s) decided by {rule_names}, not by the newer "
        f"version, because no timestamp is configured for {collection}: add {setting} under "
        f"[collections.{collection}] in dbsync.toml (the field that dates a version) so that "
        "the newest version wins"
    ]
