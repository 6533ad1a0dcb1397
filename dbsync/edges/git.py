"""The only place dbsync runs git. Every call strips the ``GIT_*`` variables git sets in hooks.

A git command that fails raises ``GitFailed`` (exit code 6) with git's message, every URL in it
redacted: a remote URL can carry a password.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dbsync.edges.secrets import scrub_secrets
from dbsync.errors import GitFailed, UsageError

# What a git command run by dbsync still needs from a hook's or a user's environment: where git
# is, and how to reach and authenticate to a remote (askpass programs, ssh, proxies, TLS). The
# ones without the GIT_ prefix (SSH_AUTH_SOCK, SSH_ASKPASS...) are kept anyway.
KEPT_VARIABLES = frozenset(
    {
        "GIT_EXEC_PATH",
        "GIT_ASKPASS",
        "GIT_TERMINAL_PROMPT",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSH_VARIANT",
        "GIT_PROXY_COMMAND",
        "GIT_HTTP_PROXY_AUTHMETHOD",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "GIT_SSL_CERT",
        "GIT_SSL_KEY",
        "GIT_SSL_NO_VERIFY",
    }
)
KEPT_PREFIXES = ("GIT_CONFIG_", "GIT_AUTHOR_", "GIT_COMMITTER_")


def no_git_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without the ``GIT_*`` variables a hook inherits (they would point
    git at the caller's repository and index), keeping the ones that only carry identity or
    configuration the user chose."""
    environ = os.environ if environ is None else environ
    return {
        key: value
        for key, value in environ.items()
        if not key.startswith("GIT_") or key in KEPT_VARIABLES or key.startswith(KEPT_PREFIXES)
    }


def failed(
    what: str, result: subprocess.CompletedProcess[str], hint: str | None = None
) -> GitFailed:
    """The error for a git command that failed, in git's words (stderr, else stdout)."""
    said = result.stderr.strip() or result.stdout.strip()
    return GitFailed(scrub_secrets(f"{what} failed: {said}"), hint=hint)


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` in ``cwd``; a missing git or a failing command raises a DbsyncError.

    ``env`` replaces the environment (still without inherited ``GIT_*`` variables).
    """
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, env=no_git_env(env), capture_output=True, text=True
        )
    except FileNotFoundError:
        raise UsageError(
            "git is not installed or not on PATH", hint="install git, or run dbsync outside git"
        ) from None
    if check and result.returncode != 0:
        raise failed(f"git {' '.join(args)}", result)
    return result


def toplevel(path: Path) -> Path | None:
    """The root of the git work tree holding ``path``, or None outside git (or without git)."""
    try:
        result = run_git(["rev-parse", "--show-toplevel"], path, check=False)
    except UsageError:
        return None
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def common_dir(worktree: Path) -> Path:
    """The git directory every worktree of the repository shares (hooks live under it)."""
    output = run_git(["rev-parse", "--git-common-dir"], worktree).stdout.strip()
    return (worktree / output).resolve()


def config_get(worktree: Path, key: str, *, path: bool = False) -> str | None:
    """A git config value as git resolves it (``path``: with ``~`` expanded), or None."""
    args = ["config", "--get", *(["--type=path"] if path else []), key]
    result = run_git(args, worktree, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def config_set(worktree: Path, key: str, value: str) -> None:
    """Set ``key`` in the repository's own config (.git/config), not the user's."""
    run_git(["config", "--local", key, value], worktree)


def rev_parse(worktree: Path, revision: str) -> str | None:
    """The commit id ``revision`` names, or None when it names none (no ORIG_HEAD yet...)."""
    result = run_git(
        ["rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], worktree, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def rev_parse_object(worktree: Path, revision: str) -> str | None:
    """The id of the object ``revision`` names (``COMMIT:path``: a blob), or None."""
    result = run_git(["rev-parse", "--verify", "--quiet", revision], worktree, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def parents(worktree: Path, revision: str = "HEAD") -> list[str]:
    """The parents of the commit ``revision`` names (none: a root commit, or no such commit)."""
    result = run_git(["log", "-1", "--format=%P", revision, "--"], worktree, check=False)
    return result.stdout.split() if result.returncode == 0 else []


def is_ancestor(worktree: Path, ancestor: str, descendant: str) -> bool:
    """Whether ``descendant`` descends from ``ancestor`` (an unknown commit descends from none)."""
    result = run_git(["merge-base", "--is-ancestor", ancestor, descendant], worktree, check=False)
    return result.returncode == 0


def tree_changed(worktree: Path, old: str, new: str, path: str) -> bool:
    """Whether anything under ``path`` differs between two commits."""
    args = ["diff", "--quiet", "--no-ext-diff", "--no-textconv", old, new, "--", path]
    result = run_git(args, worktree, check=False)
    if result.returncode > 1:
        raise failed(f"git diff {old} {new}", result)
    return result.returncode == 1


def without_temporary_files(path: str) -> list[str]:
    """Pathspecs for everything under ``path`` but a temporary file (``.NAME.XXXX.tmp``): one
    left by a killed write of an older dbsync must never be committed as a snapshot."""
    return [path, f":(exclude,glob){path}/**/.*.tmp"]


def changed_paths(worktree: Path, path: str) -> list[str]:
    """The files under ``path`` that differ from HEAD in the work tree (new, modified or
    deleted), temporary files left out."""
    args = ["status", "--porcelain", "-z", "--untracked-files=all", "--"]
    output = run_git([*args, *without_temporary_files(path)], worktree).stdout
    return parse_status(output)


def parse_status(porcelain_z: str) -> list[str]:
    """The paths of ``git status --porcelain -z``: ``XY path`` entries; a rename or copy is
    followed by its source path, which is not listed."""
    entries = iter(porcelain_z.split("\0"))
    paths = []
    for entry in entries:
        if len(entry) > 3:
            paths.append(entry[3:])
            if "R" in entry[:2] or "C" in entry[:2]:
                next(entries, None)
    return paths


def has_changes(worktree: Path, path: str) -> bool:
    """Whether ``path`` differs from HEAD in the work tree (new, modified or deleted files)."""
    return bool(changed_paths(worktree, path))


def commit_path(
    worktree: Path, path: str, message: str, *, env: Mapping[str, str] | None = None
) -> str:
    """Commit everything under ``path``, and only that (other staged changes stay staged).

    ``--no-verify``: the commit is machine-made; a user's pre-commit checks must not rewrite or
    refuse generated snapshot files. ``env``: the commit's environment (what its hooks see).
    """
    run_git(["add", "--all", "--", *without_temporary_files(path)], worktree)
    commit = ["commit", "--quiet", "--no-verify", "--message", message, "--", path]
    run_git(commit, worktree, env=env)
    head = rev_parse(worktree, "HEAD")
    assert head is not None
    return head


def require_toplevel(path: Path) -> Path:
    """The work tree root, or a usage error saying that this needs a git repository."""
    root = toplevel(path)
    if root is None:
        raise UsageError(
            f"{path} is not inside a git repository",
            hint="run this in the repository that holds dbsync.toml (or 'git init' first)",
        )
    return root


# ---------------------------------------------------------------- the repository's own state

MERGE, REBASE, CHERRY_PICK, REVERT = "merge", "rebase", "cherry-pick", "revert"
_IN_PROGRESS = (
    ("rebase-merge", REBASE),
    ("rebase-apply", REBASE),
    ("MERGE_HEAD", MERGE),
    ("CHERRY_PICK_HEAD", CHERRY_PICK),
    ("REVERT_HEAD", REVERT),
)
STALE_LOCK_SECONDS = 600.0
"""Where running processes cannot be listed (no ``/proc``): a lock this old is stale."""


def git_dir(worktree: Path) -> Path:
    """This work tree's git directory (``.git``, or ``.git/worktrees/NAME`` for a worktree)."""
    return Path(run_git(["rev-parse", "--absolute-git-dir"], worktree).stdout.strip())


def operation_in_progress(worktree: Path) -> str | None:
    """The git operation left under way here (a merge, rebase, cherry-pick or revert waiting
    to be finished or aborted), or None."""
    folder = git_dir(worktree)
    for marker, operation in _IN_PROGRESS:
        if (folder / marker).exists():
            return operation
    return None


def unmerged_paths(worktree: Path, path: str) -> list[str]:
    """The files under ``path`` that git left with a conflict (unmerged index entries)."""
    output = run_git(["ls-files", "--unmerged", "-z", "--", path], worktree).stdout
    names = (entry.split("\t", 1)[1] for entry in output.split("\0") if "\t" in entry)
    return sorted(set(names))


def lock_files(worktree: Path) -> list[Path]:
    """The lock files git leaves when a command that writes is killed: the index, HEAD and the
    current branch (the ones every commit, merge and pull needs)."""
    folder = git_dir(worktree)
    candidates = [folder / "index.lock", folder / "HEAD.lock"]
    branch = run_git(["symbolic-ref", "--quiet", "HEAD"], worktree, check=False).stdout.strip()
    if branch:
        candidates.append(common_dir(worktree) / f"{branch}.lock")
    return [path for path in candidates if path.exists()]


def git_processes(worktree: Path) -> list[int] | None:
    """The git processes working in this repository (their working folder is inside the work
    tree or the git directory); None where this cannot be told (no ``/proc``)."""
    processes = Path("/proc")
    if not (processes / "self").exists():
        return None
    places = (worktree.resolve(), git_dir(worktree).resolve())
    found = []
    for entry in processes.iterdir():
        if entry.name.isdigit() and _runs_git_in(entry, places):
            found.append(int(entry.name))
    return sorted(found)


def _runs_git_in(process: Path, places: Sequence[Path]) -> bool:
    try:
        if not (process / "comm").read_text().startswith("git"):
            return False
        cwd = Path(os.readlink(process / "cwd"))
    except OSError:  # gone meanwhile, a zombie, or another user's
        return False
    return any(cwd == place or place in cwd.parents for place in places)


MERGE_FILE = re.compile(r"\.merge_file_[A-Za-z0-9]{6}")
"""The name of the files git writes for a merge driver (``%O %A %B``) at the root of the
work tree, and removes after it: left only by a git that was killed."""


def stale_merge_files(worktree: Path) -> list[Path]:
    """Merge driver files a killed git left at the root of the work tree (untracked, no git
    running here: never a file of the user's by that name)."""
    found = [path for path in worktree.iterdir() if MERGE_FILE.fullmatch(path.name)]
    if not found or git_processes(worktree):
        return []
    tracked = run_git(["ls-files", "--", *(path.name for path in found)], worktree).stdout
    return [path for path in found if path.name not in tracked.split("\n")]


def stale_locks(worktree: Path, *, now: float | None = None) -> list[Path]:
    """Lock files no git process holds: left by a git command that was killed. While git runs
    here, none is stale; without ``/proc``, a lock older than ``STALE_LOCK_SECONDS`` is."""
    locks = lock_files(worktree)
    if not locks:
        return []
    running = git_processes(worktree)
    if running is None:
        moment = time.time() if now is None else now
        return [lock for lock in locks if moment - _modified(lock) > STALE_LOCK_SECONDS]
    return [] if running else locks


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def recent_commits(worktree: Path, limit: int) -> list[tuple[str, int, str]]:
    """The newest ``limit`` commits of HEAD as (sha, commit time in epoch seconds, subject)."""
    result = run_git(["log", f"-n{limit}", "--format=%H%x1f%ct%x1f%s"], worktree, check=False)
    return [_fields(line) for line in result.stdout.splitlines() if line.count("\x1f") == 2]


def reflog(worktree: Path) -> list[tuple[str, int, str]]:
    """HEAD's reflog in this clone, newest first: (sha, when in epoch seconds, what moved it,
    e.g. ``commit: ...``, ``pull: Fast-forward``)."""
    command = ["reflog", "--date=unix", "--format=%H%x1f%gd%x1f%gs"]
    result = run_git(command, worktree, check=False)
    entries = []
    for line in result.stdout.splitlines():
        if line.count("\x1f") != 2:
            continue
        sha, selector, action = line.split("\x1f", 2)
        stamp = selector.rpartition("@{")[2].rstrip("}")
        if stamp.isdigit():
            entries.append((sha, int(stamp), action))
    return entries


def _fields(line: str) -> tuple[str, int, str]:
    sha, stamp, subject = line.split("\x1f", 2)
    return sha, int(stamp) if stamp.isdigit() else 0, subject


# ---------------------------------------------------------------- reading history


@dataclass(frozen=True)
class LoggedCommit:
    """One commit of ``git log``: its id, its parents within the logged history, and who."""

    sha: str
    parents: tuple[str, ...]
    date: str
    author: str
    subject: str


_FIELD = "\x1f"


def parse_log_record(text: str) -> LoggedCommit:
    """One ``%H %P<US>%aI<US>%an<US>%s`` record of ``log_commits``."""
    ids, date, author, subject = text.rstrip("\n").split(_FIELD, 3)
    sha, *parents = ids.split()
    return LoggedCommit(sha, tuple(parents), date, author, subject)


def log_commits(
    worktree: Path, paths: Sequence[str], start: str = "HEAD", *, since: Sequence[str] = ()
) -> Generator[LoggedCommit, None, None]:
    """The commits reachable from ``start`` that changed ``paths`` (pathspecs), newest first,
    streamed: stopping early stops git; with ``since``, only those not reachable from these
    commits. Parents are rewritten to the logged commits (git's history simplification), so a
    commit's parents are the versions it changed."""
    args = [
        "log",
        "--parents",
        f"--format=%H %P{_FIELD}%aI{_FIELD}%an{_FIELD}%s",
        start,
        *(f"^{commit}" for commit in since),
        "--",
        *paths,
    ]
    with _popen(args, worktree, stdin=False) as process:
        assert process.stdout is not None
        for line in process.stdout:  # one line per commit: %s is a single line
            yield parse_log_record(line.decode(errors="replace"))
        _check_exit(process, args)


@contextmanager
def _popen(args: Sequence[str], cwd: Path, *, stdin: bool) -> Iterator[subprocess.Popen[bytes]]:
    try:
        process = subprocess.Popen(
            ["git", *args],
            cwd=cwd,
            env=no_git_env(),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise UsageError(
            "git is not installed or not on PATH", hint="install git, or run dbsync outside git"
        ) from None
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _check_exit(process: subprocess.Popen[bytes], args: Sequence[str]) -> None:
    assert process.stderr is not None
    if process.wait() != 0:
        problem = process.stderr.read().decode(errors="replace").strip()
        raise GitFailed(scrub_secrets(f"git {' '.join(args[:1])} failed: {problem}"))


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    name: str
    sha: str


def parse_tree(data: bytes) -> list[TreeEntry]:
    """The entries of a raw tree object (``<mode> <name>\\0<20-byte id>`` one after another)."""
    entries, position = [], 0
    while position < len(data):
        space = data.index(b" ", position)
        nul = data.index(b"\0", space)
        sha = data[nul + 1 : nul + 21].hex()
        entries.append(
            TreeEntry(data[position:space].decode(), data[space + 1 : nul].decode(), sha)
        )
        position = nul + 21
    return entries


class ObjectReader:
    """One ``git cat-file --batch`` process answering many object requests: a history of
    thousands of commits costs one process, not thousands."""

    def __init__(self, worktree: Path) -> None:
        self._context = _popen(["cat-file", "--batch"], worktree, stdin=True)
        self._process = self._context.__enter__()

    def read(self, name: str) -> tuple[str, bytes] | None:
        """The id and content of the object ``name`` names (``COMMIT:path``, an id), or None."""
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(name.encode() + b"\n")
        process.stdin.flush()
        answer = process.stdout.readline()
        if not answer:
            raise GitFailed("git cat-file stopped unexpectedly")
        fields = answer.split()
        if len(fields) != 3:  # "<name> missing" or "ambiguous"
            return None
        size = int(fields[2])
        data = process.stdout.read(size)
        process.stdout.read(1)  # the newline after the content
        return fields[0].decode(), data

    def close(self) -> None:
        self._context.__exit__(None, None, None)

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
