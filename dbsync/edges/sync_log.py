"""What the last sync cycles did, for ``status``: ``database_sync/sync_cycles.jsonl``.

One JSON line per finished cycle of ``dbsync sync`` or of the agent, oldest first, the newest
``KEPT`` kept: whether it succeeded, git's reason and the fix when it did not, and how many
conflicts it decided here and how many of those this asset's own version lost. The history
has a row per cycle too, but not the fix nor the conflicts; ``status`` reads this file to say
that syncs keep failing, or that this asset's edits keep losing, without reading any report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dbsync.edges.files import write_bytes_atomically

SYNC_LOG = "sync_cycles.jsonl"
KEPT = 50
SUCCEEDED, FAILED = "success", "failed"
LOSING_WINDOW = 10
"""The last cycles looked at to tell an asset whose own edits keep losing conflicts..."""
LOSING_AT_LEAST = 3
LOSING_SHARE = 0.8
"""...when they lost at least this many, and this share of those decided (even odds: 0.5)."""
LOSING_FIX = (
    "'dbsync conflicts' lists the losing versions ('dbsync conflicts restore ID' brings one "
    "back); check this machine's clock against the others' ('date -u')"
)


@dataclass(frozen=True)
class SyncCycle:
    time: str
    outcome: str
    error: str | None = None
    fix: str | None = None
    conflicts: int = 0
    """Conflicts decided on this asset during the cycle (merge driver and database merge)."""
    own_lost: int = 0
    """Of those, the ones this asset's own version lost."""
    pushes: int = 0
    """The pushes it tried: more than one when other assets pushed first."""


def log_path(state_dir: Path) -> Path:
    return state_dir / SYNC_LOG


def recent_cycles(state_dir: Path) -> list[SyncCycle]:
    """The recorded cycles, newest first; a line that cannot be read is skipped (the file is
    bookkeeping: a damaged line costs one cycle's record, nothing else)."""
    try:
        lines = log_path(state_dir).read_text().splitlines()
    except OSError:
        return []
    cycles = []
    for line in reversed(lines):
        try:
            cycles.append(SyncCycle(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return cycles


def record_cycle(state_dir: Path, cycle: SyncCycle) -> None:
    """Append ``cycle``, keeping the newest ``KEPT``; written atomically."""
    kept = [*reversed(recent_cycles(state_dir)[: KEPT - 1]), cycle]
    text = "".join(json.dumps(asdict(entry), sort_keys=True) + "\n" for entry in kept)
    write_bytes_atomically(log_path(state_dir), text.encode())


@dataclass(frozen=True)
class LosingStreak:
    lost: int
    decided: int
    cycles: int

    def describe(self) -> str:
        return (
            f"this asset's own edits lost {self.lost} of the {self.decided} conflicts decided "
            f"in its last {self.cycles} syncs: its clock may run behind the other assets', or "
            "another asset keeps editing the same records later"
        )


def losing_streak(cycles: Sequence[SyncCycle]) -> LosingStreak | None:
    """This asset's own edits keep losing conflicts, over the newest ``LOSING_WINDOW`` cycles
    (``cycles`` newest first); None when they do not."""
    window = cycles[:LOSING_WINDOW]
    lost = sum(cycle.own_lost for cycle in window)
    decided = sum(cycle.conflicts for cycle in window)
    if lost < LOSING_AT_LEAST or lost < LOSING_SHARE * decided:
        return None
    return LosingStreak(lost, decided, len(window))
