"""What this asset last synced: the snapshot it last merged or exported, and the git commit.

Kept under ``database_sync/synced/`` and replaced only after a merge or export succeeded. It is
the three-way base for the next merge of a snapshot that descends from that commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dbsync.core.snapshot import (
    SUFFIX,
    Header,
    SectionSummary,
    Writable,
    header_filename,
    write_section,
    written_section,
)
from dbsync.edges import git
from dbsync.edges.files import StagedFiles, write_bytes_atomically
from dbsync.edges.parts import collection_files, combined_digest, obsolete_files
from dbsync.edges.pulled import VouchedFile

META = "synced.json"


@dataclass(frozen=True)
class Synced:
    commit: str | None
    digests: dict[str, str] = field(default_factory=dict)


def synced_dir(state_dir: Path) -> Path:
    return state_dir / "synced"


def load_synced(state_dir: Path) -> Synced | None:
    meta = synced_dir(state_dir) / META
    if not meta.is_file():
        return None
    data = json.loads(meta.read_text())
    return Synced(data.get("commit"), dict(data.get("digests", {})))


def save_synced(
    state_dir: Path,
    sections: Iterable[tuple[Header, Iterable[bytes]]],
    commit: str | None,
) -> Synced:
    """Record the given sections as last synced (other collections keep their record).

    A split collection comes as its parts, in part order; it is kept split the same way, and
    its digest is the one ``dbsync.edges.parts`` gives the files on disk.
    """
    folder = synced_dir(state_dir)
    previous = load_synced(state_dir)
    digests = dict(previous.digests) if previous else {}
    on_disk = collection_files(folder)
    parts: dict[str, list[str]] = {}
    with StagedFiles() as staged:
        written = []
        for header, lines in sections:
            path = folder / header_filename(header)
            with staged.open(path) as handle:
                parts.setdefault(header.collection, []).append(_write(handle, header, lines).digest)
            written.append(path)
        for collection in parts:
            for stale in obsolete_files(on_disk.get(collection), written):
                staged.remove(stale)
    digests.update({name: combined_digest(found) for name, found in parts.items()})
    synced = Synced(commit, digests)
    _write_meta(state_dir, synced)
    return synced


def _write(handle: Writable, header: Header, lines: Iterable[bytes]) -> SectionSummary:
    """One section of the synced copy: a vouched file kept as it is when it is written as
    ``write_section`` writes (one write), else its lines written."""
    if isinstance(lines, VouchedFile):
        data = lines.read()
        summary = written_section(header, data)
        if summary is not None:
            handle.write(data)
            return summary
        return write_section(handle, header, VouchedFile.records(data))
    return write_section(handle, header, lines)


def _write_meta(state_dir: Path, synced: Synced) -> None:
    meta = {"commit": synced.commit, "digests": synced.digests}
    text = json.dumps(meta, indent=2, sort_keys=True).encode()
    write_bytes_atomically(synced_dir(state_dir) / META, text)


def follow_rewrite(
    state_dir: Path, root: Path, folder: str, rewritten: Mapping[str, str], before: str | None
) -> str | None:
    """After a rebase or an amend: the commit this asset synced at, if it was rewritten, is
    replaced by its new version; returns that new commit (None: nothing to follow).

    Sound because the new commit's snapshot is the old one with the other side's changes
    merged in (git's merge driver did it three-way): the synced snapshot is still a true
    ancestor of it and of everything that descends from it. Without this, the merge after
    ``git pull --rebase`` over a local snapshot commit would be two-way and bring back every
    record another asset deleted. A synced snapshot not yet committed when it was synced (an
    export committed by hand) is followed through ``before``, the tip before the rewrite, when
    that tip holds exactly the synced snapshot.
    """
    synced = load_synced(state_dir)
    if synced is None or not synced.digests:
        return None
    commit = synced.commit
    if commit is None and before is not None:
        if committed_digests(root, before, folder) == synced.digests:
            commit = before
    if commit is None or commit not in rewritten:
        return None
    _write_meta(state_dir, Synced(rewritten[commit], synced.digests))
    return rewritten[commit]


def is_tracked_snapshot(config_snapshot_dir: Path, source: Path) -> bool:
    """Whether ``source`` is the snapshot folder (or a file in it): only merging that changes
    what this asset has synced; another asset's folder or a mailed file does not."""
    folder = config_snapshot_dir.resolve()
    where = source.resolve()
    return where == folder or where.parent == folder


def committed_digests(root: Path, commit: str, folder: str) -> dict[str, str]:
    """The digest of each collection's snapshot as committed at ``commit`` (from trailers)."""
    listing = git.run_git(["ls-tree", "--name-only", commit, f"{folder}/"], root, check=False)
    parts: dict[str, list[tuple[int, str]]] = {}
    for name in listing.stdout.split():
        if not name.endswith(SUFFIX):
            continue
        shown = git.run_git(["cat-file", "-p", f"{commit}:{name}"], root, check=False)
        try:
            header = json.loads(shown.stdout.split("\n", 1)[0])
            trailer = json.loads(shown.stdout.rstrip("\n").rsplit("\n", 1)[-1])
            index = header.get("part", [0])[0]
            parts.setdefault(header["collection"], []).append((index, trailer["digest"]))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return {name: combined_digest([d for _, d in sorted(found)]) for name, found in parts.items()}


def three_way_base(
    state_dir: Path, root: Path, folder: str, head: str, before: str | None = None
) -> Path | None:
    """The last synced snapshot as a base, only where it is a true common ancestor of ``head``.

    It is, when HEAD descends from the commit it was synced at; or, when that commit is not
    known (an export not yet committed then), when HEAD descends from ``before`` (ORIG_HEAD)
    and ``before`` holds exactly the synced snapshot. Anything else (a first sync, history
    rewritten or unrelated) is merged two-way: a base that is not a true common ancestor would
    turn another asset's newer edits into deletions.
    """
    synced = load_synced(state_dir)
    if synced is None or not synced.digests:
        return None
    if synced.commit is not None:
        return synced_dir(state_dir) if git.is_ancestor(root, synced.commit, head) else None
    if before is None or not git.is_ancestor(root, before, head):
        return None
    if committed_digests(root, before, folder) != synced.digests:
        return None
    return synced_dir(state_dir)
