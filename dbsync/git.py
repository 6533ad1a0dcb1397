"""The only place dbsync runs git. Every call strips the ``GIT_*`` variables git sets in hooks."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from dbsync.errors import DbsyncError, UsageError


def no_git_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without the ``GIT_*`` variables a hook inherits (they would point
    git at the caller's repository and index), keeping the ones that only carry identity or
    configuration the user chose."""
    environ = os.environ if environ is None else environ
    keep = {"GIT_EXEC_PATH", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSL_CAINFO", "GIT_SSL_NO_VERIFY"}
    return {
        key: value
        for key, value in environ.items()
        if not key.startswith("GIT_")
        or key in keep
        or key.startswith("GIT_CONFIG_")
        or key.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_"))
    }


def run_git(
    args: Sequence[str], cwd: Path, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` in ``cwd``; a missing git or a failing command raises a DbsyncError."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, env=no_git_env(), capture_output=True, text=True
        )
    except FileNotFoundError:
        raise UsageError(
            "git is not installed or not on PATH", hint="install git, or run dbsync outside git"
        ) from None
    if check and result.returncode != 0:
        raise DbsyncError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def toplevel(path: Path) -> Path | None:
    """The root of the git work tree holding ``path``, or None outside git (or without git)."""
    try:
        result = run_git(["rev-parse", "--show-toplevel"], path, check=False)
    except UsageError:
        return None
    return Path(result.stdout.strip()) if result.returncode == 0 else None
