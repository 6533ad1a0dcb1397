"""Git integration setup: hook scripts, the merge and diff drivers, ``.gitattributes``.

Hooks are installed the way pre-commit installs its own: one script per hook, carrying an ID
marker line, written where git looks for hooks (``core.hooksPath`` when set, else the hooks folder
of the git directory every worktree shares). A foreign hook found there is moved to
``<hook>.legacy``, still run by the script, and put back by ``uninstall``.

The scripts ship in the package, ``dbsync/integration/scripts/`` (beside what they run). Installing
bakes in the Python that installed dbsync, so the hook finds it without an activated virtualenv;
an unbaked script runs the ``dbsync`` on PATH.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from dbsync.edges import git
from dbsync.edges.files import write_bytes_atomically
from dbsync.errors import DbsyncError, SafetyRefusal

HOOK_NAMES = ("pre-push", "post-merge", "post-rewrite", "post-commit")
MARKER = "dbsync-hook-id: 5d1c7e0a93b4"
TEMPLATE_START = "# start templated\n"
TEMPLATE_END = "# end templated\n"
DRIVER = "dbsync"
INSTALLED, FOREIGN, MISSING = "installed", "foreign", "missing"


# ---------------------------------------------------------------- the scripts


def _package() -> Path:
    """The folder of this dbsync package."""
    return Path(__file__).resolve().parent.parent


def scripts_dir() -> Path:
    """``dbsync/integration/scripts/``: the hook scripts ship inside the package."""
    package = _package()
    candidate = package / "integration" / "scripts"
    if all((candidate / name).is_file() for name in HOOK_NAMES):
        return candidate
    raise DbsyncError(
        f"dbsync's hook scripts are missing from its installation ({package})",
        hint="reinstall dbsync (pip install --force-reinstall dbsync)",
    )


def script_text(name: str, python: str | None) -> str:
    """The hook script, with ``python`` baked in (None: it runs the ``dbsync`` on PATH), and,
    when that python is this one, the folder of this dbsync: the script sees it is still
    installed by a file test, not by starting a python to import it (every hook runs it)."""
    text = (scripts_dir() / name).read_text()
    before, rest = text.split(TEMPLATE_START)
    _, after = rest.split(TEMPLATE_END)
    value = shlex.quote(python) if python else ""
    here = shlex.quote(str(_package())) if python == sys.executable else ""
    baked = f"DBSYNC_PYTHON={value}\nDBSYNC_PACKAGE={here}\n"
    return f"{before}{TEMPLATE_START}{baked}{TEMPLATE_END}{after}"


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(errors="replace")
    except OSError:
        return False


# ---------------------------------------------------------------- where hooks go


@dataclass(frozen=True)
class HookPlace:
    """The folder git runs hooks from. ``in_work_tree``: a hooks folder shared through git."""

    directory: Path
    from_hooks_path: bool
    in_work_tree: bool


def hook_place(root: Path) -> HookPlace:
    """``core.hooksPath`` (relative to the work tree, as git reads it) or the common hooks folder.

    A hooks folder inside the work tree is tracked by git and shared by every asset, so the
    scripts written there name no Python of this machine: they run the ``dbsync`` on PATH.
    """
    configured = git.config_get(root, "core.hooksPath", path=True)
    git_dir = git.common_dir(root)
    if not configured:
        return HookPlace(git_dir / "hooks", False, False)
    directory = (root / configured).resolve()
    inside = directory.is_relative_to(root.resolve()) and not directory.is_relative_to(git_dir)
    return HookPlace(directory, True, inside)


# ---------------------------------------------------------------- install and uninstall


@dataclass(frozen=True)
class HookChange:
    name: str
    path: Path
    action: str  # "installed", "updated", "removed", "not ours, left alone", "not installed"
    legacy: Path | None = None  # the foreign hook kept next to it, or put back


def _legacy(path: Path) -> Path:
    return path.with_name(path.name + ".legacy")


def _check_installable(directory: Path) -> None:
    """Refuse before changing anything when a foreign hook and a ``.legacy`` both exist."""
    for name in HOOK_NAMES:
        hook, legacy = directory / name, _legacy(directory / name)
        if os.path.lexists(hook) and not is_ours(hook) and os.path.lexists(legacy):
            raise SafetyRefusal(
                f"{hook} is not dbsync's, and {legacy.name} already exists next to it: "
                "keeping the one would overwrite the other",
                hint=f"merge the two scripts into {legacy.name} (or delete one), "
                "then run 'dbsync hooks install' again",
            )


def _install_one(hook: Path, text: str) -> HookChange:
    legacy = _legacy(hook)
    action = "updated" if is_ours(hook) else "installed"
    if os.path.lexists(hook) and not is_ours(hook):
        os.replace(hook, legacy)
    write_bytes_atomically(hook, text.encode())
    hook.chmod(0o755)
    return HookChange(hook.name, hook, action, legacy if os.path.lexists(legacy) else None)


@dataclass(frozen=True)
class Installed:
    place: HookPlace
    hooks: list[HookChange]
    drivers_changed: bool
    pull_rebase_set: bool = False
    """``pull.rebase false`` was set in the repository's config by this install."""


def install(root: Path, python: str = sys.executable) -> Installed:
    """The local, untracked parts of the integration: the drivers' git config, the pull
    setting a plain ``git pull`` needs, and the hooks.

    Idempotent: a reinstall refreshes the baked Python (after a virtualenv moved, say).
    """
    place = hook_place(root)
    _check_installable(place.directory)
    baked = None if place.in_work_tree else python
    hooks = [_install_one(place.directory / name, script_text(name, baked)) for name in HOOK_NAMES]
    return Installed(place, hooks, configure_drivers(root, python), configure_pull(root))


def _uninstall_one(hook: Path) -> HookChange:
    if not os.path.lexists(hook):
        return HookChange(hook.name, hook, "not installed")
    if not is_ours(hook):
        return HookChange(hook.name, hook, "not ours, left alone")
    hook.unlink()
    legacy = _legacy(hook)
    if not os.path.lexists(legacy):
        return HookChange(hook.name, hook, "removed")
    os.replace(legacy, hook)
    return HookChange(hook.name, hook, "removed", legacy)


def uninstall_hooks(root: Path) -> list[HookChange]:
    """Remove dbsync's scripts and put back the hooks they replaced. Drivers stay configured."""
    directory = hook_place(root).directory
    return [_uninstall_one(directory / name) for name in HOOK_NAMES]


# ---------------------------------------------------------------- drivers and attributes


def driver_settings(python: str = sys.executable) -> dict[str, str]:
    """The git config of the merge and diff drivers, run by the Python that installed them.

    The diff driver has two entries on purpose: ``git diff`` runs the external ``command``
    (record-level changes, field by field); ``git log -p`` and ``git show`` do not run external
    diff commands unless given ``--ext-diff``, but do apply ``textconv``, which renders each
    record on one line so that git's own line diff shows one line per changed record.

    Git runs these through the shell at the root of the work tree: the path is quoted, and
    ``PYTHONSAFEPATH`` keeps a ``dbsync/`` folder there from shadowing the installed dbsync.
    """
    run = f"PYTHONSAFEPATH=1 {shlex.quote(python)} -m dbsync"
    return {
        f"merge.{DRIVER}.name": "dbsync: record-level merge of snapshot files",
        f"merge.{DRIVER}.driver": f"{run} merge-driver %O %A %B %P",
        f"diff.{DRIVER}.command": f"{run} diff-driver",
        f"diff.{DRIVER}.textconv": f"{run} diff-driver --textconv --",
    }


def configure_drivers(root: Path, python: str = sys.executable) -> bool:
    """Write the driver entries to the repository's config; True when something changed."""
    changed = False
    for key, value in driver_settings(python).items():
        if git.config_get(root, key) != value:
            git.config_set(root, key, value)
            changed = True
    return changed


def attributes_line(snapshot_dir: str) -> str:
    """Snapshot files get the drivers; ``-text``: no end-of-line conversion may touch them."""
    return f"{snapshot_dir}/*.jsonl -text merge={DRIVER} diff={DRIVER}"


def ensure_gitattributes(root: Path, snapshot_dir: str) -> bool:
    """Add the snapshot line to ``.gitattributes`` unless it is there; True when added."""
    path = root / ".gitattributes"
    text = path.read_text() if path.exists() else ""
    line = attributes_line(snapshot_dir)
    if line in (existing.strip() for existing in text.splitlines()):
        return False
    prefix = "" if not text or text.endswith("\n") else "\n"
    write_bytes_atomically(path, (text + prefix + line + "\n").encode())
    return True


def snapshot_attributes(root: Path, snapshot_dir: str) -> dict[str, str]:
    """The merge and diff attributes git gives a snapshot file (git's own reading)."""
    probe = f"{snapshot_dir}/probe.jsonl"
    output = git.run_git(["check-attr", "merge", "diff", "--", probe], root).stdout
    found = {}
    for line in output.splitlines():
        _, name, value = line.rsplit(": ", 2)
        found[name] = value
    return found


# ---------------------------------------------------------------- git pull on git's defaults

PULL_MARK = "dbsync.pullrebase"
"""Set next to ``pull.rebase`` when dbsync set it, so that ``uninstall`` removes only its own."""


def configure_pull(root: Path) -> bool:
    """``pull.rebase false`` in the repository's config when nothing says how to pull.

    Two assets' snapshot commits diverge by design (every pre-push commits one), and git
    (since 2.33) stops a plain ``git pull`` of diverged branches unless ``pull.rebase`` or
    ``pull.ff`` says how to reconcile them. A user's own choice, in any config, is left alone.
    True when it was set now.
    """
    if any(git.config_get(root, key) is not None for key in ("pull.rebase", "pull.ff")):
        return False
    git.config_set(root, "pull.rebase", "false")
    git.config_set(root, PULL_MARK, "false")
    return True


def _local_config(root: Path, key: str) -> str | None:
    result = git.run_git(["config", "--local", "--get", key], root, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def undo_pull_setting(root: Path) -> str | None:
    """Remove the ``pull.rebase`` that ``install`` set (not one the user set or changed
    since); what was done, or None when dbsync had set nothing."""
    mark = _local_config(root, PULL_MARK)
    if mark is None:
        return None
    git.run_git(["config", "--local", "--unset", PULL_MARK], root, check=False)
    if _local_config(root, "pull.rebase") != mark:
        return "pull.rebase: left as it is (changed since dbsync init set it)"
    git.run_git(["config", "--local", "--unset", "pull.rebase"], root, check=False)
    return "pull.rebase: removed from the repository's git config (dbsync init had set it)"


def pull_would_stop(root: Path) -> str | None:
    """Why a plain ``git pull`` here stops on diverged branches, or None when it does not:
    neither ``pull.rebase`` (nor the branch's ``rebase``) nor ``pull.ff`` is set, or
    ``pull.ff=only`` without a rebase."""
    branch = git.run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], root, check=False)
    keys = ["pull.rebase", *([f"branch.{branch.stdout.strip()}.rebase"] if branch.stdout else [])]
    rebase = [git.config_get(root, key) for key in keys]
    if any(value not in (None, "false") for value in rebase):
        return None
    fast_forward = git.config_get(root, "pull.ff")
    if fast_forward == "only":
        return "pull.ff=only is set"
    if fast_forward is None and all(value is None for value in rebase):
        return "neither pull.rebase nor pull.ff is set (git's default)"
    return None


# ---------------------------------------------------------------- status


@dataclass(frozen=True)
class HookState:
    name: str
    state: str  # installed / foreign / missing
    legacy: bool


@dataclass(frozen=True)
class GitSetup:
    """What ``dbsync hooks status`` shows, and what ``dbsync status`` can warn about."""

    place: HookPlace
    hooks: list[HookState]
    merge_driver: bool
    diff_driver: bool
    attributes: bool

    @property
    def complete(self) -> bool:
        hooks = all(hook.state == INSTALLED for hook in self.hooks)
        return hooks and self.merge_driver and self.diff_driver and self.attributes


def _hook_state(hook: Path) -> HookState:
    state = INSTALLED if is_ours(hook) else FOREIGN if os.path.lexists(hook) else MISSING
    return HookState(hook.name, state, os.path.lexists(_legacy(hook)))


def _driver_configured(root: Path, key: str, command: str) -> bool:
    value = git.config_get(root, key)
    return value is not None and command in value


def merge_hooks_installed(root: Path) -> bool:
    """Whether dbsync's post-merge and post-rewrite hooks will merge what a pull brings."""
    directory = hook_place(root).directory
    return all(is_ours(directory / name) for name in ("post-merge", "post-rewrite"))


def git_setup(root: Path, snapshot_dir: Path) -> GitSetup:
    place = hook_place(root)
    attributes = snapshot_attributes(root, Path(os.path.relpath(snapshot_dir, root)).as_posix())
    return GitSetup(
        place,
        [_hook_state(place.directory / name) for name in HOOK_NAMES],
        _driver_configured(root, f"merge.{DRIVER}.driver", "merge-driver"),
        _driver_configured(root, f"diff.{DRIVER}.command", "diff-driver"),
        attributes.get("merge") == DRIVER and attributes.get("diff") == DRIVER,
    )


def describe(installed: Installed) -> list[str]:
    """What an install did, one line per hook, for ``init`` and ``hooks install``."""
    where = installed.place.directory
    lines = []
    if installed.place.from_hooks_path:
        lines.append(f"core.hooksPath is set: hooks go to {where}, where git runs them from")
    if installed.place.in_work_tree:
        lines.append("that folder is shared through git: its hooks run the dbsync on PATH")
    for change in installed.hooks:
        line = f"{change.name} hook {change.action} in {where}"
        if change.legacy is not None:
            line += f" (the hook that was there is kept as {change.legacy.name} and still runs)"
        lines.append(line)
    state = "configured" if installed.drivers_changed else "already configured"
    lines.append(
        f"merge and diff drivers for snapshot files {state} in the repository's git config"
    )
    if installed.pull_rebase_set:
        lines.append(
            "pull.rebase false set in the repository's git config: a plain 'git pull' merges "
            "the other assets' snapshot commits, where git's default stops on divergent "
            "branches ('dbsync hooks uninstall' removes it)"
        )
    return lines


def setup_json(setup: GitSetup) -> dict[str, object]:
    return {
        "hooks_dir": str(setup.place.directory),
        "hooks_path": setup.place.from_hooks_path,
        "hooks": {h.name: {"state": h.state, "legacy": h.legacy} for h in setup.hooks},
        "merge_driver": setup.merge_driver,
        "diff_driver": setup.diff_driver,
        "gitattributes": setup.attributes,
        "complete": setup.complete,
    }
