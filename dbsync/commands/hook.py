"""``dbsync hook NAME``: what the git hook scripts run.

* ``pre-push``: export; a changed snapshot is committed and the push stopped with one line asking
  to push again (git cannot add a commit to a push that has started).
* ``post-merge`` and ``post-rewrite`` (rebase): when the snapshot folder changed, merge it into
  the database, three-way only against a true common ancestor (PRODUCT.md §4). A merge that
  fails never fails the git command: git has already moved on, so the hook says the merge is
  pending and how to retry it, and exits 0.

Git runs hooks at the root of the work tree, so the configuration is found from there. A
repository without ``dbsync.toml`` (hooks installed through a global ``core.hooksPath``, say) is
left alone.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from dbsync import git
from dbsync.commands.export import ExportedCollection, export, exported_sections
from dbsync.commands.merge import MergeOptions
from dbsync.commands.pending import base_for, queue_pending
from dbsync.config import Config
from dbsync.errors import DatabaseUnreachable, UsageError
from dbsync.pipeline import changing_store_run
from dbsync.report import MergeReport
from dbsync.synced import save_synced

IN_HOOK = "DBSYNC_HOOK"  # set while a hook runs: the scripts then skip dbsync (no recursion)
PRE_PUSH, POST_MERGE, POST_REWRITE = "pre-push", "post-merge", "post-rewrite"
NAMES = (PRE_PUSH, POST_MERGE, POST_REWRITE)
NO_COMMIT = "0" * 40


@dataclass
class HookOutcome:
    """The exit code git sees and the lines the hook prints (on stderr, git shows them)."""

    exit_code: int = 0
    lines: list[str] = field(default_factory=list)


def run_hook(name: str, args: list[str], stdin: str, config: Config) -> HookOutcome:
    """Dispatch one hook. Only expected failures of ``pre-push`` escape (they block the push)."""
    if name not in NAMES:
        raise UsageError(f"unknown hook {name!r}", hint=f"dbsync runs: {', '.join(NAMES)}")
    if config.config_file is None:
        return HookOutcome()
    os.environ[IN_HOOK] = name
    if name == PRE_PUSH:
        return pre_push(config, stdin.splitlines())
    if name == POST_MERGE:
        return post_merge(config, squash=args[:1] == ["1"])
    if args[:1] != ["rebase"]:
        return HookOutcome()  # an amended commit brings nothing from another asset
    return post_rewrite(config, stdin.splitlines())


# ---------------------------------------------------------------- pre-push


def _snapshot_path(config: Config) -> str:
    return os.path.relpath(config.snapshot_dir, config.root)


def _only_deletions(ref_lines: list[str]) -> bool:
    """``git push origin :branch`` pushes no commit: nothing to export for it."""
    local_ids = [line.split()[1] for line in ref_lines if len(line.split()) == 4]
    return bool(local_ids) and all(local == NO_COMMIT for local in local_ids)


def pre_push(config: Config, ref_lines: list[str]) -> HookOutcome:
    if _only_deletions(ref_lines):
        return HookOutcome()
    try:
        exported = _export(config)
    except DatabaseUnreachable as error:
        return HookOutcome(0, [f"dbsync: warning: {error.message}; the snapshot was not exported"])
    if not git.has_changes(config.root, _snapshot_path(config)):
        return HookOutcome()
    records = sum(result.records for result in exported)
    message = f"dbsync: {config.asset} snapshot ({records} records)"
    commit = git.commit_path(config.root, _snapshot_path(config), message)
    save_synced(config.state_dir, exported_sections(exported), commit)
    return HookOutcome(
        1,
        [
            f"dbsync: committed {commit[:10]} '{message}'; push again to send it "
            "(git cannot add a commit to a push that has started)"
        ],
    )


def _export(config: Config) -> list[ExportedCollection]:
    with changing_store_run(config, "export", say=_warn, warn=_warn) as (run, store):
        exported = export(config, store)
        for result in exported:
            run.done(result.collection, result.records, result.digest)
    return exported


# ---------------------------------------------------------------- post-merge, post-rewrite


def post_merge(config: Config, *, squash: bool) -> HookOutcome:
    """After a merge: ORIG_HEAD is where HEAD was. A squash merge committed nothing yet, so its
    snapshot is compared with HEAD in the work tree and merged two-way, naming no commit."""
    if squash:
        if not git.has_changes(config.root, _snapshot_path(config)):
            return HookOutcome()
        return merge_into_database(config, None)
    return _merge_if_changed(config, git.rev_parse(config.root, "ORIG_HEAD"))


def post_rewrite(config: Config, pairs: list[str]) -> HookOutcome:
    """After a rebase: ORIG_HEAD is the tip before it; failing that, the last rewritten commit."""
    before = git.rev_parse(config.root, "ORIG_HEAD")
    if before is None and pairs and pairs[-1].split():
        before = pairs[-1].split()[0]
    return _merge_if_changed(config, before)


def _merge_if_changed(config: Config, before: str | None) -> HookOutcome:
    head = git.rev_parse(config.root, "HEAD")
    if head is None or before is None or before == head:
        return HookOutcome()
    if not git.tree_changed(config.root, before, head, _snapshot_path(config)):
        return HookOutcome()
    return merge_into_database(config, head, before)


def merge_into_database(config: Config, head: str | None, before: str | None = None) -> HookOutcome:
    """Merge the snapshot folder; any failure becomes a pending merge, never a failed git run."""
    options = MergeOptions(base=base_for(config, head, before), commit=head)
    source = config.snapshot_dir
    merging = changing_store_run(config, "merge", say=_warn, warn=_warn, merging=source)
    try:
        with merging as (run, store):
            report = run.merge(store, source, options)
    except Exception as error:  # git has moved on: whatever failed, the user must learn it
        return merge_pending(config, head, error)
    return HookOutcome(0, [merge_summary(config, report)])


def _warn(message: str) -> None:
    print(f"dbsync: warning: {message}", file=sys.stderr)


def merge_pending(config: Config, head: str | None, error: Exception) -> HookOutcome:
    """The one place a failed merge after a pull is handled: queue it, warn, exit 0."""
    reason = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
    folder = _snapshot_path(config)
    try:
        queue_pending(config, config.snapshot_dir, head, reason)
    except Exception as failure:  # the state store itself is unusable: still never fail git
        reason += f"; and it could not be queued ({failure})"
    lines = [
        f"dbsync: warning: the merge of {folder} into the database is pending ({reason}); "
        f"'dbsync merge {folder}' retries it"
    ]
    hint = getattr(error, "hint", None)
    if hint:
        lines.append(f"hint: {hint}")
    return HookOutcome(0, lines)


def merge_summary(config: Config, report: MergeReport) -> str:
    counts = report.collections.values()
    changed = sum(c.remote_only + c.updated + c.deleted for c in counts)
    conflicts = sum(c.conflicts_resolved for c in counts)
    total = sum(c.total for c in counts)
    return (
        f"dbsync: merged {_snapshot_path(config)} into the database ({report.mode}): "
        f"{changed} record(s) from other assets, {conflicts} conflict(s) decided by the rules, "
        f"{total} records now; 'dbsync restore {report.backup}' undoes it"
    )
