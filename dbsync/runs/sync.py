"""``dbsync sync``: pull (which merges), export, commit, push — the whole cycle in one command.

The git commands it runs fire dbsync's own hooks. They must neither wait on the lock this run
holds (the lock lets a child of the holder through) nor merge twice: when the post-merge hook is
installed it is the hook that merges what the pull brought, and this command shows what the hook
and the merge driver said; without hooks, this command merges itself.

Several assets syncing at once: a push refused because another asset pushed first (git's
"fetch first" or "non-fast-forward", or "cannot lock ref": the other push landed while ours was
being received) is answered by pulling what it pushed — the merge driver merges the snapshot
files record by record — and pushing again at once, without exporting again: what the
application wrote since belongs to the next cycle. The database is merged with what those pulls
brought once, after the last push, in this process (the post-merge hook stands aside for them).
The push tells the pre-push hook so (``SYNC_EXPORTED``), so that the hook lets it go instead of
exporting and stopping it. Before each new attempt sync waits a random moment, up to a backoff
that doubles (assets that lost together must not collide again together), and it keeps trying
for ``--push-retry`` seconds (``DBSYNC_PUSH_RETRY_SECONDS``); when that runs out, the asset holds
everything it pulled, merged, and its own snapshot committed: the next sync pushes it.

Git state a killed run left (a lock, a merge under way, a half-written pull) is repaired first
(``dbsync.runs.git_state``); a snapshot this asset exported and did not commit (a killed sync, a
``dbsync export``) is committed before the pull, which would otherwise stop on it.
"""

from __future__ import annotations

import datetime
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from dbsync.config import Config
from dbsync.core.merge import OURS
from dbsync.edges import git
from dbsync.edges import installer as hooks
from dbsync.edges.files import remove_stale_scratch_folders
from dbsync.edges.hook_env import IN_HOOK, SYNC_EXPORTED
from dbsync.edges.parts import collection_files
from dbsync.edges.snapshot_files import read_sections
from dbsync.edges.state import now_text
from dbsync.edges.sync_log import (
    FAILED,
    LOSING_FIX,
    SUCCEEDED,
    SyncCycle,
    losing_streak,
    recent_cycles,
    record_cycle,
)
from dbsync.edges.synced import load_synced, save_synced
from dbsync.errors import DbsyncError, GitFailed, SafetyRefusal, UsageError
from dbsync.runs import git_state
from dbsync.runs.pending import queue_pending
from dbsync.runs.pipeline import changing_run, merge_after_pull
from dbsync.runs.publish import commit_snapshot, publish

# Merge, whatever pull.rebase, pull.ff or merge.ff say: a merge runs the merge driver on the
# snapshot files and the post-merge hook; a fast-forward when possible; never an editor.
PULL_MODE = ("--no-rebase", "--ff", "--no-edit")
PUSH_RETRY_VARIABLE = "DBSYNC_PUSH_RETRY_SECONDS"
DEFAULT_PUSH_RETRY_SECONDS = 120.0
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 0.5
JUST_WON_SECONDS = 10.0
COURTESY_SECONDS = 1.5
"""An asset whose last sync won a push race (it had lost one first) less than
``JUST_WON_SECONDS`` ago waits this long, and up to as long again, before it pulls: what those
it beat need to merge its commit and push."""
_LOST_RACE = ("cannot lock ref", "failed to update ref", "failed to lock", "incorrect old value")
"""How a remote says another push updated the branch while ours was being received."""
_REPORT_STAMP = "%Y%m%dT%H%M%S%f"  # the time in a merge report's name (``runs.merge``)
_HOOK_SAID = "dbsync: "
_WARNINGS = ("dbsync: warning: ", "warning: ")  # the hooks', the merge driver's (and git's)

Say = Callable[[str], None]


@dataclass
class SyncResult:
    """What one cycle did, in the order it did it, for the one-screen summary."""

    steps: list[str] = field(default_factory=list)
    pushed: bool = False
    merges: list[str] = field(default_factory=list)
    """What the merge driver and the post-merge hook said they merged, in their words."""
    warnings: list[str] = field(default_factory=list)
    push_attempts: int = 0
    conflicts: int = 0
    """Conflicts decided on this asset during the cycle; ``own_lost``: this asset's version
    lost them."""
    own_lost: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "steps": self.steps,
            "pushed": self.pushed,
            "push_attempts": self.push_attempts,
            "merges": self.merges,
            "warnings": self.warnings,
            "conflicts": {"decided": self.conflicts, "own_version_lost": self.own_lost},
        }


@dataclass(frozen=True)
class PushRetry:
    """How long, and how, a push refused for another asset's push is tried again; and how long
    an asset that has just won waits before it races again."""

    seconds: float = DEFAULT_PUSH_RETRY_SECONDS
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    draw: Callable[[], float] = random.random
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)

    def pause(self, attempt: int) -> float:
        """Full jitter: a random wait up to a backoff doubling from the first retry."""
        doubled = FIRST_BACKOFF_SECONDS * (1 << min(attempt, 16))
        return self.draw() * min(MAX_BACKOFF_SECONDS, doubled)

    def courtesy(self, cycles: list[SyncCycle]) -> float:
        """How long to let others go first: an asset whose last push won a race moments ago is
        ready again long before those it beat (each must merge its commit first), and would
        win every race; it waits about as long as their merge takes. Otherwise (no race, or
        not lately) nothing."""
        if not cycles or cycles[0].outcome != SUCCEEDED or cycles[0].pushes < 2:
            return 0.0
        since = (self.now() - datetime.datetime.fromisoformat(cycles[0].time)).total_seconds()
        if not 0 <= since < JUST_WON_SECONDS:
            return 0.0
        return COURTESY_SECONDS * (1 + self.draw())


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


# ---------------------------------------------------------------- pull


def pull(config: Config, result: SyncResult) -> None:
    """``git pull`` (merging); what the merge driver and the hooks said goes into ``result``;
    the snapshot is merged here only when no post-merge hook of ours did it."""
    with git_state.pulling(config):
        before, head = _pull(config, result)
        if head == before or hooks.merge_hooks_installed(config.root):
            return
        if before is None or git.tree_changed(config.root, before, head, _snapshot_path(config)):
            merge_pulled(config, result, head, before)


def pull_files_only(config: Config, result: SyncResult) -> None:
    """``git pull`` that merges the snapshot files (the merge driver) but not yet the database
    (the post-merge hook is told to stand aside): the push that follows goes at once, and
    ``merge_pulled`` merges the database after it. Queued as a pending merge meanwhile, so that
    a sync killed between the two leaves the merge to the next command, not to nobody."""
    with git_state.pulling(config):
        before, head = _pull(config, result, {**os.environ, IN_HOOK: "sync"})
        if head != before:
            queue_pending(config, config.snapshot_dir, head, "pulled while pushing; not merged yet")


def merge_pulled(config: Config, result: SyncResult, head: str | None, before: str | None) -> None:
    """Merge the snapshot as of ``head`` into the database, as the post-merge hook would."""
    heard_from_hooks("\n".join(merge_after_pull(config, head, before)), result)


def _pull(
    config: Config, result: SyncResult, env: dict[str, str] | None = None
) -> tuple[str | None, str]:
    """Run ``git pull`` (inside ``git_state.pulling``); where HEAD was before, and is now."""
    before = git.rev_parse(config.root, "HEAD")
    pulled = git.run_git(["pull", *PULL_MODE], config.root, check=False, env=env)
    if pulled.returncode != 0:
        raise git.failed(
            "git pull",
            pulled,
            hint="if git stopped in the middle of the merge, dbsync aborted it (nothing "
            "changed here); resolve what git says, then run dbsync sync again",
        )
    head = git.rev_parse(config.root, "HEAD") or "HEAD"
    if head == before:
        result.steps.append("pull: already up to date")
    else:
        result.steps.append(f"pull: {before and before[:10]} → {head[:10]}")
    heard_from_hooks(pulled.stderr, result)
    return before, head


def heard_from_hooks(output: str, result: SyncResult) -> None:
    """The lines dbsync's hooks and merge driver printed during a git command (``dbsync: ...``,
    and the ``hint:`` after a warning), as merge steps and warnings."""
    previous = ""
    for line in output.splitlines():
        warning = next((line[len(p) :] for p in _WARNINGS if line.startswith(p)), None)
        if warning is not None:
            result.warnings.append(warning)
        elif line.startswith("hint: ") and previous.startswith((*_WARNINGS, "hint: ")):
            result.warnings[-1] += f" ({line})"
        elif line.startswith(_HOOK_SAID):
            said = line.removeprefix(_HOOK_SAID)
            result.merges.append(said)
            result.steps.append(f"merge: {said}")
        previous = line


# ---------------------------------------------------------------- export and commit


def export_and_commit(config: Config, result: SyncResult, say: Say) -> None:
    """Export (recorded as an export run of its own, inside this one), commit if it changed."""
    published = publish(config, say=say, warn=say)
    if published.commit is None:
        records = published.exported.records
        result.steps.append(f"export: {records} records, snapshot unchanged")
        return
    result.steps.append(f"export: committed {published.commit[:10]}")


def commit_own_export(config: Config, result: SyncResult) -> None:
    """A snapshot this asset exported and nobody committed (a sync killed after its export, a
    ``dbsync export`` by hand) is committed, so that the pull does not stop on it; a change
    dbsync did not write is refused: it is the user's to keep or drop."""
    folder = _snapshot_path(config)
    changed = git.changed_paths(config.root, folder)
    if not changed:
        return
    on_disk = collection_files(config.snapshot_dir)
    if not git_state.exported_here(config):
        if not git_state.export_killed_before_recording(config, changed):
            raise _not_own(folder, changed)
        sections = (
            (section.header, section.records)
            for files in on_disk.values()
            for path in files.paths
            for section in read_sections(path)
        )
        save_synced(config.state_dir, sections, None)  # what the killed export did not record
        result.steps.append("repair: recorded the export a killed run had written")
    commit = commit_snapshot(config, sum(files.records() or 0 for files in on_disk.values()))
    save_synced(config.state_dir, [], commit)
    result.steps.append(f"export: committed {commit[:10]}, left uncommitted by an earlier export")


def _not_own(folder: str, changed: list[str]) -> SafetyRefusal:
    shown = ", ".join(changed[:3]) + ("..." if len(changed) > 3 else "")
    return SafetyRefusal(
        f"{folder} has changes that are not committed and that are not what this asset "
        f"exported ({shown}): a pull would stop on them",
        hint=f"look at them ('git status {folder}', 'dbsync diff {folder} db'), then commit "
        f"them or drop them ('git checkout -- {folder}'), and run dbsync sync again",
    )


# ---------------------------------------------------------------- push


def push(config: Config, result: SyncResult, retry: PushRetry, say: Say) -> None:
    """Push; while another asset's push came first, pull what it pushed and push again at once,
    without exporting again, with jittered backoff, for ``retry.seconds``. The database is
    merged with what those pulls brought once, after the last push (``pull_files_only``)."""
    first = git.rev_parse(config.root, "HEAD")
    try:
        pushed = _push_until_accepted(config, result, retry, say)
    except DbsyncError:
        _merge_since(config, result, first)
        raise
    _merge_since(config, result, first)
    if not pushed:
        raise not_pushed(config, result, retry)


def _merge_since(config: Config, result: SyncResult, first: str | None) -> None:
    """Merge into the database what the pulls of the push retries brought, if any. (Not on
    Ctrl-C: the merge stays queued as pending for the next command.)"""
    head = git.rev_parse(config.root, "HEAD")
    if head != first:
        merge_pulled(config, result, head, first)


def _push_until_accepted(config: Config, result: SyncResult, retry: PushRetry, say: Say) -> bool:
    """Whether the push went through before ``retry.seconds`` ran out."""
    started = retry.clock()
    environment = {**os.environ, SYNC_EXPORTED: "1"}
    while True:
        result.push_attempts += 1
        pushed = git.run_git(["push", "--porcelain"], config.root, check=False, env=environment)
        if pushed.returncode == 0:
            retried = result.push_attempts - 1
            result.steps.append(f"push: done{f' after {retried} retries' if retried else ''}")
            result.pushed = True
            return True
        if not another_asset_pushed_first(pushed.stdout, pushed.stderr):
            raise git.failed("git push", pushed)
        say(
            f"push refused: another asset pushed first (attempt {result.push_attempts}); "
            "merging what it pushed, then pushing again"
        )
        retry.sleep(retry.pause(result.push_attempts - 1))
        pull_files_only(config, result)
        if retry.clock() - started >= retry.seconds:
            return False


def not_pushed(config: Config, result: SyncResult, retry: PushRetry) -> GitFailed:
    """Giving up: everything pulled is merged (into the database too, unless that merge is
    left pending: then it says so), this asset's snapshot committed, only not pushed."""
    head = git.rev_parse(config.root, "HEAD") or "HEAD"
    synced = load_synced(config.state_dir)
    merged = synced is not None and synced.commit == head
    where = (
        "the database and the snapshot agree"
        if merged
        else "in the snapshot; its merge into the database is pending, see 'dbsync status'"
    )
    return GitFailed(
        f"git push was refused {result.push_attempts} times in {retry.seconds:g} s: other "
        f"assets kept pushing first. Everything they pushed is merged here ({where}), at "
        f"commit {head[:10]}, which holds this asset's changes too; it is not pushed yet",
        hint=f"run dbsync sync again (or 'git push'): it sends commit {head[:10]}; "
        f"{PUSH_RETRY_VARIABLE}=SECONDS (or --push-retry) keeps trying longer",
    )


def rejected_as_behind(porcelain: str) -> bool:
    """Whether ``git push --porcelain`` says a ref was refused for being behind the remote
    (``!`` then ``[rejected]``: fetch first, non-fast-forward), not refused by the remote."""
    return any(summary.startswith("[rejected]") for summary in _refused(porcelain))


def lost_push_race(porcelain: str, stderr: str = "") -> bool:
    """Whether the remote refused a ref because another push updated it while ours was being
    received (``[remote rejected] (failed to update ref)``, "cannot lock ref ... is at X but
    expected Y"), not for a reason of its own (a hook, a protected branch)."""
    for summary in _refused(porcelain):
        said = f"{summary}\n{stderr}"
        if summary.startswith("[remote rejected]") and any(w in said for w in _LOST_RACE):
            return True
    return False


def another_asset_pushed_first(porcelain: str, stderr: str) -> bool:
    return rejected_as_behind(porcelain) or lost_push_race(porcelain, stderr)


def _refused(porcelain: str) -> list[str]:
    """The summaries of the refs ``git push --porcelain`` refused (lines flagged ``!``)."""
    summaries = []
    for line in porcelain.splitlines():
        flag, _, rest = line.partition("\t")
        if flag == "!":
            summaries.append(rest.partition("\t")[2])
    return summaries


# ---------------------------------------------------------------- the cycle


def sync(config: Config, retry: PushRetry, say: Say) -> SyncResult:
    """One whole cycle; stops at the first step that fails, saying what to do."""
    git.require_toplevel(config.root)
    result = SyncResult()
    upstream = _upstream(config.root)
    result.steps.append(f"upstream: {upstream}")
    result.steps += git_state.repair(config)
    commit_own_export(config, result)
    courtesy = retry.courtesy(recent_cycles(config.state_dir))
    if courtesy:
        say(f"waiting {courtesy:.1f} s: this asset pushed moments ago, the others go first")
        retry.sleep(courtesy)
    pull(config, result)
    export_and_commit(config, result, say)
    push(config, result, retry, say)
    return result


def sync_run(
    config: Config, warn: Say, *, say: Say | None = None, retry: PushRetry | None = None
) -> SyncResult:
    """The whole cycle as one changing run (``dbsync.runs.pipeline``): under the asset's lock (the
    hooks it fires pass, as children of the holder), recorded, pending merges retried first;
    its outcome goes to the sync log ``status`` reads (usage errors are no failed cycle)."""
    retry = retry or PushRetry()
    with changing_run(config, "sync", say=warn, warn=warn):
        remove_stale_scratch_folders()
        started = datetime.datetime.now(datetime.timezone.utc).strftime(_REPORT_STAMP)
        try:
            result = sync(config, retry, say or warn)
        except UsageError:
            raise
        except DbsyncError as error:
            decided, lost = conflicts_since(config, started)
            _record(config, SyncCycle(now_text(), FAILED, error.message, error.hint, decided, lost))
            raise
        decided, lost = conflicts_since(config, started)
        result.conflicts, result.own_lost = decided, lost
        pushes = result.push_attempts
        _record(config, SyncCycle(now_text(), SUCCEEDED, None, None, decided, lost, pushes))
        tell_losses(config, result)
        return result


def _record(config: Config, cycle: SyncCycle) -> None:
    try:
        record_cycle(config.state_dir, cycle)
    except OSError:
        pass  # bookkeeping: the cycle's outcome is in the history and its exit code


def conflicts_since(config: Config, stamp: str) -> tuple[int, int]:
    """The conflicts the merge reports written since ``stamp`` decided, and how many of them
    this asset's own version lost (``core.merge.losing_side``)."""
    folder = config.state_dir / "reports"
    decided = lost = 0
    for path in sorted(folder.glob("merge_report_*.json")) if folder.is_dir() else []:
        if path.stem.removeprefix("merge_report_") < stamp:
            continue
        try:
            report = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        for counts in report.get("collections", {}).values():
            for conflict in counts.get("conflicts", []):
                decided += 1
                lost += conflict.get("lost") == OURS
    return decided, lost


def tell_losses(config: Config, result: SyncResult) -> None:
    """Say when this asset's own edits lost conflicts in this cycle, and louder when they keep
    losing (its clock may run behind, or another asset keeps editing the same records)."""
    if result.own_lost:
        result.warnings.append(
            f"this asset's own version lost {result.own_lost} of the {result.conflicts} "
            "conflict(s) decided in this sync: 'dbsync conflicts' lists them, 'dbsync conflicts "
            "restore ID' brings one back"
        )
    streak = losing_streak(recent_cycles(config.state_dir))
    if streak is not None:
        result.warnings.append(f"{streak.describe()}; {LOSING_FIX}")
