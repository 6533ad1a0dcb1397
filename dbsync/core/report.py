"""Merge reports: the decisions of a merge, serialised for people (text) and programs (JSON)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
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


NAMED_REPORTS = 3
"""Reports a note names one by one; past it, the first, the last and how many."""


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
            f"snapshot files; their losing versions are in {self._where()} and in "
            "'dbsync conflicts'"
        )

    def _where(self) -> str:
        """The reports, by name up to ``NAMED_REPORTS``; past that (a split collection makes
        one per part file) the first, the last and how many, so that the line stays readable
        in a hook's output. The JSON report lists them all."""
        if len(self.reports) <= NAMED_REPORTS:
            return ", ".join(self.reports)
        return f"{len(self.reports)} reports, {self.reports[0]} to {self.reports[-1]}"


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
        return self._json(lambda counts: list(counts.conflicts))

    def _json(self, conflicts: Callable[[MergeCounts], Any]) -> dict[str, Any]:
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
                    "conflicts": conflicts(counts),
                }
                for name, counts in self.collections.items()
            },
        }

    def _by_driver(self, collection: str) -> int:
        return self.merge_driver.conflicts.get(collection, 0) if self.merge_driver else 0

    def to_json_bytes(self) -> bytes:
        return b"".join(self.json_chunks())

    def json_chunks(self) -> Iterator[bytes]:
        """``to_json_bytes`` piece by piece (indented JSON, then a newline), each conflict read
        from its collection's ``conflicts`` when its turn comes: memory does not grow with them.

        The report is dumped with a unique mark in place of each list of conflicts, and each
        list is written where its mark is, indented the way orjson indents it."""
        token = uuid.uuid4().hex
        marks: dict[bytes, MergeCounts] = {}

        def mark(counts: MergeCounts) -> Any:
            if not len(counts.conflicts):
                return []
            text = f"dbsync-conflicts-{token}-{len(marks)}"
            marks[orjson.dumps(text)] = counts
            return text

        rest = orjson.dumps(self._json(mark), option=orjson.OPT_INDENT_2) + b"\n"
        for placeholder, counts in marks.items():  # in the order the dump holds them
            head, _, rest = rest.partition(placeholder)
            yield head
            line = head[head.rfind(b"\n") + 1 :]
            yield from _json_list(counts.conflicts, len(line) - len(line.lstrip(b" ")))
        yield rest

    def to_text(self) -> str:
        return "".join(self.text_lines())

    def text_lines(self) -> Iterator[str]:
        """The text report, one line (with its newline) at a time."""
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
        for line in lines:
            yield line + "\n"
        for name, counts in self.collections.items():
            yield from _collection_text(name, counts, self._by_driver(name), self.status)


def _collection_text(name: str, counts: MergeCounts, by_driver: int, status: str) -> Iterator[str]:
    lines = ["", f"[{name}]"]
    lines += [f"  {label:32} {getattr(counts, key)}" for label, key in _FIGURES]
    if by_driver:
        lines.append(f"  {'conflicts by the merge driver':32} {by_driver}")
    lines.append(f"  {'status':32} {status}")
    for line in lines:
        yield line + "\n"
    for conflict in counts.conflicts:
        yield f"  conflict {_text(conflict['key'])}: kept by rule '{conflict['rule']}'\n"
        yield f"    kept:  {_text(conflict['winner'])}\n"
        yield f"    lost:  {_text(conflict['loser'])}\n"


def _json_list(entries: Iterable[Any], indent: int) -> Iterator[bytes]:
    """A non-empty list as ``orjson.dumps(..., option=OPT_INDENT_2)`` writes it when it opens on
    a line indented by ``indent`` spaces (JSON strings hold no raw newline: each newline of an
    entry's dump starts one of its lines)."""
    pad = b"\n" + b" " * (indent + 2)
    separator = b"["
    for entry in entries:
        yield separator + pad + orjson.dumps(entry, option=orjson.OPT_INDENT_2).replace(b"\n", pad)
        separator = b","
    yield b"\n" + b" " * indent + b"]"


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def tie_break_notes(collection: str, rules: Rules, counts: MergeCounts) -> list[str]:
    """Said once per collection and merge: conflicts that "newest wins" could not decide
    because the collection has no ``timestamp`` configured, with the setting that fixes it."""
    if rules.timestamp is not None:
        return []
    decided: dict[str, int] = {}  # conflicts decided without a timestamp, by rule

    def versions() -> Iterator[dict[str, Any]]:  # one pass over the conflicts: they stream
        for conflict in counts.conflicts:
            if conflict["rule"] in (MORE_COMPLETE, LARGER_HASH):
                rule = str(conflict["rule"])
                decided[rule] = decided.get(rule, 0) + 1
                yield from (v for v in (conflict["winner"], conflict["loser"]) if v is not None)

    field = obvious_timestamp(versions())
    if not decided:
        return []
    setting = f'timestamp = "{field or "FIELD"}"'
    rule_names, total = " or ".join(sorted(decided)), sum(decided.values())
    return [
        f"{collection}: {total} conflict(s) decided by {rule_names}, not by the newer "
        f"version, because no timestamp is configured for {collection}: add {setting} under "
        f"[collections.{collection}] in dbsync.toml (the field that dates a version) so that "
        "the newest version wins"
    ]
