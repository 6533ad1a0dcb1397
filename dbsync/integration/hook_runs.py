"""``dbsync hook NAME``: what the git hook scripts run.

* ``pre-push``: export; a changed snapshot is committed and the push stopped with one line asking
  to push again (git cannot add a commit to a push that has started). A push ``dbsync sync`` (or
  the agent) makes carries the snapshot it has just exported and committed (it says so in
  ``SYNC_EXPORTED``): that push goes on, and what the application wrote since belongs to the
  next cycle — exporting it would stop every push of a busy asset.
* ``post-merge``, ``post-rewrite`` (rebase) and ``post-commit`` (a cherry-pick only): when the
  snapshot folder changed, merge it into the database, three-way only against a true common
  ancestor (PRODUCT.md §4); a rebase or an amend first moves the synced commit to its rewrite.
  A merge that fails never fails the git command: git has already moved on, so the hook says
  the merge is pending and how to retry it, and exits 0.
* every hook that saw new commits of the snapshot (pre-push's own, a pull's, a rebase's, any
  commit's) adds them to the log index, best effort, so that ``dbsync log`` finds them indexed.

Git runs hooks at the root of the work tree, so the configuration is found from there. A
repository without ``dbsync.toml`` (hooks installed through a global ``core.hooksPath``, say) is
left alone.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbsync.edges import git
from dbsync.edges.hook_env import IN_HOOK, SYNC_EXPORTED
from dbsync.errors import DatabaseUnreachable, UsageError

if TYPE_CHECKING:
    from dbsync.config import Config
    from dbsync.edges.synced import follow_rewrite
    from dbsync.runs.log import index_new_commits
    from dbsync.runs.pipeline import merge_after_pull
    from dbsync.runs.publish import publish
else:

    def _later(module: str, name: str) -> Callable[..., Any]:
        """A service function imported when it is first called: every hook starts the CLI,
        and a hook that finds nothing to do must not import the stores, the merge and the
        export to find that out."""

        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(module), name)(*args, **kwargs)

        return call

    follow_rewrite = _later("dbsync.edges.synced", "follow_rewrite")
    index_new_commits = _later("dbsync.runs.log", "index_new_commits")
    merge_after_pull = _later("dbsync.runs.pipeline", "merge_after_pull")
    publish = _later("dbsync.runs.publish", "publish")

PRE_PUSH, POST_MERGE, POST_REWRITE = "pre-push", "post-merge", "post-rewrite"
POST_COMMIT = "post-commit"
NAMES = (PRE_PUSH, POST_MERGE, POST_REWRITE, POST_COMMIT)
NO_COMMIT = "0" * 40


@dataclass
class HookOutcome:
    """The exit code git sees and the lines the hook prints (on stderr, git shows them)."""

    exit_code: int = 0
    lines: list[str] = field(default_factory=list)


def hook_call(name: str, args: list[str], config: Config, write: Callable[[str], None]) -> int:
    """``dbsync hook NAME ARGS...`` as git calls it: the hook's lines written (git shows
    stderr), its exit code returned."""
    stdin = sys.stdin.read() if name in (PRE_PUSH, POST_REWRITE) else ""
    outcome = run_hook(name, args, stdin, config)
    for line in outcome.lines:
        write(line)
    return outcome.exit_code


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
    if name == POST_COMMIT:
        return post_commit(config)
    return post_rewrite(config, stdin.splitlines(), rebase=args[:1] == ["rebase"])


# ---------------------------------------------------------------- pre-push


def _snapshot_path(config: Config) -> str:
    return os.path.relpath(config.snapshot_dir, config.root)


def _only_deletions(ref_lines: list[str]) -> bool:
    """``git push origin :branch`` pushes no commit: nothing to export for it."""
    local_ids = [line.split()[1] for line in ref_lines if len(line.split()) == 4]
    return bool(local_ids) and all(local == NO_COMMIT for local in local_ids)


def pre_push(config: Config, ref_lines: list[str]) -> HookOutcome:
    if _only_deletions(ref_lines) or os.environ.get(SYNC_EXPORTED):
        return HookOutcome()
    try:
        published = publish(config, say=_warn, warn=_warn)
    except DatabaseUnreachable as error:
        return HookOutcome(0, [f"dbsync: warning: {error.message}; the snapshot was not exported"])
    if published.commit is None:
        return HookOutcome()
    return HookOutcome(
        1,
        [
            f"dbsync: committed {published.commit[:10]} '{published.subject}'; push again to "
            "send it (git cannot add a commit to a push that has started)"
        ],
    )


# ---------------------------------------------------------------- post-merge, post-rewrite


def post_merge(config: Config, *, squash: bool) -> HookOutcome:
    """After a merge: ORIG_HEAD is where HEAD was. A squash merge committed nothing yet, so its
    snapshot is compared with HEAD in the work tree and merged two-way, naming no commit."""
    if squash:
        if not git.has_changes(config.root, _snapshot_path(config)):
            return HookOutcome()
        return merge_into_database(config, None)
    outcome = _merge_if_changed(config, ORIG_HEAD)
    index_log(config, [ORIG_HEAD])
    return outcome


ORIG_HEAD = "ORIG_HEAD"
"""Where HEAD was before a merge: named, and resolved to its commit only when a snapshot file
changed since (a hook with nothing to do makes one git call)."""


def rewritten_commits(pairs: list[str]) -> dict[str, str]:
    """post-rewrite's input, ``<old> <new> [extra]`` per line, as old -> new."""
    return {fields[0]: fields[1] for fields in map(str.split, pairs) if len(fields) >= 2}


def post_rewrite(config: Config, pairs: list[str], *, rebase: bool = True) -> HookOutcome:
    """After a rebase: ORIG_HEAD is the tip before it; failing that, the last rewritten commit.

    The synced commit follows its rewrite first (``synced.follow_rewrite``), so the merge that
    follows is three-way against it. An amend (``rebase`` False) brings nothing from another
    asset: only the synced commit is followed.
    """
    rewritten = rewritten_commits(pairs)
    last = pairs[-1].split()[0] if pairs and pairs[-1].split() else None
    before = git.rev_parse(config.root, "ORIG_HEAD") if rebase else last
    before = before or last
    follow_rewrite(config.state_dir, config.root, _snapshot_path(config), rewritten, before)
    if not rebase:
        index_log(config, git.parents(config.root))
        return HookOutcome()
    outcome = _merge_if_changed(config, before)
    index_log(config, [before] if before else [])
    return outcome


def is_cherry_pick(reflog_subject: str) -> bool:
    """``cherry-pick: ...``, or ``commit (cherry-pick): ...`` after a conflict was resolved."""
    return reflog_subject.startswith(("cherry-pick", "commit (cherry-pick)"))


def post_commit(config: Config) -> HookOutcome:
    """After a commit: only a cherry-pick brings another asset's snapshot (git runs no other
    hook for it). HEAD descends from the commit this asset synced at, so the merge of the
    picked snapshot is three-way, deletions included; other commits are not merged. Any
    commit that changed the snapshot goes into the log index."""
    subject = git.run_git(["reflog", "-1", "--format=%gs", "HEAD"], config.root, check=False)
    outcome = HookOutcome()
    if is_cherry_pick(subject.stdout.strip()):
        outcome = _merge_if_changed(config, git.rev_parse(config.root, "HEAD^"))
    index_log(config, git.parents(config.root))
    return outcome


def _merge_if_changed(config: Config, before: str | None) -> HookOutcome:
    """Merge the snapshot folder if it changed from ``before`` (a commit, or a name of one) to
    HEAD. One git call finds that nothing did (the usual pull of code): a hook that has nothing
    to do stays quick."""
    if before is None or not _changed_to_head(config, before):
        return HookOutcome()
    head, commit = git.rev_parse(config.root, "HEAD"), git.rev_parse(config.root, before)
    if head is None or commit is None or commit == head:
        return HookOutcome()
    return merge_into_database(config, head, commit)


def _changed_to_head(config: Config, before: str) -> bool:
    """Whether the snapshot folder differs between ``before`` and HEAD (``git.tree_changed``,
    which names the failure, when git cannot say at once)."""
    args = ["diff", "--quiet", "--no-ext-diff", "--no-textconv", before, "HEAD", "--"]
    result = git.run_git([*args, _snapshot_path(config)], config.root, check=False)
    if result.returncode in (0, 1):
        return result.returncode == 1
    commit, head = git.rev_parse(config.root, before), git.rev_parse(config.root, "HEAD")
    if commit is None or head is None:
        return False  # no commit before (no ORIG_HEAD yet), or none now: nothing to compare
    return git.tree_changed(config.root, commit, head, _snapshot_path(config))


def merge_into_database(config: Config, head: str | None, before: str | None = None) -> HookOutcome:
    """Merge the snapshot folder (``pipeline.merge_after_pull``); any failure becomes a
    pending merge, never a failed git run."""
    return HookOutcome(0, merge_after_pull(config, head, before))


def index_log(config: Config, since: Sequence[str]) -> None:
    """The log index learns the commits HEAD has and ``since`` has not. Best effort: the index
    is a cache, and whatever fails here costs only a slower first ``dbsync log``. A hook whose
    commits changed no snapshot file (a pull of code) finds it out with one git call."""
    try:
        if not _snapshot_commits(config, since):
            return
        commits = [git.rev_parse(config.root, name) for name in since]
        index_new_commits(config, [commit for commit in commits if commit is not None])
    except Exception:  # a cache: the hook's own work is done and must not be failed by it
        pass


def _snapshot_commits(config: Config, since: Sequence[str]) -> bool:
    """Whether the snapshot folder holds snapshot files and a commit of HEAD that ``since``
    lacks changed it (when git cannot say, it is taken as changed)."""
    if not any(config.snapshot_dir.glob("*.jsonl")):
        return False
    args = ["rev-list", "-1", "HEAD", *(f"^{commit}" for commit in since), "--"]
    result = git.run_git([*args, _snapshot_path(config)], config.root, check=False)
    return result.returncode != 0 or bool(result.stdout.strip())


def _warn(message: str) -> None:
    print(f"dbsync: warning: {message}", file=sys.stderr)
