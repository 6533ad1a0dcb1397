"""Two assets that sign with one name: found in the git history, from this clone's reflog.

Snapshot commits say which asset made them (``core.commit_subject``). A commit
that names this asset, was made after this clone existed, and never passed through this clone's
HEAD was made by another clone using the same name: commits and reports can no longer tell
the two apart. Pure: the git reads are in ``dbsync.edges.git``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dbsync.core.commit_subject import parse_snapshot_subject

COMMITS_LOOKED_AT = 200
"""How far back the check reads: recent enough to be quick on every ``status``."""


@dataclass(frozen=True)
class Commit:
    sha: str
    time: int
    subject: str


def asset_of(subject: str) -> str | None:
    parsed = parse_snapshot_subject(subject)
    return parsed.asset if parsed else None


def made_here(action: str) -> bool:
    """Whether a reflog entry is a commit this clone created (a commit, or one a rebase or a
    cherry-pick wrote again), not one it only moved to (a fast-forward, a checkout, a reset)."""
    kind = action.split(":", 1)[0]
    return kind.startswith(("commit", "cherry-pick", "revert")) or kind.endswith(
        ("(pick)", "(reword)", "(edit)", "(squash)", "(fixup)")
    )


def namesakes(
    asset: str, commits: Iterable[Commit], reflog: Iterable[tuple[str, int, str]]
) -> list[Commit]:
    """Snapshot commits naming ``asset`` that another clone made (see the module's docstring).

    A clone without a reflog (reflogs disabled) cannot tell its own commits: nothing is found.
    """
    entries = list(reflog)
    if not entries:
        return []
    own = {sha for sha, _, action in entries if made_here(action)}
    born = min(stamp for _, stamp, _ in entries)
    return [
        commit
        for commit in commits
        if commit.time >= born and commit.sha not in own and asset_of(commit.subject) == asset
    ]
