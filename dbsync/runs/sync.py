"""``dbsync sync``: pull (which merges), export, commit, push — the whole cycle in one command.

The git commands it runs fire dbsync's own hooks. They must neither wait on the lock this run
holds (the lock lets a child of the holder through) nor merge twice: when the post-merge hook is
installed it is the hook that merges what the pull brought, and this command only checks that it
did; without hooks, this command merges itself. The push's pre-push hook then finds nothing new
to export, because the snapshot was exported and committed just before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dbsync.config import Config
from dbsync.edges import git
from dbsync.edges.synced import save_synced
from dbsync.errors import GitFailed, UsageError
from dbsync.integration import installer as hooks
from dbsync.integration.hook_runs import merge_into_database
from dbsync.runs.common import open_configured_store
from dbsync.runs.export import export, exported_sections
from dbsync.runs.pipeline import changing_run

PUSH_ATTEMPTS = 3
# Merge, whatever pull.rebase, pull.ff or merge.ff say: a merge runs the merge driver on the
# snapshot files and the post-merge hook; a fast-forward when possible; never an editor.
PULL_MODE = ("--no-rebase", "--ff", "--no-edit")


@dataclass
class SyncResult:
    """What one cycle did, in the order it did it, for the one-screen summary."""

    steps: list[str] = field(default_factory=list)
    pushed: bool = False


def _snapshot_path(config: Config) -> str:
    return os.path.relpath(config.snapshot_dir, config.root)


def _upstream(root: Path) -> str:
    found = git.run_git(["rev-parse", "--abbrev-ref", "@{upstream}"], root, check=False)
    if found.returncode != 0:
        raise UsageError(
            "this branch has no upstream to pull from and push to",
            hint="push it once with 'git push -u origin <branch>', then run dbsync sync",
        )
    return found.stdout.strip()


def pull(config: Config, result: SyncResult) -> None:
    """``git pull`` (merging); merge the snapshot ourselves only when no post-merge hook of ours
    did."""
    before = git.rev_parse(config.root, "HEAD")
    pulled = git.run_git(["pull", *PULL_MODE], config.root, check=False)
    if pulled.returncode != 0:
        raise git.failed(
            "git pull",
            pulled,
            hint="resolve it with git (dbsync's merge driver handles the snapshot files), "
            "then run dbsync sync again",
        )
    head = git.rev_parse(config.root, "HEAD")
    if head == before:
        result.steps.append("pull: already up to date")
        return
    result.steps.append(f"pull: {before and before[:10]} → {head and head[:10]}")
    changed = before is None or git.tree_changed(
        config.root, before, head or "HEAD", _snapshot_path(config)
    )
    if not changed:
        return
    if hooks.merge_hooks_installed(config.root):
        result.steps.append("merge: done by the post-merge hook (see above)")
        return
    outcome = merge_into_database(config, head)
    result.steps.extend(outcome.lines)


def export_and_commit(config: Config, result: SyncResult) -> None:
    with open_configured_store(config) as store:  # closed before git runs a hook that opens it
        exported = export(config, store)
    records = sum(item.records for item in exported)
    if not git.has_changes(config.root, _snapshot_path(config)):
        result.steps.append(f"export: {records} records, snapshot unchanged")
        return
    message = f"dbsync: {config.asset} snapshot ({records} records)"
    commit = git.commit_path(config.root, _snapshot_path(config), message)
    save_synced(config.state_dir, exported_sections(exported), commit)
    result.steps.append(f"export: committed {commit[:10]} '{message}'")


def push(config: Config, result: SyncResult) -> None:
    """Push; when another asset pushed meanwhile, pull (merging) and try again."""
    for _ in range(PUSH_ATTEMPTS):
        before = git.rev_parse(config.root, "HEAD")
        pushed = git.run_git(["push", "--porcelain"], config.root, check=False)
        if pushed.returncode == 0:
            result.steps.append("push: done")
            result.pushed = True
            return
        if git.rev_parse(config.root, "HEAD") != before:
            continue  # our pre-push hook committed a newer snapshot and stopped the push: send it
        if not rejected_as_behind(pushed.stdout):
            raise git.failed("git push", pushed)
        result.steps.append("push: rejected, another asset pushed first; pulling again")
        pull(config, result)
        export_and_commit(config, result)
    raise GitFailed(
        f"git push still fails after {PUSH_ATTEMPTS} attempts",
        hint="another asset keeps pushing; run dbsync sync again in a moment",
    )


def rejected_as_behind(porcelain: str) -> bool:
    """Whether ``git push --porcelain`` says a ref was refused for being behind the remote
    (``!`` then ``[rejected]``: fetch first, non-fast-forward), not refused by the remote."""
    for line in porcelain.splitlines():
        flag, _, rest = line.partition("\t")
        summary = rest.partition("\t")[2]
        if flag == "!" and summary.startswith("[rejected]"):
            return True
    return False


def sync(config: Config) -> SyncResult:
    """One whole cycle; stops at the first step that fails, saying what to do."""
    git.require_toplevel(config.root)
    result = SyncResult()
    upstream = _upstream(config.root)
    result.steps.append(f"upstream: {upstream}")
    pull(config, result)
    export_and_commit(config, result)
    push(config, result)
    return result


def sync_run(config: Config, warn: Callable[[str], None]) -> SyncResult:
    """The whole cycle as one changing run (``dbsync.runs.pipeline``): under the asset's lock (the
    hooks it fires pass, as children of the holder), recorded, pending merges retried first."""
    with changing_run(config, "sync", say=warn, warn=warn):
        return sync(config)
