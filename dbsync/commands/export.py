"""``dbsync export``: database → snapshot files, sorted, hashed, written atomically."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from dbsync.config import Config
from dbsync.errors import InvalidInput, UsageError
from dbsync.files import StagedFiles
from dbsync.progress import NoProgress, Progress
from dbsync.snapshot import (
    Discard,
    Header,
    Rules,
    SectionSummary,
    SortKey,
    Writable,
    describe_key,
    encode_record,
    line_document,
    line_sort_key,
    read_trailer_digest,
    snapshot_filename,
    sorted_lines,
    write_section,
)
from dbsync.store import Store

CLASHES_SHOWN = 20


@dataclass(frozen=True)
class ExportedCollection:
    collection: str
    records: int
    path: Path
    changed: bool
    digest: str


@dataclass
class KeyClashes:
    """Groups of records sharing one key, found while streaming a sorted collection."""

    fields: Sequence[str]
    groups: list[list[bytes]] = field(default_factory=list)

    def message(self, collection: str) -> str:
        records = sum(len(group) for group in self.groups)
        lines = [
            f"{collection}: the key ({', '.join(self.fields)}) is not unique: "
            f"{len(self.groups)} key(s) shared by {records} records"
        ]
        for group in self.groups[:CLASHES_SHOWN]:
            ids = ", ".join(_id_text(line) for line in group)
            lines.append(f"  {describe_key(line_document(group[0]), self.fields)}  ← _id {ids}")
        if len(self.groups) > CLASHES_SHOWN:
            lines.append(f"  ... and {len(self.groups) - CLASHES_SHOWN} more")
        return "\n".join(lines)


def _id_text(line: bytes) -> str:
    return describe_key(line_document(line), ["_id"]).removeprefix("_id=")


def unique_lines(pairs: Iterable[tuple[SortKey, bytes]], clashes: KeyClashes) -> Iterator[bytes]:
    """The lines of a key-sorted stream; records sharing a key are set aside in ``clashes``."""
    current_key: SortKey | None = None
    current: list[bytes] = []
    for key, line in pairs:
        if current and key == current_key:
            current.append(line)
            continue
        yield from _flush(current, clashes)
        current_key, current = key, [line]
    yield from _flush(current, clashes)


def _flush(group: list[bytes], clashes: KeyClashes) -> Iterator[bytes]:
    if len(group) == 1:
        yield group[0]
    elif group:
        clashes.groups.append(group)


def collection_lines(
    store: Store, collection: str, rules: Rules, progress: Progress
) -> Iterator[tuple[SortKey, bytes]]:
    """The collection's records in key order, streamed with bounded memory."""
    progress.start(f"export {collection}", store.count(collection))

    def encoded() -> Iterator[tuple[SortKey, bytes]]:
        for document in store.iter_documents(collection):
            yield encode_record(document, rules.key)
            progress.advance()

    yield from sorted_lines(encoded(), partial(line_sort_key, fields=rules.key))
    progress.finish()


def select_collections(config: Config, store: Store, wanted: Sequence[str] | None) -> list[str]:
    """The collections to export: those named, or every one not excluded in dbsync.toml."""
    existing = store.collection_names()
    if not wanted:
        return [name for name in existing if not config.excluded(name)]
    unknown = [name for name in wanted if name not in existing]
    if unknown:
        raise UsageError(
            f"unknown collection(s): {', '.join(unknown)}",
            hint=f"the database has: {', '.join(existing) or '(no collections)'}",
        )
    return list(dict.fromkeys(wanted))


def export(
    config: Config,
    store: Store,
    *,
    collections: Sequence[str] | None = None,
    output: Path | None = None,
    target_dir: Path | None = None,
    progress: Progress | None = None,
) -> list[ExportedCollection]:
    """Write the snapshot of each selected collection; all files appear together or none."""
    progress = progress or NoProgress()
    names = select_collections(config, store, collections)
    results = []
    with StagedFiles() as staged:
        if output is not None:
            with staged.open(output) as handle:
                for name in names:
                    summary = _write_section(handle, store, name, config.rules(name), progress)
                    results.append(
                        ExportedCollection(name, summary.count, output, True, summary.digest)
                    )
            return results
        for name in names:
            path = (target_dir or config.snapshot_dir) / snapshot_filename(name)
            old_digest = read_trailer_digest(path)
            with staged.open(path) as handle:
                summary = _write_section(handle, store, name, config.rules(name), progress)
            changed = summary.digest != old_digest
            results.append(ExportedCollection(name, summary.count, path, changed, summary.digest))
    return results


def current_summary(store: Store, name: str, rules: Rules) -> SectionSummary:
    """Count and digest the collection would have in a snapshot, without writing one."""
    return _write_section(Discard(), store, name, rules, NoProgress())


def _write_section(
    handle: Writable, store: Store, name: str, rules: Rules, progress: Progress
) -> SectionSummary:
    clashes = KeyClashes(rules.key)
    pairs = collection_lines(store, name, rules, progress)
    summary = write_section(handle, Header(name, rules), unique_lines(pairs, clashes))
    if clashes.groups:
        raise InvalidInput(
            clashes.message(name),
            hint="fix the records, choose another key in dbsync.toml, "
            "or fold them by the conflict rules with --dedupe",
        )
    return summary
