"""Publishing this asset's database: export it, commit the snapshot, save the synced copy.

Written once, for the pre-push hook (``dbsync.integration.hook_runs``) and ``dbsync sync``
(``dbsync.runs.sync``), which publish (``publish``); ``dbsync export`` runs the first step
alone (``export_run``). Every export is one changing run (``dbsync.runs.pipeline``) recorded
the same way whichever of them started it: one history row per collection, with its records
and digest. The commit's subject is ``core.commit_subject``'s, which ``status`` and ``dbsync
log`` parse back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dbsync.config import Config
from dbsync.core.commit_subject import snapshot_subject
from dbsync.core.report import MergeReport
from dbsync.edges import git
from dbsync.edges.hook_env import IN_HOOK
from dbsync.edges.synced import save_synced
from dbsync.progress import Progress
from dbsync.runs.export import ExportedCollection, export, exported_sections, skipped_notes
from dbsync.runs.log import index_new_commits
from dbsync.runs.pipeline import Say, changing_store_run, fold_duplicates


@dataclass
class Exported:
    """What an export run wrote, and what it says beside it."""

    collections: list[ExportedCollection]
    skipped: list[str] = field(default_factory=list)
    """Collections left out for what they are (a view, say), one note each."""
    folded: MergeReport | None = None
    """``--dedupe``: the fold of records sharing a key (None: none asked, or none found)."""

    @property
    def records(self) -> int:
        return sum(result.records for result in self.collections)


@dataclass(frozen=True)
class Published:
    """An export, and the commit of the snapshot it wrote (None: the snapshot was unchanged)."""

    exported: Exported
    commit: str | None
    subject: str


def export_run(
    config: Config,
    *,
    say: Say,
    warn: Say,
    collections: Sequence[str] | None = None,
    output: Path | None = None,
    allow_deletes: bool = False,
    dedupe: bool = False,
    progress: Progress | None = None,
) -> Exported:
    """Export the database as one changing run, each collection recorded in the history."""
    with changing_store_run(
        config, "export", say=say, warn=warn, collections=collections or []
    ) as (run, store):
        folded = fold_duplicates(config, store, collections) if dedupe else None
        results = export(
            config,
            store,
            collections=collections,
            output=output,
            progress=progress,
            allow_deletes=allow_deletes,
        )
        for result in results:
            run.done(result.collection, result.records, result.digest)
        skipped = [] if collections else skipped_notes(config, store)
    return Exported(results, skipped, folded)


def publish(config: Config, *, say: Say, warn: Say) -> Published:
    """Export; if the snapshot changed, commit it and save it as the synced copy. The store is
    closed before git runs (a hook it fires may open it)."""
    exported = export_run(config, say=say, warn=warn)
    subject = snapshot_subject(config.asset, exported.records)
    if not git.has_changes(config.root, snapshot_folder(config)):
        return Published(exported, None, subject)
    commit = commit_snapshot(config, exported.records)
    save_synced(config.state_dir, exported_sections(exported.collections), commit)
    return Published(exported, commit, subject)


def commit_snapshot(config: Config, records: int) -> str:
    """Commit the snapshot folder, and add the commit to the log index. Its post-commit hook is
    skipped (it would start dbsync once more, only to index the commit): that is done here."""
    environment = {**os.environ, IN_HOOK: os.environ.get(IN_HOOK) or "publish"}
    subject = snapshot_subject(config.asset, records)
    commit = git.commit_path(config.root, snapshot_folder(config), subject, env=environment)
    try:
        index_new_commits(config, git.parents(config.root, commit))
    except Exception:  # the log index is a cache: the commit is made, and must not fail for it
        pass
    return commit


def snapshot_folder(config: Config) -> str:
    """The snapshot folder as git names it, relative to the work tree."""
    return os.path.relpath(config.snapshot_dir, config.root)
