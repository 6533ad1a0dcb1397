"""The rows git drives: start-up, the merge driver next to the plain merge, a real ``git pull``.

Each command runs as git runs it, in a process of its own measured by ``os.wait4`` (wall time;
CPU time, user + system, of the process and of every process it waited for: git's merge driver
and hooks included; the peak RSS of the largest of them)::

    start-up   ``python -c pass``, ``dbsync --version``, ``dbsync hook post-merge 0`` in a clone
               where the merge touched no snapshot (the hook finds nothing to do), and the
               post-merge hook script itself as git runs it; each START_RUNS times, in turn,
               the medians reported
    driver     ``dbsync merge-driver BASE OURS THEIRS PATH`` in a dbsync project (it writes its
               report and records the losing versions, as in a pull), next to the plain json +
               hashlib merge of the same files in a process of its own (``bench.plain``),
               in the order driver, plain, plain, driver (each figure the mean of its two)
    pull       two clones of a bare remote with the hooks installed, each asset's embedded
               store holding the collection; both assets change 1 % of it (the prepared
               ours and theirs), the other asset pushes, and this one runs ``git pull``: git's
               merge driver on the snapshot file, then the post-merge hook's merge into the
               database. Measured beside ``dbsync export`` on a fresh clone (its change index
               empty): the first export of the same collection.

Setting up (the clones, the stores, the pushes) is not measured.

    python -m bench.pull FOLDER       # driver and pull rows of a prepared folder, as JSON
    python -m bench.pull --start-up FOLDER
"""

from __future__ import annotations

import compileall
import itertools
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import bson

from bench.cli import init_project, wait_measured
from bench.data import Params
from bench.phases import merged_documents
from dbsync.config import load_config
from dbsync.core import extjson
from dbsync.core.snapshot import line_body, snapshot_filename
from dbsync.edges.parts import collection_files
from dbsync.edges.snapshot_files import read_sections, read_trailer_digest
from dbsync.edges.stores import open_store
from dbsync.runs.demo import GITCONFIG

DBSYNC = str(Path(sys.executable).with_name("dbsync"))
TIMEOUT = 600.0
START_RUNS = 11
OUTPUT_KEPT = 20_000  # characters of a command's output kept, and read by the checks
Figures = dict[str, Any]


class SetupFailed(RuntimeError):
    pass


def measured(
    command: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> Figures:
    """One command as a process tree: wall and CPU seconds (``wait4``: the process and all it
    waited for), the largest process's peak RSS, exit code, the tail of its output."""
    output = cwd / ".bench-output.txt"
    with output.open("wb") as handle:
        seconds, usage, code = wait_measured(list(command), cwd, env, handle, timeout)
    text = output.read_text(errors="replace")
    output.unlink()
    return {
        "command": " ".join(Path(command[0]).name if i == 0 else a for i, a in enumerate(command)),
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "code": code,
        "output": text[-OUTPUT_KEPT:],
    }


def _environment(home: Path) -> dict[str, str]:
    """A git identity and configuration of its own; no GIT_ or DBSYNC_ variable leaks in."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(GITCONFIG.replace("dbsync demo", "dbsync bench"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DBSYNC_"))}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1")
    return env


def _run(command: Sequence[str], cwd: Path, env: dict[str, str], ok: bool = True) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=TIMEOUT
    )
    if ok and done.returncode != 0:
        raise SetupFailed(f"{' '.join(command)} failed in {cwd}:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


# ---------------------------------------------------------------- start-up


def _nothing_to_merge(root: Path, env: dict[str, str]) -> Path:
    """A dbsync project in git where a merge brought code and no snapshot: the post-merge hook
    finds nothing to do."""
    project = root / "start-up"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    _run(["git", "init", "-q"], project, env)
    _run([DBSYNC, "init", "--database", "bench", "--asset", "bench"], project, env)
    (project / "code.txt").write_text("one\n")
    _run(["git", "add", "-A"], project, env)
    _run(["git", "commit", "-qm", "code"], project, env)
    _run(["git", "checkout", "-qb", "feature"], project, env)
    (project / "code.txt").write_text("one\ntwo\n")
    _run(["git", "commit", "-qam", "more code"], project, env)
    _run(["git", "checkout", "-q", "main"], project, env)
    (project / "other.txt").write_text("other\n")
    _run(["git", "add", "other.txt"], project, env)
    _run(["git", "commit", "-qm", "other code"], project, env)
    _run(["git", "merge", "-q", "--no-edit", "feature"], project, env)
    return project


def start_up(root: Path, runs: int = START_RUNS) -> dict[str, Figures]:
    """Each command ``runs`` times, in turn; the median of each figure."""
    env = _environment(root / "home")
    project = _nothing_to_merge(root, env)
    hook_env = {**env, "PYTHONSAFEPATH": "1"}  # what the hook scripts export
    commands = {
        "python": ([sys.executable, "-c", "pass"], env),
        "version": ([DBSYNC, "--version"], env),
        "hook": ([sys.executable, "-m", "dbsync", "hook", "post-merge", "0"], hook_env),
        "hook-script": ([str(project / ".git" / "hooks" / "post-merge"), "0"], env),
    }
    runs_of: dict[str, list[Figures]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (command, environment) in commands.items():
            runs_of[name].append(measured(command, project, environment))
    return {name: _median(found) for name, found in runs_of.items()}


def _median(runs: list[Figures]) -> Figures:
    first = runs[0]
    return {
        "command": first["command"],
        "runs": len(runs),
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "cpu_spread": [min(r["cpu_seconds"] for r in runs), max(r["cpu_seconds"] for r in runs)],
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "code": max(r["code"] for r in runs),
        "output": first["output"],
    }


# ---------------------------------------------------------------- the merge driver


def _same_documents(first: Path, second: Path) -> bool:
    """The two files hold the same documents, in the same order (their bytes may differ: the
    plain merge writes its own JSON)."""
    pairs = itertools.zip_longest(merged_documents(first), merged_documents(second))
    return all(mine is not None and mine == theirs for mine, theirs in pairs)


def driver(folder: Path) -> dict[str, Figures]:
    """The merge driver and the plain merge, processes in turn: driver, plain, plain, driver."""
    params = Params.load(folder)
    env = _environment(folder / "home")
    project = folder / "driver"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    init_project(project, params, "bench", env)
    path = f"database_backup/{snapshot_filename(params.collection)}"
    base, ours, theirs = (folder / f"{name}.jsonl" for name in ("base", "ours", "theirs"))
    merged, plain_out = project / "ours.jsonl", folder / "plain-process.jsonl"
    runs: dict[str, list[Figures]] = {"driver": [], "plain": []}
    for name in ("driver", "plain", "plain", "driver"):
        if name == "driver":
            shutil.copyfile(ours, merged)  # git's %A: our version, which receives the result
            command = [DBSYNC, "merge-driver", str(base), str(merged), str(theirs), path]
        else:
            command = [sys.executable, "-m", "bench.plain", str(base), str(ours)]
            command += [str(theirs), str(plain_out)]
        runs[name].append(measured(command, project if name == "driver" else ROOT, env))
    same = _same_documents(merged, plain_out)
    found = {name: _mean(figures) for name, figures in runs.items()}
    found["driver"]["checks"] = {
        "merged (exit 0)": all(r["code"] == 0 for r in runs["driver"]),
        "the same documents as the plain merge": same,
        "the same file as dbsync's merge of files": read_trailer_digest(merged)
        == read_trailer_digest(folder / "merged.jsonl"),
    }
    found["plain"]["checks"] = {"merged (exit 0)": all(r["code"] == 0 for r in runs["plain"])}
    return found


def _mean(runs: list[Figures]) -> Figures:
    return {
        **runs[-1],
        "runs": len(runs),
        "seconds": statistics.fmean(r["seconds"] for r in runs),
        "cpu_seconds": statistics.fmean(r["cpu_seconds"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- a real two-asset pull


def _load(project: Path, collection: str, documents: Iterable[Any]) -> None:
    """Make the project's store hold exactly ``documents`` (one write, not measured)."""
    config = load_config(cwd=project, environ={})
    store = open_store(*config.require_database())
    try:
        store.replace_collection(collection, documents)
    finally:
        store.close()


def _snapshot_documents(path: Path) -> Iterator[Any]:
    for section in read_sections(path):
        for line in section.records:
            yield extjson.decode_document(line_body(line))


def _raw_documents(path: Path) -> Iterator[Any]:
    with path.open("rb") as handle:
        yield from bson.decode_file_iter(handle)


def _push(asset: Path, env: dict[str, str]) -> None:
    """``git push``: the pre-push hook exports and commits, and asks for a second push."""
    first = subprocess.run(
        ["git", "push", "-q"], cwd=asset, env=env, capture_output=True, text=True, check=False
    )
    if first.returncode != 0:
        if "push again" not in first.stderr:
            raise SetupFailed(f"git push in {asset} failed:\n{first.stderr}")
        _run(["git", "push", "-q"], asset, env)


def pull(folder: Path) -> dict[str, Figures]:
    """The other asset pushes its 1 %; this one, with its own 1 % committed, pulls."""
    params = Params.load(folder)
    collection, root = params.collection, folder / "pull"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    env = _environment(root / "home")
    remote, other, this = root / "remote.git", root / "other", root / "this"
    _run(["git", "init", "-q", "--bare", str(remote)], root, env)
    _run(["git", "clone", "-q", str(remote), str(other)], root, env)
    init_project(other, params, "other", env)
    _run(["git", "add", "-A"], other, env)
    _run(["git", "commit", "-qm", "dbsync set up"], other, env)
    _run(["git", "push", "-q", "-u", "origin", "main"], other, env)
    _load(other, collection, _snapshot_documents(folder / "base.jsonl"))
    _push(other, env)  # the first export, committed: the common ancestor
    _run(["git", "clone", "-q", str(remote), str(this)], root, env)
    _run([DBSYNC, "init", "--asset", "this"], this, env)
    _load(this, collection, _snapshot_documents(folder / "base.jsonl"))
    first_export = measured([DBSYNC, "export"], this, env)  # its change index empty
    _load(other, collection, _snapshot_documents(folder / "theirs.jsonl"))
    _push(other, env)
    _load(this, collection, _raw_documents(folder / "ours.bson"))
    _push_refused(this, env)
    pristine = root / "this-before-the-pull"
    shutil.copytree(this, pristine, symlinks=True)
    pulled = measured(["git", "pull", "--no-edit"], this, env)
    same = _same_snapshot(this, collection, folder)
    pulled["checks"] = {
        "pulled (exit 0)": pulled["code"] == 0,
        "the driver merged three-way": "record by record (three-way)" in pulled["output"],
        "the hook merged into the database": "into the database (three-way)" in pulled["output"],
        "the merged snapshot is dbsync's merge of the files": same,
        "nothing pending": "pending" not in pulled["output"],
    }
    first_export["checks"] = {"exported (exit 0)": first_export["code"] == 0}
    shares = dbsync_share(root, this, pristine, env)
    shares["checks"] = {
        "pulled (exit 0)": shares["code"] == 0,
        "the driver and the hook ran": shares["driver_runs"] > 0 and shares["hook_runs"] == 1,
        "the same snapshot as the measured pull": _same_snapshot(this, collection, folder),
    }
    return {"first-export": first_export, "pull": pulled, "pull-share": shares}


CHILD_CPU = Path(__file__).with_name("child_cpu.py")


def dbsync_share(root: Path, this: Path, pristine: Path, env: dict[str, str]) -> Figures:
    """The same pull again, from the clone as it was before it, with the merge driver and the
    post-merge hook run through ``child_cpu.py``, which logs each one's CPU time: dbsync's
    share of the pull, beside git's own (fetch, merge, checkout; with a local bare remote, the
    remote's ``upload-pack`` and ``pack-objects`` too, which a real remote runs on its own
    server: logged apart, as ``remote``)."""
    shutil.rmtree(this)
    shutil.copytree(pristine, this, symlinks=True)
    log = root / "shares.jsonl"
    log.unlink(missing_ok=True)
    wrapper = [sys.executable, str(CHILD_CPU), str(log)]
    hooks = root / "bench-hooks"
    hooks.mkdir(exist_ok=True)
    script = hooks / "post-merge"
    hook = shlex.join([*wrapper, "hook", "--", str(this / ".git" / "hooks" / "post-merge")])
    script.write_text(f'#!/bin/sh\nexec {hook} "$@"\n')
    script.chmod(0o755)
    configured = _run(["git", "config", "merge.dbsync.driver"], this, env).strip()
    words = shlex.split(configured)
    settings = [word for word in words if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word)]
    command = words[len(settings) :]
    driver = " ".join([*settings, shlex.join([*wrapper, "driver", "--"]), *command])
    wrapped = ["git", "-c", f"core.hooksPath={hooks}", "-c", f"merge.dbsync.driver={driver}"]
    upload = root / "bench-upload-pack"
    remote = shlex.join([*wrapper, "remote", "--", "git", "upload-pack"])
    upload.write_text(f'#!/bin/sh\nexec {remote} "$@"\n')
    upload.chmod(0o755)
    figures = measured([*wrapped, "pull", "--no-edit", "--upload-pack", str(upload)], this, env)
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    for name in ("driver", "hook", "remote"):
        mine = [run for run in runs if run["name"] == name]
        figures[f"{name}_runs"] = len(mine)
        figures[f"{name}_cpu_seconds"] = sum(run["cpu_seconds"] for run in mine)
    return figures


def _same_snapshot(this: Path, collection: str, folder: Path) -> bool:
    pulled_lines = collection_files(this / "database_backup")[collection].lines()
    merged_lines = (line for s in read_sections(folder / "merged.jsonl") for line in s.records)
    return all(a == b for a, b in itertools.zip_longest(pulled_lines, merged_lines))


def _push_refused(asset: Path, env: dict[str, str]) -> None:
    """This asset's change, exported and committed by the pre-push hook; its push refused
    (the other asset pushed first), as on a real machine before it pulls."""
    first = subprocess.run(
        ["git", "push", "-q"], cwd=asset, env=env, capture_output=True, text=True, check=False
    )
    if "push again" not in first.stderr:
        raise SetupFailed(f"the pre-push hook did not commit in {asset}:\n{first.stderr}")
    second = subprocess.run(
        ["git", "push", "-q"], cwd=asset, env=env, capture_output=True, text=True, check=False
    )
    if second.returncode == 0:
        raise SetupFailed(f"the push in {asset} should have been refused (non-fast-forward)")


def main(argv: list[str]) -> None:
    """``python -m bench.pull FOLDER`` or ``--start-up FOLDER [RUNS]``: the rows as one JSON
    object. dbsync's modules are compiled first, as ``bench.run`` does."""
    compileall.compile_dir(ROOT / "dbsync", quiet=1)
    if argv[0] == "--start-up":
        runs = int(argv[2]) if len(argv) > 2 else START_RUNS
        print(json.dumps(start_up(Path(argv[1]), runs)))
        return
    folder = Path(argv[0])
    print(json.dumps({**driver(folder), **pull(folder)}))


if __name__ == "__main__":
    main(sys.argv[1:])
