"""``dbsync log KEY``: every version of one record through the snapshot's git history.

The history is read the cheap way round. ``git log -- <the collection's files>`` lists only the
commits that changed them (parts included), newest first, with parents rewritten to those
commits. For each commit one ``git cat-file --batch`` process gives the snapshot folder's tree,
hence the blob of the one file the key belongs to (with parts: the part its key hashes to). A
version is a commit whose record differs from every parent's: edits, creations, deletions and
re-creations.

Whether it does is read from the log index (``edges.log_index``): for the pair of blobs (the
file at the parent, at the commit), the changed records' key hashes and lines. The pairs it
lacks are computed from their two blobs, read oldest first; then a known history costs no blob
read but the oldest version's. Where the index cannot tell (a change of the number of parts, a
pair too large to keep, the root commit), the blobs are read, each once, and the record is found
by binary search over their key-sorted lines (a few lines parsed, not the whole file).
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dbsync.config import Config
from dbsync.core.commit_subject import parse_snapshot_subject
from dbsync.core.conflict import timestamp_millis
from dbsync.core.ordering import JsonDoc, SortKey, key_hash, part_of, sort_value
from dbsync.core.rules import Rules
from dbsync.core.snapshot import (
    content_hash,
    is_record_line,
    line_body,
    line_document,
    line_hash,
    line_sort_key,
    snapshot_filename,
)
from dbsync.edges import git
from dbsync.edges.log_index import LINES_KEPT, Change, LogIndex, changed_records
from dbsync.edges.parts import collection_files
from dbsync.errors import InvalidInput, UsageError

CREATED, CHANGED, DELETED, RECREATED = "created", "changed", "deleted", "re-created"
_WRAPPED = re.compile(r"^(ObjectId|NumberLong|NumberInt|ISODate|Date)\((.*)\)$", re.DOTALL)

# ---------------------------------------------------------------- the key as the user writes it


def value_candidates(text: str) -> list[Any]:
    """What a key value written on the command line may mean, most likely first.

    ``ObjectId(...)``, ``NumberLong(...)``, ``ISODate(...)`` as the mongo shell writes them;
    JSON (a number, a quoted string, ``{"$oid": ...}``); else the text itself. A number or a
    24-digit hex text may also be a string ``_id``: both are tried, in that order.
    """
    wrapped = _WRAPPED.match(text.strip())
    if wrapped:
        return [_shell_value(wrapped.group(1), wrapped.group(2).strip().strip("\"'"), text)]
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        if re.fullmatch(r"[0-9a-fA-F]{24}", text):
            return [{"$oid": text.lower()}, text]
        return [text]
    if isinstance(value, str):
        return [value]
    return [value, text]


def _shell_value(kind: str, inner: str, text: str) -> Any:
    if kind == "ObjectId":
        if not re.fullmatch(r"[0-9a-fA-F]{24}", inner):
            raise UsageError(f"{text}: an ObjectId has 24 hexadecimal digits")
        return {"$oid": inner.lower()}
    if kind in ("NumberLong", "NumberInt"):
        try:
            return int(inner)
        except ValueError:
            raise UsageError(f"{text}: not an integer") from None
    millis = timestamp_millis(inner)
    if millis is None:
        raise UsageError(f"{text}: not a date (write ISODate(2025-04-09T00:00:00Z))")
    return {"$date": {"$numberLong": str(millis)}}


@dataclass(frozen=True)
class RecordKey:
    """One reading of the key the user gave: the key fields' JSON values and its sort key."""

    fields: tuple[str, ...]
    values: tuple[Any, ...]

    @property
    def sort_key(self) -> SortKey:
        return tuple(map(sort_value, self.values))

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self.fields, self.values, strict=True))

    def text(self) -> str:
        return ", ".join(f"{n}={orjson.dumps(v).decode()}" for n, v in self.as_dict().items())


def key_readings(rules: Rules, key: str | None, fields: Sequence[str]) -> list[RecordKey]:
    """Every reading of KEY / ``--field NAME=VALUE`` for a collection keyed by ``rules.key``."""
    given = _given_fields(rules, key, fields)
    missing = [name for name in rules.key if name not in given]
    unknown = [name for name in given if name not in rules.key]
    if missing or unknown:
        raise UsageError(
            f"the collection is keyed by {', '.join(rules.key)}"
            + (f"; not given: {', '.join(missing)}" if missing else "")
            + (f"; not key fields: {', '.join(unknown)}" if unknown else ""),
            hint="give every key field: " + " ".join(f"--field {n}=VALUE" for n in rules.key),
        )
    choices = [value_candidates(given[name]) for name in rules.key]
    return [RecordKey(rules.key, values) for values in itertools.product(*choices)]


def _given_fields(rules: Rules, key: str | None, fields: Sequence[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for item in fields:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise UsageError(f"--field {item}: write NAME=VALUE (say, --field ticker=SOL)")
        given[name] = value
    if key is not None:
        if len(rules.key) != 1 or rules.key[0] in given:
            raise UsageError(
                f"KEY stands for a one-field key; this collection is keyed by "
                f"{', '.join(rules.key)}",
                hint="give the key fields instead: "
                + " ".join(f"--field {n}=VALUE" for n in rules.key),
            )
        given[rules.key[0]] = key
    if not given:
        raise UsageError("give the record's KEY (or --field NAME=VALUE for each key field)")
    return given


# ---------------------------------------------------------------- finding a record in a blob


def find_record(data: bytes, fields: Sequence[str], target: SortKey) -> bytes | None:
    """The record line with sort key ``target`` in a snapshot section's bytes, or None.

    Binary search over the key-sorted record lines, between the header (first line) and the
    trailer (last line): about log2(records) lines are parsed. A line that does not match its
    hash is refused, so a damaged blob never passes for a version.
    """
    low = data.find(b"\n") + 1
    high = data.rfind(b"\n", 0, len(data) - 1) + 1
    while low < high:
        middle = (low + high) // 2
        start = max(low, data.rfind(b"\n", low, middle) + 1)
        end = data.index(b"\n", middle)
        line = data[start : end + 1]
        key = line_sort_key(line, fields)
        if key == target:
            if content_hash(line_body(line)) != line_hash(line):
                raise InvalidInput("the record does not match its hash: it was edited or damaged")
            return line
        if key < target:
            low = end + 1
        else:
            high = start
    return None


# ---------------------------------------------------------------- versions through git


@dataclass(frozen=True)
class FieldDiff:
    field: str
    change: str
    """``added``, ``removed`` or ``changed``."""
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "change": self.change, "old": self.old, "new": self.new}


def field_diffs(old: JsonDoc, new: JsonDoc) -> list[FieldDiff]:
    """Top-level fields added, removed or changed from ``old`` to ``new``, in ``new``'s order."""
    diffs = []
    for name in [*new, *(name for name in old if name not in new)]:
        if name not in old:
            diffs.append(FieldDiff(name, "added", None, new[name]))
        elif name not in new:
            diffs.append(FieldDiff(name, "removed", old[name], None))
        elif orjson.dumps(old[name]) != orjson.dumps(new[name]):
            diffs.append(FieldDiff(name, "changed", old[name], new[name]))
    return diffs


@dataclass(frozen=True)
class Version:
    """One event in a record's history: the commit, who made it, and what became of the record."""

    commit: str
    date: str
    author: str
    asset: str | None
    subject: str
    event: str
    document: JsonDoc | None
    """The record at this commit (None: deleted)."""
    previous: JsonDoc | None
    """The version this one replaced (for a deletion: the last version before it)."""
    previous_commit: str | None
    changes: list[FieldDiff] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "date": self.date,
            "author": self.author,
            "asset": self.asset,
            "subject": self.subject,
            "event": self.event,
            "document": self.document,
            "previous": self.previous,
            "previous_commit": self.previous_commit,
            "changes": [change.to_json() for change in self.changes],
        }


@dataclass
class RecordLog:
    collection: str
    key: RecordKey
    versions: list[Version]
    notes: list[str] = field(default_factory=list)
    commits_read: int = 0
    blobs_read: int = 0
    pairs_computed: int = 0
    """Pairs of file versions this log added to the log index (0: it knew them all)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "key": self.key.as_dict(),
            "versions": [version.to_json() for version in self.versions],
            "notes": self.notes,
        }


def commit_asset(subject: str) -> str | None:
    """The asset named by a snapshot commit dbsync made (``core.commit_subject``)."""
    parsed = parse_snapshot_subject(subject)
    return parsed.asset if parsed else None


_NO_VERSION = "no version"
Decision = tuple[bytes | None, bytes | None] | str | None
"""What the log index tells of a commit for one reading of the key: ``_NO_VERSION`` (the
record's line is one of its parents'), the line and the first parent's line (a version), or
None (the index cannot tell: the blobs are read)."""


_UNSEEN = "unseen"


def _intact(line: bytes | None) -> bool:
    return line is None or content_hash(line_body(line)) == line_hash(line)


def _file_changes(old: bytes, new: bytes, fields: Sequence[str]) -> list[Change] | None:
    """The records whose line differs between two versions of a file, keyed by key hash (None:
    more than the index keeps, or a line that is no record of this key, which the blob reads
    then report)."""
    found = changed_records(old, new)
    if found is None or sum(map(len, found[0])) + sum(map(len, found[1])) > LINES_KEPT:
        return None
    by_key: dict[int, list[list[Any]]] = {}
    try:
        for side, lines in ((1, found[0]), (2, found[1])):
            for line in filter(is_record_line, lines):
                key = line_sort_key(line, fields)
                group = by_key.setdefault(key_hash(key), [])
                entry = next((e for e in group if e[0] == key), None)
                if entry is None:
                    group.append(entry := [key, None, None])
                entry[side] = line
    except (ValueError, InvalidInput, orjson.JSONDecodeError):
        return None
    return [Change(hashed, old, new) for hashed, group in by_key.items() for _, old, new in group]


class PairSource:
    """The log index, with the pairs it lacks computed from the two blobs (read oldest first,
    git's cheap order; the newer blob of a pair is the older of the next, so it is kept) and
    added to it."""

    def __init__(self, index: LogIndex, reader: git.ObjectReader) -> None:
        self.index, self.reader = index, reader
        self._kept: dict[str, bytes | None] = {}
        self.pairs_computed = self.blobs_read = 0

    def fill(self, pairs: Sequence[tuple[str, str]], fields: Sequence[str]) -> None:
        """Compute and keep these (older blob, newer blob) pairs, in this order."""
        for old, new in pairs:
            old_data, new_data = self._blob(old), self._blob(new)
            if old_data is None or new_data is None:
                continue  # not in this clone: the blob reads will say so
            self.index.add(old, new, fields, _file_changes(old_data, new_data, fields))
            self.pairs_computed += 1
        self.index.save()

    def _blob(self, sha: str) -> bytes | None:
        if sha not in self._kept:
            found = self.reader.read(sha)
            self.blobs_read += 1
            self._kept = {**dict(list(self._kept.items())[-1:]), sha: found and found[1]}
        return self._kept[sha]

    def close(self) -> None:
        self.index.close()


def folder_entries(reader: git.ObjectReader, commit: str, folder: str) -> dict[str, str]:
    """The snapshot folder's files at ``commit``: name → blob id (none: no such folder)."""
    spec = f"{commit}:{folder}" if folder else f"{commit}^{{tree}}"
    tree = reader.read(spec)
    return {e.name: e.sha for e in git.parse_tree(tree[1])} if tree else {}


class VersionFinder:
    """The record (one line per reading of the key) at any commit, reading each blob once;
    with ``pairs``, whether a commit changed it is read from the log index, and blobs only
    where the index cannot tell."""

    def __init__(
        self,
        reader: git.ObjectReader,
        folder: str,
        collection: str,
        readings: list[RecordKey],
        pairs: PairSource | None = None,
    ) -> None:
        self.reader, self.folder, self.collection = reader, folder, collection
        self.readings, self.pairs = readings, pairs
        self.stem = snapshot_filename(collection)[: -len(".jsonl")]
        self._parts = re.compile(re.escape(self.stem) + r"\.part-\d+-of-(\d+)\.jsonl")
        self._by_commit: dict[str, tuple[bytes | None, ...]] = {}
        self._by_blob: dict[tuple[str, int], bytes | None] = {}
        self._trees: dict[str, dict[str, str]] = {}
        self._decisions: dict[tuple[str, int], Decision] = {}
        self.notes: list[str] = []
        self.commits_read = self.blobs_read = 0

    def at(self, commit: str) -> tuple[bytes | None, ...]:
        found = self._by_commit.get(commit)
        if found is None:
            found = self._by_commit[commit] = self._look_up(commit)
        return found

    def _look_up(self, commit: str) -> tuple[bytes | None, ...]:
        entries = self.entries(commit)
        return tuple(self._in_files(commit, entries, index) for index in range(len(self.readings)))

    def entries(self, commit: str) -> dict[str, str]:
        """The snapshot folder's files at ``commit``: name → blob id."""
        found = self._trees.get(commit)
        if found is None:
            self.commits_read += 1
            found = self._trees[commit] = folder_entries(self.reader, commit, self.folder)
        return found

    def version_lines(
        self, commit: git.LoggedCommit, index: int
    ) -> tuple[bytes | None, bytes | None] | None:
        """The record's line at ``commit`` and at its first parent, if they make a version
        (the line differs from every parent's); None if not."""
        decided = self._decided(commit, index)
        if decided == _NO_VERSION:
            return None
        if isinstance(decided, tuple):
            return decided
        line = self.at(commit.sha)[index]
        parents = [self.at(parent)[index] for parent in commit.parents] or [None]
        return None if line in parents else (line, parents[0])

    def prefetch(self, commits: Sequence[git.LoggedCommit]) -> None:
        """Fill the log index for these commits, then read the blobs the index cannot answer
        for, oldest first.

        Git stores a file's versions as deltas, the newer against the older as a rule (a
        fetched pack, ``fast-import``): rebuilt oldest first, each blob starts from the one
        before, still in git's delta cache; newest first, each rebuilds its chain again
        (measured on a 33 MB file: git's CPU time 3.5x lower this way round).
        """
        if self.pairs is not None:
            self._fill_index(commits)
        wanted: dict[str, tuple[str, str]] = {}
        for commit in commits:
            if all(self._decided(commit, i) is not None for i in range(len(self.readings))):
                continue
            for sha in (commit.sha, *commit.parents):
                entries = self.entries(sha)
                for reading in self.readings:
                    for name in self._candidate_files(entries, reading.sort_key):
                        if (entries[name], 0) not in self._by_blob:
                            wanted.setdefault(entries[name], (sha, name))
        for sha, (commit_sha, name) in reversed(wanted.items()):
            self._in_blob(commit_sha, name, sha, 0)

    def _fill_index(self, commits: Sequence[git.LoggedCommit]) -> None:
        assert self.pairs is not None
        fields = self.readings[0].fields
        missing: dict[tuple[str, str], None] = {}
        for commit in commits:
            for parent in commit.parents:
                for reading in self.readings:
                    pair = self._pair(commit.sha, parent, reading.sort_key)
                    if pair and pair[0] != pair[1] and not self.pairs.index.known(*pair, fields):
                        missing[pair] = None
        self.pairs.fill(list(reversed(missing)), fields)

    def _pair(self, commit: str, parent: str, key: SortKey) -> tuple[str, str] | None:
        """The blob ids of the one file the key is in at ``parent`` and at ``commit``, when it
        is one file, the same on both sides (None: the blobs must be read)."""
        names = self._candidate_files(self.entries(commit), key)
        if len(names) != 1 or self._candidate_files(self.entries(parent), key) != names:
            return None
        return self.entries(parent)[names[0]], self.entries(commit)[names[0]]

    def _decided(self, commit: git.LoggedCommit, index: int) -> Decision:
        if self.pairs is None or not commit.parents:
            return None
        found = self._decisions.get((commit.sha, index), _UNSEEN)
        if found == _UNSEEN:
            found = self._decisions[(commit.sha, index)] = self._decide(commit, index)
        return found

    def _decide(self, commit: git.LoggedCommit, index: int) -> Decision:
        assert self.pairs is not None
        reading = self.readings[index]
        changed: list[tuple[bytes | None, bytes | None]] = []
        for parent in commit.parents:
            pair = self._pair(commit.sha, parent, reading.sort_key)
            if pair is None:
                return None
            if pair[0] == pair[1]:
                return _NO_VERSION
            found = self.pairs.index.lookup(*pair, reading.fields, key_hash(reading.sort_key))
            if isinstance(found, str):  # WIDE: the index holds no lines of this pair
                return None
            lines = [(c.old, c.new) for c in found if self._is_key(c, reading)]
            if not lines:
                return _NO_VERSION
            if not all(_intact(line) for line in lines[0]):
                return None  # the blob reads say what is wrong with it
            changed.append(lines[0])
        return (changed[0][1], changed[0][0])

    @staticmethod
    def _is_key(change: Change, reading: RecordKey) -> bool:
        line = change.old if change.old is not None else change.new
        assert line is not None
        return line_sort_key(line, reading.fields) == reading.sort_key

    def _in_files(self, commit: str, entries: dict[str, str], index: int) -> bytes | None:
        reading = self.readings[index]
        for name in self._candidate_files(entries, reading.sort_key):
            line = self._in_blob(commit, name, entries[name], index)
            if line is not None:
                return line
        return None

    def holds(self, name: str) -> bool:
        """Whether a file of the snapshot folder is this collection's: its one file or a part."""
        return name == self.stem + ".jsonl" or self._parts.fullmatch(name) is not None

    def _candidate_files(self, entries: dict[str, str], key: SortKey) -> list[str]:
        """The one file, and the part the key hashes to in each layout present."""
        names = [self.stem + ".jsonl"] if self.stem + ".jsonl" in entries else []
        counts = sorted({int(m.group(1)) for n in entries if (m := self._parts.fullmatch(n))})
        for count in counts:
            name = snapshot_filename(self.collection, (part_of(key, count), count))
            if name in entries:
                names.append(name)
        return names

    def _in_blob(self, commit: str, name: str, sha: str, index: int) -> bytes | None:
        if (sha, index) in self._by_blob:
            return self._by_blob[(sha, index)]
        found = self.reader.read(sha)
        self.blobs_read += 1
        lines: list[bytes | None] = []
        for reading in self.readings:  # one read of the blob serves every reading of the key
            try:
                lines.append(
                    find_record(found[1], reading.fields, reading.sort_key) if found else None
                )
            except (ValueError, InvalidInput, orjson.JSONDecodeError) as error:
                self.notes.append(
                    f"{commit[:10]}:{self.folder}/{name} is not a readable snapshot "
                    f"({error}): skipped"
                )
                lines.append(None)
        for position, line in enumerate(lines):
            self._by_blob[(sha, position)] = line
        return lines[index]


def _event(line: bytes | None, before: bytes | None) -> str:
    if line is None:
        return DELETED
    return CREATED if before is None else CHANGED


def _version(commit: git.LoggedCommit, line: bytes | None, before: bytes | None) -> Version:
    document = line_document(line) if line is not None else None
    previous = line_document(before) if before is not None else None
    changes = (
        field_diffs(previous, document) if previous is not None and document is not None else []
    )
    return Version(
        commit.sha,
        commit.date,
        commit.author,
        commit_asset(commit.subject),
        commit.subject,
        _event(line, before),
        document,
        previous,
        commit.parents[0] if commit.parents and before is not None else None,
        changes,
    )


def prefetched(
    commits: Iterator[git.LoggedCommit], finder: VersionFinder
) -> Generator[git.LoggedCommit, None, None]:
    """The commits, with the log index filled and the blobs of each growing batch read ahead,
    oldest first.

    Batches of 2, 4, 8... commits (up to 256): ``--limit 1`` reads at most about twice what
    it needs, a whole history reads in git's cheap order.
    """
    size = 2
    while batch := list(itertools.islice(commits, size)):
        finder.prefetch(batch)
        yield from batch
        size = min(size * 2, 256)


def walk_versions(
    commits: Iterator[git.LoggedCommit], finder: VersionFinder, index: int
) -> Generator[Version, None, None]:
    """The versions of reading ``index`` of the key, newest first."""
    for commit in commits:
        lines = finder.version_lines(commit, index)
        if lines is not None:
            yield _version(commit, *lines)


def mark_recreations(versions: list[Version], older_exists: bool) -> list[Version]:
    """A creation after an older version (a deletion, usually) is a re-creation."""
    marked, seen_older = [], older_exists
    for version in reversed(versions):
        if version.event == CREATED and seen_older:
            version = Version(**{**version.__dict__, "event": RECREATED})
        marked.append(version)
        seen_older = True
    return list(reversed(marked))


@dataclass(frozen=True)
class LogRequest:
    collection: str | None
    key: str | None
    fields: tuple[str, ...] = ()
    limit: int | None = None
    use_index: bool = True
    """Read and fill the log index (False: every blob is read; the same versions)."""


def choose_collection(config: Config, wanted: str | None) -> str:
    if wanted is not None:
        return wanted
    names = sorted(collection_files(config.snapshot_dir))
    if len(names) == 1:
        return names[0]
    raise UsageError(
        "which collection? "
        + ("the snapshot holds: " + ", ".join(names) if names else "the snapshot folder is empty"),
        hint="give --collection NAME",
    )


def snapshot_folder_in_git(config: Config) -> tuple[Path, str]:
    """The work tree root and the snapshot folder relative to it, as git names paths."""
    root = git.require_toplevel(config.root)
    try:
        folder = config.snapshot_dir.resolve().relative_to(root.resolve())
    except ValueError:
        raise UsageError(
            f"the snapshot folder {config.snapshot_dir} is outside the git repository {root}"
        ) from None
    return root, folder.as_posix() if str(folder) != "." else ""


def pathspecs(folder: str, collection: str) -> list[str]:
    """The collection's file and every part file it may have had, as git pathspecs."""
    prefix = f"{folder}/" if folder else ""
    stem = snapshot_filename(collection)[: -len(".jsonl")]
    return [f":(literal){prefix}{stem}.jsonl", f":(glob){prefix}{stem}.part-*-of-*.jsonl"]


def record_log(config: Config, request: LogRequest) -> RecordLog:
    """Every version of one record, newest first (at most ``request.limit``)."""
    collection = choose_collection(config, request.collection)
    rules = config.rules(collection)
    readings = key_readings(rules, request.key, request.fields)
    root, folder = snapshot_folder_in_git(config)
    if git.rev_parse(root, "HEAD") is None:
        raise UsageError("the repository has no commit yet", hint="export and commit first")
    with git.ObjectReader(root) as reader:
        pairs = PairSource(LogIndex.open(config.state_dir), reader) if request.use_index else None
        try:
            finder = VersionFinder(reader, folder, collection, readings, pairs)
            found = _first_reading_with_history(root, folder, collection, finder, request.limit)
        finally:
            if pairs is not None:
                pairs.close()
    if found is None:
        raise UsageError(
            f"no version of {collection} {readings[0].text()} in the git history of "
            f"{folder or '.'}/",
            hint="check the key (ObjectId(...) for an ObjectId, quotes for a text that looks "
            "like a number) and --collection; 'dbsync dump' lists the records",
        )
    index, versions, older = found
    log = RecordLog(collection, readings[index], mark_recreations(versions, older), finder.notes)
    log.commits_read, log.blobs_read = finder.commits_read, finder.blobs_read
    if pairs is not None:
        log.blobs_read += pairs.blobs_read
        log.pairs_computed = pairs.pairs_computed
    return log


def _first_reading_with_history(
    root: Path, folder: str, collection: str, finder: VersionFinder, limit: int | None
) -> tuple[int, list[Version], bool] | None:
    """The first reading of the key that has versions; with them, and whether older exist."""
    for index in range(len(finder.readings)):
        commits = git.log_commits(root, pathspecs(folder, collection))
        walk = walk_versions(prefetched(commits, finder), finder, index)
        versions = list(itertools.islice(walk, limit))
        if not versions:
            continue
        needs_more = limit is not None and len(versions) == limit and versions[-1].event == CREATED
        older = needs_more and next(walk, None) is not None
        walk.close()
        commits.close()
        return index, versions, older
    return None


HOOK_PAIRS = 64
"""Pairs one hook adds to the log index at most: a pull of hundreds of commits makes its hook
no slower than this many (the first ``dbsync log`` over them computes the rest)."""


def index_new_commits(config: Config, since: Sequence[str], *, budget: int = HOOK_PAIRS) -> int:
    """Add to the log index the pairs of the commits reachable from HEAD, not from ``since``,
    that changed a collection's files: each file against the same file at each parent, newest
    commits first. The hooks run it for what a commit, a push or a pull brought, so that a
    ``dbsync log`` finds the history this clone has seen indexed. Returns the pairs computed."""
    root, folder = snapshot_folder_in_git(config)
    with git.ObjectReader(root) as reader:
        pairs = PairSource(LogIndex.open(config.state_dir), reader)
        try:
            for collection in sorted(collection_files(config.snapshot_dir)):
                room = budget - pairs.pairs_computed
                if room <= 0:
                    break
                fields = config.rules(collection).key
                commits = git.log_commits(root, pathspecs(folder, collection), since=since)
                found = _unknown_pairs(pairs, folder, collection, commits, fields, room)
                commits.close()
                pairs.fill(list(reversed(found)), fields)
        finally:
            pairs.close()
    return pairs.pairs_computed


def _unknown_pairs(
    pairs: PairSource,
    folder: str,
    collection: str,
    commits: Iterator[git.LoggedCommit],
    fields: Sequence[str],
    room: int,
) -> list[tuple[str, str]]:
    """Up to ``room`` (parent blob, commit blob) pairs of the collection's files that the index
    does not know, newest commit first."""
    files = VersionFinder(pairs.reader, folder, collection, [])  # its trees and file names
    found: dict[tuple[str, str], None] = {}
    for commit in commits:
        for parent in commit.parents:
            before = files.entries(parent)
            for name, sha in files.entries(commit.sha).items():
                old = before.get(name)
                if old is None or old == sha or not files.holds(name):
                    continue
                if not pairs.index.known(old, sha, fields):
                    found[(old, sha)] = None
        if len(found) >= room:
            break
    return list(found)[:room]


def version_at(config: Config, collection: str, key: RecordKey, commit: str) -> tuple[str, JsonDoc]:
    """The record as ``commit`` holds it; for a commit that deleted it, the version it deleted."""
    root, folder = snapshot_folder_in_git(config)
    sha = git.rev_parse(root, commit)
    if sha is None:
        raise UsageError(f"{commit} names no commit", hint="see 'dbsync log KEY' for commit ids")
    with git.ObjectReader(root) as reader:
        finder = VersionFinder(reader, folder, collection, [key])
        line = finder.at(sha)[0]
        source = sha
        if line is None and (parent := git.rev_parse(root, f"{sha}^")) is not None:
            line, source = finder.at(parent)[0], parent
    if line is None:
        raise UsageError(
            f"commit {commit} holds no version of {collection} {key.text()}",
            hint="give a commit that 'dbsync log' lists with a version (or the deletion's)",
        )
    return source, line_document(line)


# ---------------------------------------------------------------- rendering


def _shown(value: Any) -> str:
    return orjson.dumps(value).decode()


def _typed(value: Any) -> str:
    """A key value as the user would type it back (``value_candidates`` reads it first)."""
    if isinstance(value, dict) and set(value) == {"$oid"}:
        return f"ObjectId({value['$oid']})"
    if isinstance(value, str) and value_candidates(value) == [value]:
        return value
    return _shown(value)


def key_arguments(key: RecordKey, collection: str) -> str:
    """The command-line arguments that name this record, quoted for a shell."""
    values = key.as_dict()
    if len(values) == 1:
        ((_, value),) = values.items()
        named = [shlex.quote(_typed(value))]
    else:
        named = [f"--field {shlex.quote(f'{n}={_typed(v)}')}" for n, v in values.items()]
    return " ".join([*named, "--collection", shlex.quote(collection)])


def change_lines(changes: Sequence[FieldDiff]) -> list[str]:
    marks = {"added": "+", "removed": "-", "changed": "~"}
    lines = []
    for change in changes:
        if change.change == "changed":
            text = f"{_shown(change.old)} → {_shown(change.new)}"
        else:
            text = _shown(change.new if change.change == "added" else change.old)
        lines.append(f"    {marks[change.change]} {change.field}: {text}")
    return lines


def log_text(log: RecordLog) -> list[str]:
    """``dbsync log`` for people: one block per version, newest first."""
    lines = [f"{log.collection} {log.key.text()}: {len(log.versions)} version(s), newest first"]
    for version in log.versions:
        who = f"{version.asset} ({version.author})" if version.asset else version.author
        lines.append(f"{version.commit[:12]}  {version.date}  {who}  {version.event}")
        if version.event == CHANGED:
            lines += change_lines(version.changes)
        elif version.event == DELETED:
            before = (version.previous_commit or "")[:12]
            lines.append(f"    last version (commit {before}): {_shown(version.previous)}")
            lines.append(
                f"    bring it back: dbsync log {key_arguments(log.key, log.collection)} "
                f"--restore {before}"
            )
        else:
            lines.append(f"    {_shown(version.document)}")
    return lines


def version_to_restore(
    config: Config, request: LogRequest, commit: str
) -> tuple[str, str, JsonDoc]:
    """``log KEY --restore COMMIT``: the collection, the commit and the version to bring back."""
    collection = choose_collection(config, request.collection)
    readings = key_readings(config.rules(collection), request.key, request.fields)
    problem: UsageError | None = None
    for reading in readings:
        try:
            source, document = version_at(config, collection, reading, commit)
        except UsageError as error:
            problem = problem or error
            continue
        return collection, source, document
    assert problem is not None
    raise problem
