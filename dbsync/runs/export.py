"""``dbsync export``: database → snapshot files, sorted, hashed, written atomically."""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from dbsync.config import Config
from dbsync.core.guards import GUARD_RULE, RemovedKeys, TooManyDeletes, deletes_too_many
from dbsync.core.notes import RecordNotes
from dbsync.core.ordering import SortKey, key_hash
from dbsync.core.rules import Rules
from dbsync.core.snapshot import (
    Discard,
    Header,
    SectionSummary,
    Writable,
    line_hash_bytes,
    line_sort_key,
)
from dbsync.edges import git
from dbsync.edges.change_index import (
    ChangeIndex,
    Changes,
    IndexRows,
    database_fingerprint,
    encode_lost,
    export_rows,
    feed_name,
    first_of,
    learn_export,
    read_for_export,
    serves_export,
    unchanged_since_export,
)
from dbsync.edges.collection_options import write_options
from dbsync.edges.files import StagedFiles
from dbsync.edges.journal import refuse_over_interrupted
from dbsync.edges.parts import (
    CollectionFiles,
    PartWriters,
    StagedLayout,
    collection_files,
    combined_digest,
    file_lines,
    obsolete_files,
    part_count,
    part_headers,
)
from dbsync.edges.pulled import same_files
from dbsync.edges.records import KeyClashes, collection_lines, unique_pairs
from dbsync.edges.snapshot_files import read_sections, read_trailer_count, read_trailer_digest
from dbsync.edges.store import Store
from dbsync.edges.synced import Synced, load_synced, save_synced, synced_dir
from dbsync.errors import InvalidInput, SafetyRefusal, UsageError
from dbsync.progress import NoProgress, Progress

KEPT_BUFFER = 1 << 20
"""The write buffer of the lines an export keeps on disk while a collection is in one file."""


@dataclass(frozen=True)
class ExportedCollection:
    collection: str
    records: int
    path: Path
    changed: bool
    digest: str
    deleted: int = 0
    previous_records: int = 0
    notes: list[str] = field(default_factory=list)
    previous_digest: str | None = None
    paths: list[Path] = field(default_factory=list)
    """Every file written: one, or the parts of a collection past ``parts.MAX_FILE_BYTES``."""
    read: str = "every document read"
    """How the database was read: through its change stream (only what changed since the
    last export), or every document."""


def snapshot_collections(folder: Path) -> list[str]:
    """The collections that have a snapshot in ``folder`` (named as their headers say)."""
    return sorted(collection_files(folder))


def select_collections(
    config: Config, store: Store, wanted: Sequence[str] | None, *, with_snapshots: bool = False
) -> list[str]:
    """The collections to export: those named, or every one not excluded in dbsync.toml.

    ``with_snapshots`` adds the collections that have a snapshot file but are missing from the
    database: exporting them writes an empty snapshot (guarded), so that a dropped collection
    leaves the snapshot too, and a mistyped ``--database`` is caught by the delete guard.
    """
    existing = store.collection_names()
    if with_snapshots:
        existing = sorted(set(existing) | set(snapshot_collections(config.snapshot_dir)))
    if not wanted:
        return [name for name in existing if not config.excluded(name)]
    special = special_collections(store)
    for name in wanted:
        if name in special:
            raise UsageError(f"{name} is {special[name]}: dbsync does not export it")
    unknown = [name for name in wanted if name not in existing]
    if unknown:
        raise UsageError(
            f"unknown collection(s): {', '.join(unknown)}",
            hint=f"the database has: {', '.join(existing) or '(no collections)'}",
        )
    return list(dict.fromkeys(wanted))


def special_collections(store: Store) -> dict[str, str]:
    """The database's views and time-series collections, each with why it is not synced
    (a store without them has none)."""
    method = getattr(store, "special_collections", None)
    return {} if method is None else dict(method())


def skipped_notes(config: Config, store: Store) -> list[str]:
    """One note per collection an export leaves out because of what it is (not excluded by
    dbsync.toml: those are the user's choice, said nowhere)."""
    return [
        f"{name} is not exported: it is {reason} (exclude = true under [collections.{name}] "
        "in dbsync.toml silences this note)"
        for name, reason in sorted(special_collections(store).items())
        if not config.excluded(name)
    ]


def carry_options(folder: Path, store: Store, names: Sequence[str]) -> None:
    """Write beside each collection's snapshot the options its copies must be created with
    (a capped collection's size), or remove a stale file."""
    method = getattr(store, "collection_options", None)
    for name in names:
        write_options(folder, name, {} if method is None else dict(method(name)))


def export(
    config: Config,
    store: Store,
    *,
    collections: Sequence[str] | None = None,
    output: Path | None = None,
    target_dir: Path | None = None,
    progress: Progress | None = None,
    allow_deletes: bool = False,
    key_by_id: bool = False,
) -> list[ExportedCollection]:
    """Write the snapshot of each selected collection; all files appear together or none.

    Writing the snapshot directory (neither ``output`` nor ``target_dir``) is guarded: a
    collection losing too many records at once is refused unless ``allow_deletes``.
    ``key_by_id`` keys every collection by ``_id`` (unique in any database), as backups do:
    a backup must hold the database as it is, duplicates of a natural key included.
    """
    progress = progress or NoProgress()
    guarded = output is None and target_dir is None
    if guarded:
        refuse_over_interrupted(config.state_dir)
    names = select_collections(config, store, collections, with_snapshots=guarded)

    def rules_of(name: str) -> Rules:
        rules = config.rules(name)
        return replace(rules, key=("_id",)) if key_by_id else rules

    if output is not None:
        with StagedFiles() as staged:
            return _export_bundle(staged, store, names, rules_of, output, progress)
    if not guarded:
        with StagedFiles() as staged:
            return _export_folder(staged, config, store, names, rules_of, target_dir, progress)
    index = ChangeIndex.open(config.state_dir)
    try:
        follow_changes(store, names)
        # taken before reading: a write during the export leaves them stale, as it should
        figures = {name: database_fingerprint(store, name) for name in names}
        with StagedFiles() as staged:
            results = _export_folder(
                staged, config, store, names, rules_of, None, progress, index, allow_deletes
            )
        record_synced(config, results)
        carry_options(config.snapshot_dir, store, [result.collection for result in results])
        for result in results:
            index.record(result.collection, figures[result.collection], result.digest)
    finally:
        index.close()
    forget_changes_before(store, figures)
    return results


def follow_changes(store: Store, names: Sequence[str]) -> None:
    """A store that keeps a change log only when asked (the embedded store) starts one for each
    collection exported, so that the next export, ``status`` and a merge read only what
    changed since this export's mark."""
    method = getattr(store, "follow_changes", None)
    if method is not None:
        for name in names:
            method(name)


def forget_changes_before(store: Store, figures: dict[str, str | None]) -> None:
    """The change log's rows before the marks this export recorded are not asked for again."""
    method = getattr(store, "forget_changes_before", None)
    if method is not None:
        for name, figure in figures.items():
            if figure is not None:
                method(name, figure)


def _export_folder(
    staged: StagedFiles,
    config: Config,
    store: Store,
    names: list[str],
    rules_of: Callable[[str], Rules],
    target_dir: Path | None,
    progress: Progress,
    index: ChangeIndex | None = None,
    allow_deletes: bool = False,
) -> list[ExportedCollection]:
    """Each collection staged into ``target_dir`` or, guarded, the snapshot folder (with the
    change index: only changed documents are encoded)."""
    folder = target_dir or config.snapshot_dir
    results = []
    synced = load_synced(config.state_dir) if index is not None else None
    copies = collection_files(synced_dir(config.state_dir)) if index is not None else {}
    on_disk = collection_files(folder)
    for name in names:
        existing, rules = on_disk.get(name), rules_of(name)
        changes = None
        if index is not None:
            known = existing if _synced_here(existing, synced, name) else None
            changes = _IndexedExport(index, name, rules, store, known, copies.get(name))
        result = _export_collection(staged, store, name, rules, folder, existing, progress, changes)
        if index is not None:
            check_not_unmerged(config, result, synced)
            if not allow_deletes:
                check_export_deletes(config, result)
        results.append(result)
    return results


def check_not_unmerged(config: Config, result: ExportedCollection, synced: Synced | None) -> None:
    """Refuse to overwrite a snapshot this database has not merged (PRODUCT.md §4).

    The file on disk should hold what this asset last synced (exported or merged). If it holds
    something else, it came from elsewhere — a pull whose merge failed, a checkout — and writing
    the database over it would erase those records from every asset.
    """
    on_disk = result.previous_digest
    if not result.changed or on_disk is None:
        return
    if synced is not None and synced.digests.get(result.collection) == on_disk:
        return
    folder = os.path.relpath(config.snapshot_dir, config.root)
    raise SafetyRefusal(
        f"{result.path} holds changes this database has not merged (pulled, checked out or "
        "copied, but not merged): exporting now would erase them; nothing was written",
        hint=f"run 'dbsync merge {folder}' first, then export",
    )


def record_synced(config: Config, results: Sequence[ExportedCollection]) -> None:
    """The snapshot folder now holds the database: remember it as what this asset synced,
    at HEAD when the files are exactly what HEAD holds (otherwise at no known commit yet)."""
    folder = os.path.relpath(config.snapshot_dir, config.root)
    commit = None
    if git.toplevel(config.root) is not None and not git.has_changes(config.root, folder):
        commit = git.rev_parse(config.root, "HEAD")
    kept = collection_files(synced_dir(config.state_dir))
    fresh = [  # a collection whose synced copy already holds these records is not copied again
        result
        for result in results
        if result.collection not in kept or kept[result.collection].digest() != result.digest
    ]
    save_synced(config.state_dir, exported_sections(fresh), commit)


def _export_bundle(
    staged: StagedFiles,
    store: Store,
    names: list[str],
    rules_of: Callable[[str], Rules],
    output: Path,
    progress: Progress,
) -> list[ExportedCollection]:
    results = []
    with staged.open(output) as handle:
        for name in names:
            summary = _write_section(handle, store, name, rules_of(name), progress)
            results.append(ExportedCollection(name, summary.count, output, True, summary.digest))
    return results


class _PartTooLarge(Exception):
    """A file passed ``MAX_FILE_BYTES``; ``total_bytes`` says how large the whole collection is,
    so that it is written again in as many parts as that needs (the same on every asset: it
    depends on the records only)."""

    def __init__(self, total_bytes: int) -> None:
        super().__init__(total_bytes)
        self.total_bytes = total_bytes


def _export_collection(
    staged: StagedFiles,
    store: Store,
    name: str,
    rules: Rules,
    folder: Path,
    existing: CollectionFiles | None,
    progress: Progress,
    changes: _IndexedExport | None = None,
) -> ExportedCollection:
    """One collection's snapshot, staged (in parts past 50 MB); counts what the disk loses.

    With ``changes``, the documents the change index knows take their lines from the snapshot
    on disk; when that cannot give the same bytes as a full export (another layout, a part
    passing the limit, a key clash, lines the snapshot lost), the full export runs instead.
    """
    if changes is not None:
        result = changes.export(staged, folder, progress)
        if result is not None:
            return result
    rows = changes.rows() if changes is not None else None
    count = existing.count if existing else 1
    while True:
        old_keys = _OldKeys(existing, rules)
        removed = RemovedKeys(iter(old_keys))
        notes = RecordNotes(name, rules)
        layout = StagedLayout(staged, folder, name, rules)
        try:
            summaries = _write_parts(
                layout, count, store, progress, removed.see, notes, limit=True, rows=rows
            )
            break
        except _PartTooLarge as overflow:
            layout.discard()
            count = max(part_count(overflow.total_bytes, count), count * 2)
        finally:
            layout.close()
    if rows is not None:
        rows.flush()
    for path in obsolete_files(existing, layout.paths):
        staged.remove(path)
    removed.finish()
    new_count = sum(summary.count for summary in summaries)
    old_count = (existing.records() if existing else 0) or 0
    deleted = removed.removed if old_keys.exact else max(0, old_count - new_count)
    return _exported(name, existing, summaries, deleted, notes, layout.paths)


def _exported(
    name: str,
    existing: CollectionFiles | None,
    summaries: list[SectionSummary],
    deleted: int,
    notes: RecordNotes,
    paths: list[Path],
) -> ExportedCollection:
    old_digest = existing.digest() if existing else None
    old_count = (existing.records() if existing else 0) or 0
    new_count = sum(summary.count for summary in summaries)
    digest = combined_digest([summary.digest for summary in summaries])
    return ExportedCollection(
        name,
        new_count,
        paths[0],
        digest != old_digest,
        digest,
        deleted,
        old_count,
        notes.messages(),
        old_digest,
        list(paths),
    )


class _OldKeys:
    """The keys of the snapshot on disk, in order, read while the new one is written.

    ``exact`` turns False when they cannot be read (no file, keyed otherwise, damaged): the
    guard then compares counts instead, since exporting is what repairs such a file.
    """

    def __init__(self, existing: CollectionFiles | None, rules: Rules) -> None:
        self.existing, self.rules = existing, rules
        self.exact = existing is not None and existing.rules.key == rules.key

    def __iter__(self) -> Iterator[SortKey]:
        if not self.exact or self.existing is None:
            return
        try:
            for line in self.existing.lines(self.rules):
                yield line_sort_key(line, self.rules.key)
        except InvalidInput:
            self.exact = False


def check_export_deletes(config: Config, result: ExportedCollection) -> None:
    """Refuse a snapshot that loses too many of the records the file on disk holds."""
    if not deletes_too_many(result.deleted, result.previous_records):
        return
    raise TooManyDeletes(
        result.collection,
        f"{result.collection}: this export would delete {result.deleted} of the "
        f"{result.previous_records} records in {result.path} ({GUARD_RULE}), leaving "
        f"{result.records}. The database {config.database!r} may be empty or mistyped "
        "(--database, DBSYNC_DATABASE, dbsync.toml); nothing was written",
        hint="check the database name and URI; if these records were really deleted, "
        "run 'dbsync export --allow-deletes'",
    )


def current_summary(store: Store, name: str, rules: Rules, parts: int = 1) -> SectionSummary:
    """Count and digest the collection would have in a snapshot of ``parts`` parts, without
    writing one (compared with the snapshot on disk by ``stats`` and ``status``)."""

    def discarding(count: int) -> PartWriters:
        return PartWriters(part_headers(name, rules, count), [Discard() for _ in range(count)])

    summaries = _write_parts(discarding, parts, store, NoProgress())
    digest = combined_digest([summary.digest for summary in summaries])
    return SectionSummary(name, sum(summary.count for summary in summaries), digest)


def _write_section(
    handle: Writable,
    store: Store,
    name: str,
    rules: Rules,
    progress: Progress,
) -> SectionSummary:
    (summary,) = _write_parts(
        lambda _: PartWriters([Header(name, rules)], [handle]), 1, store, progress
    )
    return summary


def _write_parts(
    layout: Callable[[int], PartWriters],
    count: int,
    store: Store,
    progress: Progress,
    see_key: Callable[[SortKey], None] | None = None,
    notes: RecordNotes | None = None,
    *,
    limit: bool = False,
    rows: IndexRows | None = None,
) -> list[SectionSummary]:
    """Stream the collection into ``layout(count)``: each record to the part of its key.

    With ``limit``, no file may pass ``parts.max_file_bytes``. A collection in one file that passes
    it is split at once: the records so far (kept, up to the limit) go into as many parts as
    the whole collection needs, measured by their size per record — the same on every asset,
    since the records come in key order — and the stream goes on into them. If a part still
    passes the limit, ``_PartTooLarge`` asks for the collection again in more parts.
    """
    parts = layout(count)
    name, rules = parts.writers[0].header.collection, parts.writers[0].header.rules
    clashes = KeyClashes(rules.key)
    total = store.count(name)  # once: montydb counts by decoding every document
    told = rows.see if rows is not None else None  # a full export fills the change index
    pairs = collection_lines(store, name, rules, progress, notes, total=total, seen=told)
    if see_key is not None:
        pairs = _watched(pairs, see_key)
    # While in one file, its records are kept (lines in a temporary file, key hashes in
    # memory: 8 bytes a record), to be spread over parts without reading the collection again.
    kept = tempfile.TemporaryFile(buffering=KEPT_BUFFER) if limit and count == 1 else None
    kept_hashes = array("Q")
    overflow = seen = 0
    try:
        for key, line in unique_pairs(pairs, clashes):
            if overflow:  # past the limit: only measure the rest, to choose the number of parts
                overflow += len(line)
                continue
            seen += 1
            size = parts.add(key, line)
            if kept is not None:
                kept.write(line)
                kept_hashes.append(key_hash(key))
            if not limit or size <= parts.max_file_bytes:
                continue
            if kept is None:
                overflow = parts.bytes
                continue
            parts = layout(part_count(parts.bytes * max(total, seen) // seen, 2))
            kept.seek(0)
            largest = max(map(parts.add_hashed, kept_hashes, kept))
            kept.close()
            kept, kept_hashes = None, array("Q")
            if largest > parts.max_file_bytes:
                overflow = parts.bytes
    finally:
        if kept is not None:
            kept.close()
    if overflow:
        raise _PartTooLarge(overflow)
    if clashes.groups:
        raise InvalidInput(
            clashes.message(name),
            hint="fix the records, choose another key in dbsync.toml, "
            "or fold them by the conflict rules with --dedupe",
        )
    return parts.finish()


def _watched(
    pairs: Iterable[tuple[SortKey, bytes]], see_key: Callable[[SortKey], None]
) -> Iterator[tuple[SortKey, bytes]]:
    for key, line in pairs:
        see_key(key)
        yield key, line


def exported_sections(
    exported: Sequence[ExportedCollection],
) -> Iterator[tuple[Header, Iterator[bytes]]]:
    """The sections an export just wrote, read back (to record them as last synced)."""
    for result in exported:
        for path in result.paths or [result.path]:
            for section in read_sections(path):
                if section.header.collection == result.collection:
                    yield section.header, section.records


def _synced_here(existing: CollectionFiles | None, synced: Synced | None, name: str) -> bool:
    """Whether the snapshot on disk is what this asset last exported or merged: then its lines
    are sorted under its header's key, and can be taken as they are."""
    if existing is None or synced is None or name not in synced.digests:
        return False
    return synced.digests[name] == existing.digest()


class _IndexedExport:
    """A collection exported through the change index (``export`` gives None: do it in full)."""

    def __init__(
        self,
        index: ChangeIndex,
        name: str,
        rules: Rules,
        store: Store,
        existing: CollectionFiles | None,
        synced: CollectionFiles | None = None,
    ) -> None:
        self.index, self.name, self.rules, self.store = index, name, rules, store
        self.existing = existing
        self.synced = synced
        """The synced copy of the collection: what the last export or merge wrote."""
        self.notes = RecordNotes(name, rules)
        self.read = ""

    def rows(self) -> IndexRows:
        """The rows of a full export: the collection's index starts afresh."""
        return export_rows(self.index, self.name, self.rules)

    def export(
        self, staged: StagedFiles, folder: Path, progress: Progress
    ) -> ExportedCollection | None:
        existing = self.existing
        if existing is None or not serves_export(self.index, self.name, self.rules, existing):
            return None
        if self._unchanged():
            return self._as_on_disk()
        # the snapshot's count, not the store's: montydb counts by decoding every document
        progress.start(f"export {self.name}", existing.records())
        changes, self.read = read_for_export(
            self.index, self.store, self.name, self.rules, self.notes, existing, progress
        )
        progress.finish()
        if changes is None:
            return None
        written = self._staged(staged, folder, changes)
        if written is _LOST:  # rare: the snapshot lost lines of known documents
            written = self._staged(staged, folder, changes) if self._encode_lost(changes) else None
        if not isinstance(written, tuple):
            return None
        summaries, dropped, replaced, layout = written
        learn_export(self.index, self.name, changes, dropped)
        deleted = len(dropped) - replaced
        result = _exported(self.name, existing, summaries, deleted, self.notes, layout.paths)
        return replace(result, read=self.read)

    def _unchanged(self) -> bool:
        """Whether the snapshot on disk is what this export would write, told without reading
        a document: the database holds what its last export wrote, whose digest the files on
        disk state (``unchanged_since_export``), and the files are byte for byte the synced
        copy that export wrote beside them (a file edited since is written again)."""
        assert self.existing is not None
        digest = self.existing.digest()
        if not unchanged_since_export(self.index, self.store, self.name, digest):
            return False
        synced = self.synced
        return synced is not None and same_files(self.existing.paths, synced.paths)

    def _as_on_disk(self) -> ExportedCollection:
        """The result of an export that found the snapshot on disk as it would write it."""
        assert self.existing is not None
        summaries = [
            SectionSummary(
                self.name, read_trailer_count(path) or 0, read_trailer_digest(path) or ""
            )
            for path in self.existing.paths
        ]
        result = _exported(self.name, self.existing, summaries, 0, self.notes, self.existing.paths)
        return replace(result, read=f"{feed_name(self.index, self.name)}: 0 document(s) read")

    def _staged(self, staged: StagedFiles, folder: Path, changes: Changes) -> _Written:
        """The collection staged in its layout on disk; discarded if it cannot be kept."""
        assert self.existing is not None
        layout = StagedLayout(staged, folder, self.name, self.rules)
        try:
            written = self._write(layout(self.existing.count), changes)
        except InvalidInput:  # the snapshot on disk is damaged: the full export rewrites it
            written = None
        finally:
            layout.close()
        if not isinstance(written, tuple):
            layout.discard()
            return written
        return (*written, layout)

    def _encode_lost(self, changes: Changes) -> bool:
        """Encode the known documents whose lines the snapshot no longer has (``encode_lost``);
        False: the snapshot cannot be read, the full export rewrites it."""
        assert self.existing is not None
        return encode_lost(self.index, self.store, self.name, self.rules, changes, self.existing)

    def _write(
        self, parts: PartWriters, changes: Changes
    ) -> tuple[list[SectionSummary], list[bytes], int] | _Lost | None:
        """Each part: its unchanged lines, in their order, with the encoded records merged in
        (``_LOST``: some unchanged documents' lines were not found)."""
        assert self.existing is not None
        dropped: list[bytes] = []
        replaced = kept = 0
        for index, (path, _) in enumerate(self.existing.files):
            merged = _merge_part(
                partial(parts.add_to, index),
                file_lines(path, self.name),
                changes.encoded[index],
                changes.unchanged,
                self.rules.key,
                dropped,
            )
            if merged is None or parts.writers[index].bytes > parts.max_file_bytes:
                return None
            replaced += merged[0]
            kept += merged[1]
        if kept != len(changes.unchanged):  # known documents whose lines the snapshot lost
            return _LOST
        return parts.finish(), dropped, replaced


class _Lost:
    """The snapshot lacks lines of documents the index knows: encode them, then write again."""


_LOST = _Lost()
_Written = tuple[list[SectionSummary], list[bytes], int, "StagedLayout"] | _Lost | None


def _merge_part(
    add: Callable[[bytes], int],
    old_lines: Iterable[bytes],
    encoded: list[tuple[SortKey, bytes]],
    unchanged: set[bytes],
    fields: Sequence[str],
    dropped: list[bytes],
) -> tuple[int, int] | None:
    """Write the old lines still in the database and the encoded records, in key order;
    returns how many old records an encoded one replaced and how many old lines were kept
    (None: two records share a key, for the full export to report)."""
    encoded.sort(key=first_of)
    if any(a[0] == b[0] for a, b in zip(encoded, encoded[1:], strict=False)):
        return None
    position, end, replaced, kept_lines = 0, len(encoded), 0, 0
    for line in old_lines:
        hashed = line_hash_bytes(line)
        kept = hashed in unchanged
        if position < end:  # keys only while encoded records are left to place
            key = line_sort_key(line, fields)
            while position < end and encoded[position][0] < key:
                add(encoded[position][1])
                position += 1
            if position < end and encoded[position][0] == key:
                if kept:
                    return None
                add(encoded[position][1])
                position += 1
                replaced += 1
                dropped.append(hashed)
                continue
        if kept:
            kept_lines += 1
            add(line)
        else:
            dropped.append(hashed)
    for _, line in encoded[position:]:
        add(line)
    return replaced, kept_lines
