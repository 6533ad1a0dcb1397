"""The subject of a snapshot commit, ``dbsync: <asset> snapshot (N records)``: written and read
back here, side by side, so that a change to the one is a change to the other.

The pre-push hook and ``dbsync sync`` write it (``dbsync.runs.publish``); ``status``
(``core.asset_names``: two clones signing with one name) and ``dbsync log`` (which asset made a
version) read the asset back from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SUBJECT = re.compile(r"dbsync: (?P<asset>.+) snapshot \((?P<records>\d+) records\)")


@dataclass(frozen=True)
class SnapshotSubject:
    asset: str
    records: int


def snapshot_subject(asset: str, records: int) -> str:
    """The subject of the commit of ``asset``'s snapshot holding ``records`` records."""
    return f"dbsync: {asset} snapshot ({records} records)"


def parse_snapshot_subject(subject: str) -> SnapshotSubject | None:
    """What ``snapshot_subject`` wrote; None for a subject it did not write."""
    found = _SUBJECT.fullmatch(subject)
    if found is None:
        return None
    return SnapshotSubject(found.group("asset"), int(found.group("records")))
