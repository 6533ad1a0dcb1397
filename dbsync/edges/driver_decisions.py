"""What git's merge driver decided, queued for the database's merge that follows the pull.

The merge driver (``dbsync.integration.merge_driver``) writes each merge it decides with
conflicts to a report, and names that report here (``DRIVER_REPORTS``); it also records the rows
it changed (``dbsync.edges.pulled``, ``RECORDS``). The merge of the pulled snapshot into the
database names those reports in its own (``queued_driver_decisions``) and, once it succeeded,
clears both (``clear_driver_decisions``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping

from dbsync.config import Config
from dbsync.core.merge import MergeCounts
from dbsync.core.report import DriverDecisions
from dbsync.edges.pulled import RECORDS

DRIVER_REPORTS = "driver_reports.jsonl"


def queue_driver_decisions(config: Config, counts: Mapping[str, MergeCounts], report: str) -> None:
    """Name one driver merge's report (``report``) and its conflicts, for the next merge."""
    conflicts = {name: len(c.conflicts) for name, c in counts.items() if c.conflicts}
    entry = {"report": report, "conflicts": conflicts}
    with (config.state_dir / DRIVER_REPORTS).open("a") as handle:
        handle.write(json.dumps(entry) + "\n")


def queued_driver_decisions(config: Config) -> DriverDecisions | None:
    """What the driver decided since the database was last merged from the snapshot."""
    path = config.state_dir / DRIVER_REPORTS
    if not path.is_file():
        return None
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not entries:
        return None
    conflicts: dict[str, int] = {}
    for entry in entries:
        for name, count in entry["conflicts"].items():
            conflicts[name] = conflicts.get(name, 0) + int(count)
    return DriverDecisions(tuple(str(entry["report"]) for entry in entries), conflicts)


def clear_driver_decisions(config: Config) -> None:
    """The database has been merged with what the driver decided: nothing is queued any more,
    and the rows it recorded for that merge are no longer needed."""
    (config.state_dir / DRIVER_REPORTS).unlink(missing_ok=True)
    shutil.rmtree(config.state_dir / RECORDS, ignore_errors=True)
