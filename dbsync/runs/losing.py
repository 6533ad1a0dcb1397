"""Losing versions: every version a conflict rule decided against, kept in the state store.

A report names the losing versions of one merge, but reports are pruned after ten merges; the
state store keeps them until ``prune --conflicts-older-than DAYS`` removes them. Every place a
conflict is decided (``dbsync merge``, the hooks and the pending retries, the merge driver,
``--dedupe``) records its losers here when it writes its report (``write_report_files`` does
both, in that order), so ``dbsync conflicts`` finds them all.

Turning report entries into records is pure; writing them is bookkeeping: when the state store
cannot be written, the report says so and still holds every losing version.
"""

from __future__ import annotations

import datetime
import itertools
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from dbsync.core import extjson
from dbsync.core.report import SUCCESS, MergeReport
from dbsync.core.snapshot import content_hash
from dbsync.edges.state import NewLosingVersion, open_state
from dbsync.errors import DbsyncError

if TYPE_CHECKING:
    from dbsync.config import Config

MERGE, HOOK, MERGE_DRIVER, DEDUPE = "merge", "hook", "merge-driver", "dedupe"
"""Where a conflict was decided (``NewLosingVersion.place``)."""


def key_text(key: Mapping[str, Any]) -> str:
    """The key values of a report entry (snapshot-mode JSON) as canonical Extended JSON text."""
    values = extjson.from_json_value({"key": list(key.values())})
    canonical = orjson.loads(extjson.encode_canonical(values))["key"]
    return orjson.dumps(canonical).decode()


def _body(document: Any) -> bytes:
    return extjson.dumps_json(document)


def losing_versions(
    report: MergeReport, place: str, report_path: Path | None
) -> Iterator[NewLosingVersion]:
    """One record per losing document of the report. A deletion that lost to a change
    ("changed beats deleted") left no document behind, so it has none."""
    for collection, counts in report.collections.items():
        for conflict in counts.conflicts:
            if conflict.get("loser") is None or conflict.get("winner") is None:
                continue
            winner = _body(conflict["winner"])
            yield NewLosingVersion(
                collection=collection,
                key=key_text(conflict["key"]),
                loser=_body(conflict["loser"]).decode(),
                winner_hash=content_hash(winner),
                winner=winner.decode(),
                rule=str(conflict["rule"]),
                asset=report.asset,
                place=place,
                report=None if report_path is None else str(report_path),
            )


def record_losing_versions(
    state_dir: Path, report: MergeReport, place: str, report_path: Path | None
) -> int:
    """Record the report's losing versions; returns how many. If the state store cannot be
    written, a note in the report says so (the report itself still holds them)."""
    versions = losing_versions(report, place, report_path)
    first = next(versions, None)
    if first is None:
        return 0
    try:
        state = open_state(state_dir)
        try:
            return state.insert_losing_versions(itertools.chain([first], versions))
        finally:
            state.close()
    except (DbsyncError, sqlite3.Error, OSError) as error:
        count = sum(1 for _ in losing_versions(report, place, report_path))
        report.notes.append(
            f"the {count} losing version(s) of this merge could not be recorded in the "
            f"state store ({error}): this report is where they are kept"
        )
        return 0


def write_report_files(
    config: Config, report: MergeReport, when: datetime.datetime, place: str = MERGE
) -> Path:
    """``merge_report_<time>.txt`` and its ``.json`` twin under ``database_sync/reports/``.

    The losing versions of a merge that succeeded are recorded durably first (reports are
    pruned, they are not), so that a failure to record them can still be said in the report.
    """
    folder = config.state_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"merge_report_{when.strftime('%Y%m%dT%H%M%S%f')}"
    if report.status == SUCCESS:
        named = stem.with_suffix(".json").relative_to(config.root)  # the project may move
        record_losing_versions(config.state_dir, report, place, named)
    with stem.with_suffix(".txt").open("w") as text:
        text.writelines(report.text_lines())
    with stem.with_suffix(".json").open("wb") as json:
        json.writelines(report.json_chunks())
    return stem
