"""``--dedupe``: fold records of the database that share a key, by the conflict rule.

A configured key that is not unique is never collapsed silently: export and merge refuse and
list the clashing records. ``--dedupe`` asks to fold them instead: a backup first, then each
group becomes its winner (with ``preserve`` fields filled from the losers), the losers are
deleted from the database, and a report keeps every losing version.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from dbsync.config import Config
from dbsync.core.conflict import resolve
from dbsync.core.merge import MergeCounts
from dbsync.core.ordering import key_values
from dbsync.core.report import SUCCESS, MergeReport, tie_break_notes
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Discard, Header, line_document, write_section
from dbsync.edges.changes import keep_current, line_value, record_id
from dbsync.edges.records import KeyClashes, collection_lines, unique_lines
from dbsync.edges.store import Change, ChangeCounts, Store, encode_document
from dbsync.progress import NoProgress
from dbsync.runs.losing import DEDUPE, write_report_files
from dbsync.runs.restore import take_backup


@dataclass(frozen=True)
class Fold:
    """One group of records sharing a key: what is kept, and every version that lost."""

    result: bytes
    losers: list[tuple[bytes, str]]
    members: list[bytes]


def fold_group(lines: Sequence[bytes], rules: Rules) -> Fold:
    """Fold in byte order, so every asset folds the same group the same way."""
    ordered = sorted(lines)
    current, losers = ordered[0], []
    for other in ordered[1:]:
        resolution = resolve(current, other, rules)
        losers.append((resolution.loser, resolution.rule))
        current = resolution.line
    return Fold(current, losers, ordered)


def find_duplicates(store: Store, name: str, rules: Rules) -> list[list[bytes]]:
    """Groups of lines sharing a key (memory holds only the groups)."""
    clashes = KeyClashes(rules.key)
    write_section(
        Discard(),
        Header(name, rules),
        unique_lines(collection_lines(store, name, rules, NoProgress()), clashes),
    )
    return clashes.groups


def _id_of(line: bytes) -> bytes:
    return orjson.dumps(line_document(line).get("_id"))


def fold_changes(fold: Fold) -> list[Change]:
    """The writes of one fold, each expecting its record as the group read it: the losers
    deleted, the winner rewritten if ``preserve`` changed it."""
    keep = _id_of(fold.result)
    changes = []
    for line in fold.members:
        document = line_value(line)
        expected = encode_document(document)
        if _id_of(line) != keep:
            changes.append(Change(record_id(document), expected, None))
        elif line != fold.result:
            changes.append(Change(record_id(document), expected, line_value(fold.result)))
    return changes


def apply_fold(store: Store, name: str, fold: Fold) -> ChangeCounts:
    """Fold one group by compare-and-set: a member the application changed since the group
    was read is left as it wrote it (counted in ``left``), never deleted or overwritten."""
    return store.apply_changes(name, fold_changes(fold), keep_current)


def dedupe(config: Config, store: Store, names: Sequence[str]) -> MergeReport | None:
    """Fold every duplicate group of the named collections; None when there was none."""
    groups = {name: find_duplicates(store, name, config.rules(name)) for name in names}
    groups = {name: found for name, found in groups.items() if found}
    if not groups:
        return None
    now = datetime.datetime.now(datetime.timezone.utc)
    report = MergeReport(SUCCESS, now.isoformat(timespec="seconds"), config.asset, "--dedupe", None)
    report.backup = take_backup(config, store, list(groups), "before --dedupe")
    for name, found in groups.items():
        rules = config.rules(name)
        counts = MergeCounts()
        left = 0
        for group in found:
            fold = fold_group(group, rules)
            applied = apply_fold(store, name, fold)
            counts.deleted += applied.deleted
            left += applied.left
            key = dict(
                zip(rules.key, key_values(line_document(fold.result), rules.key), strict=True)
            )
            for loser, rule in fold.losers:
                counts.conflicts_resolved += 1
                counts.conflicts.append(
                    {
                        "key": key,
                        "winner": line_document(fold.result),
                        "loser": line_document(loser),
                        "rule": rule,
                    }
                )
        counts.total = store.count(name)
        report.collections[name] = counts
        report.notes += tie_break_notes(name, rules, counts)
        if left:
            report.notes.append(
                f"{name}: {left} record(s) the application changed during --dedupe were left "
                "as it wrote them; run it again to fold what still shares a key"
            )
    write_report_files(config, report, now, DEDUPE)
    return report
