"""The snapshot format over bytes: records ⇄ lines, hashing, headers, trailers, checking.

A snapshot section is::

    {"format":"dbsync-snapshot","version":1,"collection":"pnl","key":["_id"],"timestamp":null,"preserve":[]}
    {"h":"<xxh3-64 of the document bytes>","d":<document, Extended JSON v2 snapshot mode>}
    ...
    {"end":"dbsync-snapshot","count":<records>,"digest":"<xxh3-128 of the header line and every h>"}

Records are sorted by ``sort_key`` of their key, strictly (a key appears once). A file holds one
section (``database_backup/<collection>.jsonl``) or several one after another (``--output FILE``).
Nothing in a section depends on time or machine: the same data gives the same bytes.

Pure: lines in, lines out. The order of records is ``dbsync.core.ordering``; opening, writing
and sorting files is ``dbsync.edges.snapshot_files``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Protocol

import orjson
import xxhash

from dbsync.core import extjson
from dbsync.core.ordering import JsonDoc, SortKey, describe_key, native_key, part_of, sort_key
from dbsync.core.rules import Rules
from dbsync.errors import InvalidInput

FORMAT = "dbsync-snapshot"
VERSION = 1
SUFFIX = ".jsonl"
MAX_LINE_BYTES = 64 * 1024 * 1024
_RECORD_PREFIX = b'{"h":"'
_RECORD_MIDDLE = b'","d":'
_END = b"}\n"
_BODY_START = len(_RECORD_PREFIX) + 16 + len(_RECORD_MIDDLE)
_HEX16 = re.compile(rb"[0-9a-f]{16}")


@dataclass(frozen=True)
class Header:
    collection: str
    rules: Rules
    part: tuple[int, int] | None = None
    """``(index, count)`` when the collection is split into ``count`` part files (see
    ``dbsync.edges.parts``); None for a collection kept in one file."""

    def line(self) -> bytes:
        fields: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "collection": self.collection,
            "key": list(self.rules.key),
            "timestamp": self.rules.timestamp,
            "preserve": list(self.rules.preserve),
        }
        if self.part is not None:
            fields["part"] = list(self.part)
        return orjson.dumps(fields) + b"\n"


class SnapshotError(InvalidInput):
    """A snapshot file that cannot be trusted, with the file and line where it went wrong."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(
            f"{where}: {problem}",
            hint=f"run 'dbsync verify {path}' to list every problem; nothing was written",
        )
        self.path, self.line, self.problem = path, line, problem


# ---------------------------------------------------------------- record lines


_hex_hash = xxhash.xxh3_64_hexdigest


def content_hash(body: bytes) -> str:
    return _hex_hash(body)


def record_line(body: bytes, digest: str | None = None) -> bytes:
    """A record line (newline included) for an encoded document."""
    digest = digest or content_hash(body)
    return b"".join((_RECORD_PREFIX, digest.encode(), _RECORD_MIDDLE, body, b"}\n"))


def encode_record(
    doc: Mapping[str, Any], fields: Sequence[str], raw: bytes | None = None
) -> tuple[SortKey, bytes]:
    """A database document as its sort key and its record line.

    ``raw``: the BSON the document was decoded from by ``store.decode_raw``, when the store
    gave it. When it holds nothing the walk must see to (its bytes show none, ``plain_bson``,
    or, when they could, its values show none, ``plain_document``), orjson writes the document
    whole and the key is read from the document's own values: the same line and key, without
    building the JSON values of every field.
    """
    if raw is not None and (_plain_bson(raw) or extjson.plain_document(doc)):
        if fields is not _LAST_KEY[0]:
            _remember_key(fields)
        native_key = _LAST_KEY[1]
        if native_key is not None:
            try:  # extjson.encode_plain, inline: a call is a twentieth of a PNL line
                body = _dumps(doc, default=_write_wrapped, option=_PLAIN_OPTIONS)
            except orjson.JSONEncodeError:
                body = extjson.encode_document(doc)
            line = b"".join((_RECORD_PREFIX, _hex_hash(body).encode(), _RECORD_MIDDLE, body, _END))
            return native_key(doc), line
    json_doc = extjson.to_json_value(doc)
    return sort_key(json_doc, fields), record_line(extjson.dumps_json(json_doc))


_LAST_KEY: list[Any] = [None, None]  # (fields, key function): one export asks for one key
_plain_bson, _dumps, _write_wrapped = extjson.plain_bson, orjson.dumps, extjson.write_wrapped
_PLAIN_OPTIONS = extjson.PLAIN_OPTIONS


def _remember_key(fields: Sequence[str]) -> None:
    _LAST_KEY[:] = [fields, native_key(tuple(fields))]


def line_hash(line: bytes) -> str:
    return line[6:22].decode()


line_hash_bytes: Callable[[bytes], bytes] = operator.itemgetter(slice(6, 22))
"""The record's hash as the line holds it (16 hex digits, as bytes): what the change index keys
a line by, and what tells a kept line from a changed one in an export's walk. The slice as a C
callable: called once per line in the hottest loops, where a ``def`` costs several times more
than the slice itself."""


def is_record_line(line: bytes) -> bool:
    """Whether ``line`` starts as a record line does (not a header or a trailer); its shape is
    not checked further."""
    return line.startswith(_RECORD_PREFIX)


def line_body(line: bytes) -> bytes:
    return line[_BODY_START:-2]


def line_document(line: bytes) -> JsonDoc:
    """The record's document as plain JSON values (Extended JSON wrappers left as they are)."""
    doc: JsonDoc = orjson.loads(line_body(line))
    return doc


def line_sort_key(line: bytes, fields: Sequence[str]) -> SortKey:
    return sort_key(line_document(line), fields)


def _structure_problem(line: bytes) -> str | None:
    """What is wrong with the shape of a record line, or None. Cheap: no JSON parsing."""
    if not line.endswith(b"\n"):
        return "the line is cut short (no newline at its end): the file was truncated"
    if not line.startswith(_RECORD_PREFIX) or line[22:_BODY_START] != b'","d":':
        return 'not a record line: expected {"h":"<16 hex digits>","d":{...}}'
    if not line.endswith(b"}\n") or not _HEX16.fullmatch(line[6:22]):
        return 'not a record line: expected {"h":"<16 hex digits>","d":{...}}'
    if content_hash(line_body(line)) != line_hash(line):
        return "the record does not match its hash: it was edited or damaged"
    return None


# ---------------------------------------------------------------- headers and trailers


def _parse_json_line(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def parse_header(line: bytes) -> Header | str:
    """The header a line states, or what is wrong with it."""
    value = _parse_json_line(line)
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        return "not a dbsync snapshot: the first line is not a dbsync-snapshot header"
    if value.get("version") != VERSION:
        return (
            f"snapshot format version {value.get('version')!r} is not supported "
            f"(this dbsync reads version {VERSION}): upgrade dbsync"
        )
    expected = {"format", "version", "collection", "key", "timestamp", "preserve"}
    if set(value) - {"part"} != expected:
        return f"header fields {sorted(value)} are not {sorted(expected)} (and maybe part)"
    part = value.get("part")
    if part is not None and not _part_number(part):
        return "header part must be [index, count]: count a power of two above 1, index below it"
    key, stamp, preserve = value["key"], value["timestamp"], value["preserve"]
    good = (
        isinstance(value["collection"], str)
        and value["collection"]
        and _string_list(key)
        and key
        and (stamp is None or isinstance(stamp, str))
        and _string_list(preserve)
    )
    if not good:
        return "header has a wrong type: collection and key must be set, key and preserve lists"
    rules = Rules(tuple(key), stamp, tuple(preserve))
    header = Header(value["collection"], rules, None if part is None else (part[0], part[1]))
    if header.line() != line:
        return "header is not in canonical form: it was edited"
    return header


def _part_number(value: Any) -> bool:
    if not isinstance(value, list) or len(value) != 2:
        return False
    index, count = value
    numbers = all(type(n) is int for n in (index, count))
    return numbers and count > 1 and count & (count - 1) == 0 and 0 <= index < count


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def trailer_line(count: int, digest: str) -> bytes:
    return orjson.dumps({"end": FORMAT, "count": count, "digest": digest}) + b"\n"


def last_trailer(tail: bytes) -> dict[str, Any] | None:
    """The trailer on the last line of a file's tail (its last bytes), or None."""
    last = tail.rsplit(b"\n", 2)
    value = _parse_json_line(last[-2]) if len(last) >= 2 else None
    return value if isinstance(value, dict) and value.get("end") == FORMAT else None


def _is_trailer(line: bytes) -> bool:
    return line.startswith(b'{"end":')


class Digest:
    """The running digest of a section: its header line and the hash of every record in order."""

    def __init__(self, header_line: bytes) -> None:
        self.hasher = xxhash.xxh3_128(header_line)
        self.count = 0

    def add(self, line: bytes) -> None:
        self.hasher.update(line[6:22])
        self.count += 1

    def hexdigest(self) -> str:
        return self.hasher.hexdigest()

    def trailer(self) -> bytes:
        return trailer_line(self.count, self.hexdigest())


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class SectionSummary:
    collection: str
    count: int
    digest: str


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class Discard:
    """A sink that keeps nothing: writing a section into it computes its count and digest."""

    def write(self, data: bytes, /) -> int:
        return len(data)


class SectionWriter:
    """One section written line by line (several at once, when a collection is split)."""

    def __init__(self, handle: Writable, header: Header) -> None:
        self.handle, self.header = handle, header
        header_line = header.line()
        handle.write(header_line)
        self.digest = Digest(header_line)
        self.bytes = len(header_line)

    def add(self, line: bytes) -> None:
        self.handle.write(line)
        self.digest.add(line)
        self.bytes += len(line)

    def add_batch(self, lines: list[bytes]) -> None:
        """``add`` of each line, in one write and one digest update."""
        data = b"".join(lines)
        self.handle.write(data)
        self.digest.hasher.update(b"".join(map(line_hash_bytes, lines)))
        self.digest.count += len(lines)
        self.bytes += len(data)

    def finish(self) -> SectionSummary:
        trailer = self.digest.trailer()
        self.handle.write(trailer)
        self.bytes += len(trailer)
        return SectionSummary(self.header.collection, self.digest.count, self.digest.hexdigest())


WRITE_BATCH_BYTES = 1 << 20


def write_section(handle: Writable, header: Header, lines: Iterable[bytes]) -> SectionSummary:
    """Write one section: the header, the (already sorted) record lines and the trailer."""
    return write_section_batches(handle, header, _batches(lines))


def written_section(header: Header, data: bytes) -> SectionSummary | None:
    """The summary of a one-section file's bytes when they end as ``write_section`` ends one
    for ``header`` (its header line, and a trailer in canonical form); None otherwise. Only
    for bytes whose records and trailer were checked already: they can be kept as they are
    instead of written again line by line, the same bytes."""
    if not data.startswith(header.line()):
        return None
    trailer = last_trailer(data[-TRAILER_TAIL_BYTES:])
    if trailer is None:
        return None
    count, digest = trailer.get("count"), trailer.get("digest")
    if type(count) is not int or not isinstance(digest, str):
        return None
    if not data.endswith(b"\n" + trailer_line(count, digest)):
        return None
    return SectionSummary(header.collection, count, digest)


TRAILER_TAIL_BYTES = 4096
"""Enough of a file's end to hold its trailer line."""


def write_section_batches(
    handle: Writable, header: Header, batches: Iterable[list[bytes]]
) -> SectionSummary:
    """``write_section`` of lines given in lists: each list in one write and one digest
    update (``SectionWriter.add_batch``), without two calls per line."""
    writer = SectionWriter(handle, header)
    for batch in batches:
        writer.add_batch(batch)
    return writer.finish()


def _batches(lines: Iterable[bytes]) -> Iterator[list[bytes]]:
    """The lines in lists of about ``WRITE_BATCH_BYTES``."""
    batch: list[bytes] = []
    held = 0
    for line in lines:
        batch.append(line)
        held += len(line)
        if held >= WRITE_BATCH_BYTES:
            yield batch
            batch, held = [], 0
    yield batch


def snapshot_filename(collection: str, part: tuple[int, int] | None = None) -> str:
    """The file name of a collection's snapshot (or of one part of it, ``name.part-03-of-16``);
    characters unsafe in paths are %-escaped."""
    safe = re.sub(r"[^A-Za-z0-9._-]", lambda m: f"%{ord(m.group()):02X}", collection)
    stem = "%2E" + safe[1:] if safe.startswith(".") else safe
    if part is None:
        return stem + SUFFIX
    width = len(str(part[1] - 1))
    return f"{stem}.part-{part[0]:0{width}d}-of-{part[1]}{SUFFIX}"


def header_filename(header: Header) -> str:
    return snapshot_filename(header.collection, header.part)


# ---------------------------------------------------------------- reading and verifying


@dataclass
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: {self.message}"
            if self.line
            else f"{self.path}: {self.message}"
        )


@dataclass
class Section:
    """One collection's records as read from a file; ``records`` streams the record lines,
    ``batches`` the same lines in the lists they were read in (a reader takes one or the
    other)."""

    header: Header
    path: str
    first_line: int
    records: Iterator[bytes] = field(repr=False)
    batches: Iterator[list[bytes]] = field(repr=False)


def checked_document(line: bytes) -> JsonDoc | str:
    """A record line's document, checked deeply (valid JSON, every value its type's, storable,
    written the way dbsync writes it), or what is wrong with it. Its hash is checked apart."""
    body = line_body(line)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return f"the document is not valid JSON ({error})"
    if not isinstance(doc, dict):
        return "the document is not a JSON object"
    try:
        decoded = extjson.from_json_value(doc)
        canonical = extjson.encode_document(decoded) if isinstance(decoded, dict) else b""
    except InvalidInput as error:
        return f"a value lies about its type: {error.message}"
    try:
        extjson.check_storable(decoded)
    except InvalidInput as error:
        return f"no store can hold this document: {error.message}"
    if canonical != body and extjson.written_before_escape(decoded) != body:
        return "the document is not written the way dbsync writes it (was it hand-edited?)"
    return doc


def _part_problem(
    doc: JsonDoc, key: SortKey, fields: Sequence[str], part: tuple[int, int]
) -> str | None:
    if part_of(key, part[1]) == part[0]:
        return None
    return f"{describe_key(doc, fields)} belongs in part {part_of(key, part[1])}, not {part[0]}"


class _Checker:
    """Checks the lines of one record stream; ``deep`` adds types, canonical form and order."""

    def __init__(self, header: Header, header_line: bytes, deep: bool) -> None:
        self.fields = header.rules.key
        self.part = header.part
        self.digest = Digest(header_line)
        self.deep = deep
        self.previous: tuple[SortKey, int, JsonDoc] | None = None

    def check(self, line: bytes, number: int) -> str | None:
        self.digest.add(line)
        if len(line) > MAX_LINE_BYTES:
            return f"the line is longer than {MAX_LINE_BYTES} bytes: not a snapshot"
        problem = _structure_problem(line)
        if problem is None and self.deep:
            problem = self.deep_problem(line, number)
        return problem

    def deep_problem(self, line: bytes, number: int) -> str | None:
        doc = checked_document(line)
        if isinstance(doc, str):
            return doc
        return self._order_problem(doc, number)

    def _order_problem(self, doc: JsonDoc, number: int) -> str | None:
        key = sort_key(doc, self.fields)
        if self.part is not None and (problem := _part_problem(doc, key, self.fields, self.part)):
            return problem
        previous, self.previous = self.previous, (key, number, doc)
        if previous is None or previous[0] < key:
            return None
        shown = describe_key(doc, self.fields)  # only now: most records never need it
        if previous[0] == key:
            return f"duplicate key {shown} (also on line {previous[1]})"
        before = describe_key(previous[2], self.fields)
        return f"out of order: {shown} sorts before {before} on line {previous[1]}"

    def trailer_problem(self, line: bytes) -> str | None:
        if not line.endswith(b"\n"):
            return "the trailer is cut short: the file was truncated"
        value = _parse_json_line(line)
        if not isinstance(value, dict) or set(value) != {"end", "count", "digest"}:
            return "the trailer is damaged"
        if value["count"] != self.digest.count:
            return (
                f"the trailer counts {value['count']} records but the section holds "
                f"{self.digest.count}: a record line was removed or added"
            )
        if value["digest"] != self.digest.hexdigest():
            return "the records do not match the trailer's digest: lines were reordered or replaced"
        if line != self.digest.trailer():
            return "the trailer is not in canonical form: it was edited"
        return None


class ChangedLineChecks:
    """The deep checks of record streams walked together, for a merge that decodes only what
    changed (the merge driver; ``core.merge.align`` walks the streams).

    Every line's shape and hash are checked as it is read (``check_sections``, not deep). On
    top of that, a line that is not the same on every side is checked here as ``verify``
    checks it (``changed``: types, canonical form, part), and so is the order of every pair of
    neighbouring lines of one side of which one changed (``changed``, ``same_after_changes``):
    all that the walk's alignment relies on. A line the same on every side is passed on as
    bytes, unread (the walk only notes it as ``last_same``): the merge changes nothing about
    it, and whatever reads the result into a database checks it there.
    """

    def __init__(self, header: Header, sides: int) -> None:
        self.fields, self.part = header.rules.key, header.part
        self.last_same: bytes | None = None
        """The last line found the same on every side."""
        self.pending = False
        """Lines changed since ``last_same``: the next same line's order is checked."""
        self._changed: list[SortKey | None] = [None] * sides
        self._same_key: tuple[bytes | None, SortKey | None] = (None, None)
        self._recent: list[tuple[bytes, SortKey | str]] = []
        """The last two lines ``changed`` decoded, each with its key or its problem: in a row
        that one side changed, the other sides hold the same line, decoded once."""

    def same_after_changes(self, line: bytes) -> str | None:
        """A line the same on every side, after changed ones: it must sort after each of them."""
        self.last_same, self.pending = line, False
        key = self._key_of_same()
        changed, self._changed = self._changed, [None] * len(self._changed)
        if any(before is not None and not before < key for before in changed):
            return "out of order, or a key that appears twice, next to a changed record"
        return None

    def changed(self, side: int, line: bytes) -> str | None:
        """A line of one side that is not the same on every side: checked deeply, and after the
        line before it on its side."""
        key = next((known for seen, known in self._recent if seen == line), None)
        if key is None:
            key = self._checked_key(line)
            self._recent = [self._recent[-1], (line, key)] if self._recent else [(line, key)]
        if isinstance(key, str):
            return key
        before = self._changed[side]
        if before is None and self.last_same is not None:
            before = self._key_of_same()
        self._changed[side], self.pending = key, True
        if before is not None and not before < key:
            shown = describe_key(line_document(line), self.fields)
            return f"{shown} is out of order, or its key appears twice"
        return None

    def _checked_key(self, line: bytes) -> SortKey | str:
        """A changed line's key, once checked deeply (and in its part), or its problem."""
        doc = checked_document(line)
        if isinstance(doc, str):
            return doc
        key = sort_key(doc, self.fields)
        if self.part is not None and (problem := _part_problem(doc, key, self.fields, self.part)):
            return problem
        return key

    def _key_of_same(self) -> SortKey:
        line, key = self._same_key
        if line is not self.last_same or key is None:
            assert self.last_same is not None
            key = line_sort_key(self.last_same, self.fields)
            self._same_key = (self.last_same, key)
        return key


def check_sections(
    path: str,
    batches: Iterable[list[bytes]],
    *,
    deep: bool,
    on_problem: Callable[[Problem], None],
    hashes: bool = True,
) -> Iterator[Section]:
    """Stream the sections of a file's lines, given in batches (``read_line_batches``; ``path``
    names the file), reporting every problem.

    A line longer than ``MAX_LINE_BYTES`` may come cut to that length: it is reported so.
    ``hashes=False`` leaves the test of each usual record line's hash against its body to the
    caller (``hashes_hold``; its shape, its length and the trailer's digest of the hashes it
    states are still checked here): a merge of versions whose lines are mostly the same on
    every side tests each such line once, not once per side.
    """
    lines = _Lines(batches)
    first = lines.next_line()
    if first is None:
        on_problem(Problem(path, None, "the file is empty: not a dbsync snapshot"))
        return
    pending: tuple[int, bytes] | None = first
    while pending is not None:
        number, line = pending
        header = parse_header(line)
        if isinstance(header, str):
            on_problem(Problem(path, number, header))
            return
        checker = _Checker(header, line, deep)
        ending: list[tuple[int, bytes] | None] = []
        batches = _section_batches(path, lines, checker, on_problem, ending, hashes)
        yield Section(header, path, number, chain.from_iterable(batches), batches)
        for _ in batches:  # the consumer may stop early; the section is still checked
            pass
        pending = ending[0] if ending else None


class _Lines:
    """A file's lines in the batches they were read in, numbered from 1 as they are taken."""

    def __init__(self, batches: Iterable[list[bytes]]) -> None:
        self._batches = iter(batches)
        self._back: list[bytes] = []
        self.number = 0
        """The number of the last line taken."""

    def batch(self) -> list[bytes] | None:
        """The next lines not taken yet (None at the end); the caller counts them."""
        if self._back:
            batch, self._back = self._back, []
            return batch
        return next(self._batches, None)

    def give_back(self, lines: list[bytes]) -> None:
        """Lines of the last batch that were not taken: the next ``batch`` starts with them."""
        self._back = lines

    def next_line(self) -> tuple[int, bytes] | None:
        batch = self.batch()
        while batch is not None and not batch:
            batch = self.batch()
        if batch is None:
            return None
        self.give_back(batch[1:])
        self.number += 1
        return self.number, batch[0]


_starts, _middles, _ends = (
    operator.itemgetter(slice(0, 6)),
    operator.itemgetter(slice(22, _BODY_START)),
    operator.itemgetter(slice(-2, None)),
)
_bodies = operator.itemgetter(slice(_BODY_START, -2))


def _all_records(batch: list[bytes], hashes: bool) -> bytes | None:
    """The hashes of a batch's lines, joined, when every line passes what ``_section_batches``
    tests of a usual line (its shape, its length, its hash its body's, unless ``hashes`` is
    False); else None. The same tests over the whole batch, each a ``map`` in C: no Python
    step per line."""
    if (
        set(map(_starts, batch)) != {_RECORD_PREFIX}
        or set(map(_middles, batch)) != {_RECORD_MIDDLE}
        or set(map(_ends, batch)) != {_END}
        or max(map(len, batch)) > MAX_LINE_BYTES
    ):
        return None
    stated = b"".join(map(line_hash_bytes, batch))
    if hashes and _body_hashes(batch) != stated:
        return None
    return stated


def hashes_hold(lines: list[bytes]) -> bool:
    """Whether the hash each record line states is its body's (lines whose shape was checked,
    as ``check_sections`` with ``hashes=False`` gives them), tested over the list at once."""
    return _body_hashes(lines) == b"".join(map(line_hash_bytes, lines))


def _body_hashes(lines: list[bytes]) -> bytes:
    """The hash of each record line's body, joined as the lines state theirs."""
    return "".join(map(_hex_hash, map(_bodies, lines))).encode()


def _section_batches(
    path: str,
    lines: _Lines,
    checker: _Checker,
    on_problem: Callable[[Problem], None],
    ending: list[tuple[int, bytes] | None],
    hashes: bool = True,
) -> Iterator[list[bytes]]:
    """A section's record lines, in lists, each line checked (shape and hash; deeply when
    ``checker.deep``), up to its trailer (checked against the digest). A batch of usual lines
    is checked at once (``_all_records``) and passed on as it is; one holding anything else,
    the trailer included, line by line, which names the problem (the lines before it in the
    batch come after the problem is reported)."""
    last = lines.number
    digest, deep = checker.digest, checker.deep
    hex_hash, limit, start = _hex_hash, MAX_LINE_BYTES, _BODY_START
    while (batch := lines.batch()) is not None:
        if not deep and (stated := _all_records(batch, hashes)) is not None:
            digest.hasher.update(stated)
            digest.count += len(batch)
            lines.number += len(batch)
            last = lines.number
            yield batch
            continue
        good: list[bytes] = []
        for index, line in enumerate(batch):
            lines.number += 1
            number = last = lines.number
            # The usual line, tested inline (a call per line costs more than the test): the
            # shape of a record line and its hash (unless the caller tests it), which is then
            # 16 lowercase hex digits by construction. Anything else goes the long way, which
            # names the problem.
            if (
                line[-2:] == b"}\n"
                and line[22:start] == b'","d":'
                and line[:6] == b'{"h":"'
                and len(line) <= limit
                and (not hashes or hex_hash(line[start:-2]).encode() == line[6:22])
            ):
                digest.add(line)
                if not deep:
                    good.append(line)
                    continue
                problem = checker.deep_problem(line, number)
            elif _is_trailer(line):
                problem = checker.trailer_problem(line)
                if problem:
                    on_problem(Problem(path, number, problem))
                if good:
                    yield good
                lines.give_back(batch[index + 1 :])
                ending.append(_after_trailer(path, lines, on_problem))
                return
            else:
                problem = checker.check(line, number)
            if problem:
                on_problem(Problem(path, number, problem))
            else:
                good.append(line)
        if good:
            yield good
    on_problem(
        Problem(
            path,
            last or None,
            "the file ends without its trailer line: it was cut short",
        )
    )
    ending.append(None)


def _after_trailer(
    path: str, lines: _Lines, on_problem: Callable[[Problem], None]
) -> tuple[int, bytes] | None:
    nxt = lines.next_line()
    if nxt is not None and not nxt[1].startswith(b'{"format":'):
        on_problem(Problem(path, nxt[0], "unexpected line after the trailer"))
        return None
    return nxt
