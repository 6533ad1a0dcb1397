"""Git left mid-operation: seen by ``status``, mended by ``sync`` where it is provably dbsync's.

A ``dbsync sync`` (or the git it runs) killed at the wrong moment can leave the repository so
that every later git command stops: a lock file no process holds (``.git/index.lock``), a merge
under way (``MERGE_HEAD``), files a pull had half written. ``status`` reports each with its
fix (``leftovers``); ``sync`` and the agent repair what is theirs before they start
(``repair``) and refuse, naming the fix, what is not.

What proves a merge is sync's own: before its ``git pull``, sync writes a marker
(``database_sync/sync_pull.json``: where HEAD was, the files already changed, its process id)
and removes it once the pull is over. A merge under way at that same HEAD while the marker is
left behind (its process gone) is the one sync started; so are files the pull was bringing
that changed since. A lock file is removed only when no git process runs in the repository.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dbsync.config import Config
from dbsync.edges import git
from dbsync.edges.files import renamed_by_a_dead_writer, write_bytes_atomically
from dbsync.edges.parts import collection_files
from dbsync.edges.state import process_alive
from dbsync.edges.synced import load_synced, synced_dir
from dbsync.errors import DbsyncError, SafetyRefusal
from dbsync.runs.pipeline import merge_after_pull

MARKER = "sync_pull.json"
GIT_POLL_SECONDS = 0.1
DEGRADED, WARNING = "DEGRADED", "WARNING"
RUN_SYNC = "run 'dbsync sync'"


@dataclass(frozen=True)
class PullMarker:
    """What sync wrote before its pull: enough to tell, after a kill, what the pull did."""

    pid: int
    head: str | None
    changed_before: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Leftover:
    """One thing git was left with, as ``status`` says it."""

    level: str
    message: str
    fix: str


def load_marker(config: Config) -> PullMarker | None:
    try:
        data = json.loads((config.state_dir / MARKER).read_text())
        return PullMarker(int(data["pid"]), data.get("head"), list(data.get("changed_before", [])))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _all_changes(config: Config) -> list[str]:
    return git.changed_paths(config.root, ".")


@contextlib.contextmanager
def pulling(config: Config) -> Iterator[None]:
    """The block runs sync's ``git pull``: the marker says so until it is over. When the block
    raises, the marker stays only if a merge of the pull is still under way (``repair``
    aborts it); a killed process leaves it, which is the point."""
    marker = PullMarker(os.getpid(), git.rev_parse(config.root, "HEAD"), _all_changes(config))
    path = config.state_dir / MARKER
    write_bytes_atomically(path, json.dumps(asdict(marker)).encode())
    try:
        yield
    except BaseException:
        with contextlib.suppress(DbsyncError):  # then the marker stays, and repair aborts it
            abort_own_merge(config, marker)
        raise
    finally:
        if git.operation_in_progress(config.root) is None:
            path.unlink(missing_ok=True)


def abort_own_merge(config: Config, marker: PullMarker) -> bool:
    """Abort the merge sync's pull left under way (git stopped on a conflict the merge driver
    could not merge, say); False when there is none of sync's to abort. A merge git had
    already committed when it was killed keeps its commit: only git's merge state goes."""
    if not _own_merge(config, marker):
        return False
    git.run_git(["merge", "--abort"], config.root)
    return True


def _own_merge(config: Config, marker: PullMarker | None) -> bool:
    """Whether the merge under way is the one sync's pull started: HEAD is where the marker
    says it was, or is the merge of it with MERGE_HEAD (committed, its state not yet cleared)."""
    if marker is None or git.operation_in_progress(config.root) != git.MERGE:
        return False
    head = git.rev_parse(config.root, "HEAD")
    merging = git.rev_parse(config.root, "MERGE_HEAD")
    committed = head is not None and git.parents(config.root, head) == [marker.head, merging]
    return head == marker.head or committed


def exported_here(config: Config) -> bool:
    """Whether the snapshot folder holds, byte for byte, what this asset last exported or
    merged (its copy under ``database_sync/synced``): an uncommitted snapshot that is provably
    dbsync's own, to commit. A trailer alone proves nothing: a hand edit keeps it."""
    on_disk = collection_files(config.snapshot_dir)
    kept = collection_files(synced_dir(config.state_dir))
    if set(on_disk) != set(kept):
        return False
    for name, files in on_disk.items():
        names = [path.name for path in files.paths]
        if names != [path.name for path in kept[name].paths]:
            return False
        if not all(same_bytes(a, b) for a, b in zip(files.paths, kept[name].paths, strict=True)):
            return False
    return True


def export_killed_before_recording(config: Config, changed: list[str]) -> bool:
    """Whether the changed snapshot files are an export of this asset killed after it renamed
    them into place and before it recorded them (``files.renamed_by_a_dead_writer``)."""
    return renamed_by_a_dead_writer([config.root / path for path in changed])


def own_uncommitted_snapshot(config: Config, changed: list[str]) -> bool:
    """Whether the uncommitted snapshot changes are provably this asset's own export."""
    return exported_here(config) or export_killed_before_recording(config, changed)


def same_bytes(first: Path, second: Path) -> bool:
    return filecmp.cmp(first, second, shallow=False)


# ---------------------------------------------------------------- what status says


def leftovers(config: Config) -> list[Leftover]:
    """What git was left with here, each with its fix (none while a sync is pulling now)."""
    root = git.toplevel(config.root)
    if root is None:
        return []
    marker = load_marker(config)
    if marker is not None and marker.pid != os.getpid() and process_alive(marker.pid):
        return []  # a sync is pulling right now: what it does is not left over
    found = [_stale_lock(config, lock) for lock in git.stale_locks(config.root)]
    found += _merge_files_left(config)
    operation = git.operation_in_progress(config.root)
    if operation is not None:
        found.append(_operation_left(config, operation, marker))
    elif marker is not None and _half_pulled(config, marker):
        found.append(_pull_left(config))
    else:
        found += _conflicts_left(config)
    return found


def _stale_lock(config: Config, lock: os.PathLike[str]) -> Leftover:
    shown = os.path.relpath(lock, config.root)
    message = (
        f"git is locked by {shown}, but no git process is running here: a git command was "
        "killed and left it, and every git command that writes (pull, commit, merge) stops on it"
    )
    fix = f"{RUN_SYNC} (it removes a lock no process holds), or remove it: rm {shown}"
    return Leftover(DEGRADED, message, fix)


def _merge_files_left(config: Config) -> list[Leftover]:
    left = [path.name for path in git.stale_merge_files(config.root)]
    if not left:
        return []
    message = (
        f"git's temporary merge files are left in the work tree ({', '.join(left)}): a git "
        "merge was killed; 'git add -A' would commit them"
    )
    return [
        Leftover(
            WARNING, message, f"{RUN_SYNC} (it removes them), or remove them: rm .merge_file_*"
        )
    ]


def _operation_left(config: Config, operation: str, marker: PullMarker | None) -> Leftover:
    folder = _folder(config)
    conflicted = git.unmerged_paths(config.root, folder)
    detail = f"; conflicted: {', '.join(conflicted)}" if conflicted else ""
    if _own_merge(config, marker):
        message = f"a 'dbsync sync' was killed in the middle of its git merge{detail}"
        return Leftover(DEGRADED, message, f"{RUN_SYNC}: it aborts that merge and syncs again")
    message = (
        f"git is in the middle of a {operation}{detail}: pulls and dbsync's snapshot commits "
        "stop until it is finished or aborted"
    )
    return Leftover(DEGRADED, message, finish_or_abort(operation))


def finish_or_abort(operation: str) -> str:
    """The commands that end a git operation left under way."""
    go_on = "git rebase --continue" if operation == git.REBASE else "git commit"
    return (
        f"finish it ('git status' shows what is left; resolve, 'git add', then '{go_on}') or "
        f"abort it ('git {operation} --abort'); then {RUN_SYNC}"
    )


def _pull_left(config: Config) -> Leftover:
    message = (
        "a 'dbsync sync' was killed during its git pull and left files the pull had half "
        "written: a pull stops on them"
    )
    return Leftover(WARNING, message, f"{RUN_SYNC}: it puts them back and syncs again")


def _conflicts_left(config: Config) -> list[Leftover]:
    conflicted = git.unmerged_paths(config.root, _folder(config))
    if not conflicted:
        return []
    message = f"git left a conflict in {', '.join(conflicted)}: nothing can be committed"
    fix = (
        "take one version ('git checkout --ours -- PATH' or '--theirs'), 'git add PATH', "
        f"then {RUN_SYNC} (the next merge decides the records again, record by record)"
    )
    return [Leftover(DEGRADED, message, fix)]


def _folder(config: Config) -> str:
    return os.path.relpath(config.snapshot_dir, config.root)


# ---------------------------------------------------------------- what sync mends


def repair(
    config: Config,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Mend what a killed dbsync left in git before a sync starts; the steps it took. What is
    not provably dbsync's is refused (exit 5) with the commands that end it."""
    _wait_for_git(config, clock, sleep)
    done = [_remove_lock(config, lock) for lock in git.stale_locks(config.root)]
    done += [_remove_lock(config, path) for path in git.stale_merge_files(config.root)]
    marker = load_marker(config)
    operation = git.operation_in_progress(config.root)
    if operation is not None:
        if marker is None or not abort_own_merge(config, marker):
            raise _refusal(config, operation)
        done.append("repair: aborted the merge a killed 'dbsync sync' had left under way")
    if marker is not None:
        done += _finish_pull(config, marker)
    conflicted = git.unmerged_paths(config.root, _folder(config))
    if conflicted:
        leftover = _conflicts_left(config)[0]
        raise SafetyRefusal(leftover.message, hint=leftover.fix)
    (config.state_dir / MARKER).unlink(missing_ok=True)
    return done


def _wait_for_git(
    config: Config, clock: Callable[[], float], sleep: Callable[[float], None]
) -> None:
    """A git command still running here (a killed sync's pull goes on without it) is let
    finish, for as long as the asset's lock would be waited for."""
    started = clock()
    running = git.git_processes(config.root)
    while running and clock() - started < config.lock_timeout:
        sleep(GIT_POLL_SECONDS)
        running = git.git_processes(config.root)
    if running:
        pids = ", ".join(map(str, running))
        raise SafetyRefusal(
            f"git is running in this repository (pid {pids}) and did not finish within "
            f"{config.lock_timeout:g} s",
            hint=f"wait for it to finish, then {RUN_SYNC} again; if it is stuck, stop it "
            f"(kill {pids})",
        )


def _remove_lock(config: Config, lock: os.PathLike[str]) -> str:
    """Remove a file a killed git left (a lock, a merge driver's file); says so."""
    os.unlink(lock)
    shown = os.path.relpath(lock, config.root)
    return f"repair: removed {shown}, which no git process held (a git command was killed)"


def _refusal(config: Config, operation: str) -> SafetyRefusal:
    leftover = _operation_left(config, operation, None)
    return SafetyRefusal(
        leftover.message + "; dbsync did not start it, so it leaves it to you",
        hint=finish_or_abort(operation),
    )


def _half_pulled(config: Config, marker: PullMarker) -> list[str]:
    """The files a killed pull had written before it could finish; none once HEAD moved (the
    pull finished). A file counts when it changed since the marker, the upstream changes it,
    and it is a snapshot file (sync pulled with its snapshot committed, and a snapshot the
    merge driver merged is no version of either side) or holds exactly the upstream's
    version: never a change of the user's."""
    head, upstream = marker.head, git.rev_parse(config.root, "@{upstream}")
    if git.rev_parse(config.root, "HEAD") != head or head is None or upstream is None:
        return []
    brought = git.run_git(
        ["diff", "--name-only", "--no-renames", f"{head}...{upstream}"], config.root
    ).stdout.split("\n")
    changed = set(_all_changes(config)) - set(marker.changed_before)
    candidates = sorted(changed & {path for path in brought if path})
    folder = _folder(config)
    return [
        path
        for path in candidates
        if Path(path).is_relative_to(folder) or _as_upstream_has_it(config, path, upstream)
    ]


def _as_upstream_has_it(config: Config, path: str, upstream: str) -> bool:
    """Whether the work tree holds ``path`` exactly as ``upstream`` does (absent included)."""
    theirs = git.rev_parse_object(config.root, f"{upstream}:{path}")
    if not (config.root / path).is_file():
        return theirs is None
    ours = git.run_git(["hash-object", "--", path], config.root).stdout.strip()
    return ours == theirs


def _finish_pull(config: Config, marker: PullMarker) -> list[str]:
    """After a sync killed during its pull: put back what the pull half wrote, or, if the pull
    finished but its merge into the database did not, do that merge."""
    half = _half_pulled(config, marker)
    if half:
        _put_back(config, half)
        return [f"repair: put back {len(half)} file(s) a killed 'dbsync sync' had half pulled"]
    head = git.rev_parse(config.root, "HEAD")
    synced = load_synced(config.state_dir)
    if head is None or head == marker.head or (synced is not None and synced.commit == head):
        return []
    changed = marker.head is None or git.tree_changed(
        config.root, marker.head, head, _folder(config)
    )
    if not changed:
        return []
    lines = merge_after_pull(config, head, marker.head)
    return ["repair: merged the snapshot a killed 'dbsync sync' had pulled", *lines]


def _put_back(config: Config, paths: list[str]) -> None:
    """The files as HEAD has them; those HEAD lacks are removed."""
    tracked = git.run_git(["ls-tree", "-r", "--name-only", "HEAD", "--", *paths], config.root)
    known = set(tracked.stdout.split("\n"))
    in_head = [path for path in paths if path in known]
    if in_head:
        git.run_git(["checkout", "HEAD", "--", *in_head], config.root)
    for path in paths:
        if path not in known:
            git.run_git(["rm", "--cached", "--quiet", "--ignore-unmatch", "--", path], config.root)
            (config.root / path).unlink(missing_ok=True)
