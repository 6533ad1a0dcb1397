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
from dbsync.core import extjson
from dbsync.core.conflict import resolve
from dbsync.core.merge import MergeCounts
from dbsync.core.ordering import key_values
from dbsync.core.report import SUCCESS, MergeReport, tie_break_notes
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Discard, Header, line_body, line_document, write_section
from dbsync.edges.records import KeyClashes, collection_lines, unique_lines
from dbsync.edges.store import Store
from dbsync.progress import NoProgress
from dbsync.runs.losing import DEDUPE
from dbsync.runs.merge import write_report_files
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


def apply_fold(store: Store, name: str, fold: Fold) -> int:
    """Delete the losers, rewrite the winner if ``preserve`` changed it; returns deletions."""
    keep = _id_of(fold.result)
    deletes = [
        extjson.from_json_value(orjson.loads(_id_of(line)))
        for line in fold.members
        if _id_of(line) != keep
    ]
    upserts = []
    if fold.result not in fold.members:
        upserts.append(extjson.from_json_value(orjson.loads(line_body(fold.result))))
    store.apply(name, upserts, deletes)
    return len(deletes)


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
        for group in found:
            fold = fold_group(group, rules)
            counts.deleted += apply_fold(store, name, fold)
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
    write_report_files(config, report, now, DEDUPE)
    return report
