"""The merge engine: decide what each record becomes, one key at a time. Pure.

Two phases, as in nbdime: ``decide`` walks key-sorted record streams (base, ours, theirs) in one
streaming merge-join and yields one ``Decision`` per key; applying decisions is someone else's
job (``commands.merge`` for a database, ``write_section`` for a file).

* Three-way (a base is given, and it is a true common ancestor): a record changed on one side
  only takes that change, deletions included; changed on both sides differently, the conflict
  rule decides (``conflict.resolve``); deleted on one side and changed on the other, the change
  is kept (deleting it would lose a version).
* Two-way (no base): the union under the conflict rule; nothing is deleted, because without an
  ancestor a missing record cannot be told from a deleted one.

Lines that are byte-identical on every side are passed through without being parsed: the common
case of a sync costs a comparison per record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import islice
from typing import Any, Protocol

from dbsync.core.conflict import resolve
from dbsync.core.ordering import SortKey, key_values
from dbsync.core.rules import Rules
from dbsync.core.snapshot import line_body, line_document, line_sort_key
from dbsync.errors import InvalidInput


class Outcome(str, Enum):
    COMMON = "common"  # the same on both sides
    LOCAL_ONLY = "local_only"  # only ours has it (added here, or two-way)
    REMOTE_ONLY = "remote_only"  # only theirs has it: added
    UPDATED = "updated"  # three-way: only theirs changed it
    KEPT_LOCAL = "kept_local"  # three-way: only ours changed it
    DELETED = "deleted"  # three-way: theirs deleted it, ours had not changed it
    DELETED_LOCALLY = "deleted_locally"  # three-way: ours deleted it, theirs had not changed it
    CONFLICT = "conflict"  # both changed it differently; the rule decided


MODIFIED_BEATS_DELETED = "changed beats deleted"
OURS, THEIRS = "ours", "theirs"
"""The sides of a merge: ours is this asset's (its database, or its commit in the merge
driver), theirs what came from another asset."""


@dataclass(slots=True)
class Decision:
    """What one key becomes. ``result`` is the record line to keep, or None for no record."""

    outcome: Outcome
    ours: bytes | None
    theirs: bytes | None
    result: bytes | None
    rule: str | None = None
    loser: bytes | None = None

    @property
    def changes_ours(self) -> bool:
        return self.result != self.ours


RUN_LINES = 2048
RUN_BYTES = 1 << 20
READ_STEP = 8
"""``line_batches`` gives lists of up to ``RUN_LINES`` lines or ``RUN_BYTES`` bytes (passed by
at most ``READ_STEP`` lines: the bound holds for documents of any size)."""


def line_batches(lines: Iterable[bytes]) -> Iterator[list[bytes]]:
    """Lines in lists of a bounded size (``RUN_LINES``, ``RUN_BYTES``): how ``align_runs``
    reads ahead in a stream of lines."""
    lines = iter(lines)
    while True:
        batch: list[bytes] = []
        held = 0
        while len(batch) < RUN_LINES and held < RUN_BYTES:
            more = list(islice(lines, READ_STEP))
            if not more:
                break
            batch += more
            held += sum(map(len, more))
        if not batch:
            return
        yield batch


class _Ahead:
    """One sorted stream read ahead a list at a time, for ``align_batches``: ``buffer[at:]``
    are its next lines; ``previous`` the last key computed of a line it has passed (the order
    check), and ``_key`` the key of the next line, once computed."""

    __slots__ = ("_batches", "buffer", "at", "previous", "_key")

    def __init__(self, batches: Iterable[list[bytes]]) -> None:
        self._batches = iter(batches)
        self.buffer: list[bytes] = []
        self.at = 0
        self.previous: SortKey | None = None
        self._key: SortKey | None = None

    def left(self) -> int:
        """How many lines are read ahead (none only at the end of the stream)."""
        left = len(self.buffer) - self.at
        while left == 0:
            buffer = next(self._batches, None)
            if buffer is None:
                return 0
            self.buffer, self.at = buffer, 0
            left = len(buffer)
        return left

    def key(self, fields: Sequence[str]) -> SortKey:
        """The key of the next line, which must sort after the last one computed."""
        if self._key is None:
            key = line_sort_key(self.buffer[self.at], fields)
            if self.previous is not None and not self.previous < key:
                raise InvalidInput("records are not sorted by key (or a key appears twice)")
            self._key = key
        return self._key

    def take(self) -> bytes:
        """The next line, passed (its key, if computed, becomes ``previous``)."""
        line = self.buffer[self.at]
        self.skip(1)
        return line

    def skip(self, count: int) -> None:
        """Pass the next ``count`` lines; only the first can have had its key computed."""
        if self._key is not None:
            self.previous, self._key = self._key, None
        self.at += count


def _same_for(streams: list[_Ahead], start: int, stop: int) -> bool:
    """Whether the lines ``start:stop`` ahead are the same on every stream."""
    first = streams[0]
    lines = first.buffer[first.at + start : first.at + stop]
    return all(s.buffer[s.at + start : s.at + stop] == lines for s in streams[1:])


def _same_run(streams: list[_Ahead]) -> int:
    """How many of the next lines are the same on every stream: galloping over the lines read
    ahead (a comparison of list slices, in C), in steps that double while they hold."""
    ahead = min(stream.left() for stream in streams)
    same, step = 0, 1
    while same < ahead:
        step = min(step, ahead - same)
        if _same_for(streams, same, same + step):
            same += step
            step *= 2
        elif step == 1:
            break
        else:
            step //= 2
    return same


def align(
    streams: Sequence[Iterable[bytes]], fields: Sequence[str]
) -> Iterator[tuple[bytes | None, ...]]:
    """Walk key-sorted streams together, yielding one tuple of lines (None = absent) per key.

    The common case — the same line at the head of every stream — is passed through without
    computing a key: that is what makes syncing a mostly unchanged collection cheap
    (``align_runs``, whose runs this gives one row per line).
    """
    width = len(streams)
    for item in align_runs(streams, fields):
        if isinstance(item, list):
            for line in item:
                yield (line,) * width
        else:
            yield item


def align_runs(
    streams: Sequence[Iterable[bytes]], fields: Sequence[str]
) -> Iterator[list[bytes] | tuple[bytes | None, ...]]:
    """``align``, with the rows the same on every stream given as runs: a list of the lines
    (each a row whose lines are all that one), found by comparing the streams' lines read
    ahead in C; every other row as ``align`` gives it, a tuple (None = absent). Keys are
    computed, and their order checked, only for those rows, as ``align`` does."""
    return align_batches([line_batches(stream) for stream in streams], fields)


def align_batches(
    streams: Sequence[Iterable[list[bytes]]], fields: Sequence[str]
) -> Iterator[list[bytes] | tuple[bytes | None, ...]]:
    """``align_runs`` of streams given as lists of lines (a reader's batches,
    ``Section.batches``): each stream reads ahead one of its lists at a time."""
    ahead = [_Ahead(stream) for stream in streams]
    while True:
        run = _same_run(ahead)
        if run:
            first = ahead[0]
            lines = first.buffer[first.at : first.at + run]
            for stream in ahead:
                stream.skip(run)
            yield lines
            continue
        present = [stream for stream in ahead if stream.left()]
        if not present:
            return
        smallest = min(stream.key(fields) for stream in present)
        yield tuple(
            stream.take() if stream.left() and stream.key(fields) == smallest else None
            for stream in ahead
        )


def _both_changed(ours: bytes | None, theirs: bytes | None, rules: Rules) -> Decision:
    if ours is None or theirs is None:
        kept = ours if ours is not None else theirs
        return Decision(Outcome.CONFLICT, ours, theirs, kept, MODIFIED_BEATS_DELETED, None)
    resolution = resolve(ours, theirs, rules)
    return Decision(
        Outcome.CONFLICT, ours, theirs, resolution.line, resolution.rule, resolution.loser
    )


def decide_three_way(
    base: bytes | None, ours: bytes | None, theirs: bytes | None, rules: Rules
) -> Decision | None:
    """The decision for one key given its common ancestor; None when no side has the record."""
    if ours == theirs:
        return None if ours is None else Decision(Outcome.COMMON, ours, theirs, ours)
    if base == ours:  # only theirs changed
        if theirs is None:
            return Decision(Outcome.DELETED, ours, theirs, None)
        outcome = Outcome.REMOTE_ONLY if ours is None else Outcome.UPDATED
        return Decision(outcome, ours, theirs, theirs)
    if base == theirs:  # only ours changed
        if ours is None:
            return Decision(Outcome.DELETED_LOCALLY, ours, theirs, None)
        outcome = Outcome.LOCAL_ONLY if theirs is None else Outcome.KEPT_LOCAL
        return Decision(outcome, ours, theirs, ours)
    return _both_changed(ours, theirs, rules)


def decide_two_way(ours: bytes | None, theirs: bytes | None, rules: Rules) -> Decision:
    """The decision for one key without an ancestor: a union, nothing deleted."""
    if ours == theirs:
        return Decision(Outcome.COMMON, ours, theirs, ours)
    if theirs is None:
        return Decision(Outcome.LOCAL_ONLY, ours, theirs, ours)
    if ours is None:
        return Decision(Outcome.REMOTE_ONLY, ours, theirs, theirs)
    return _both_changed(ours, theirs, rules)


def decide(
    base: Iterable[bytes] | None,
    ours: Iterable[bytes],
    theirs: Iterable[bytes],
    rules: Rules,
) -> Iterator[Decision]:
    """One decision per key, in key order. Memory does not grow with the collection."""
    if base is None:
        for ours_line, theirs_line in align([ours, theirs], rules.key):
            yield decide_two_way(ours_line, theirs_line, rules)
        return
    for base_line, ours_line, theirs_line in align([base, ours, theirs], rules.key):
        decision = decide_three_way(base_line, ours_line, theirs_line, rules)
        if decision is not None:
            yield decision


class Conflicts(Protocol):
    """Where a merge keeps its conflict entries (``conflict_entry``): a list by default; a merge
    into the database spools them to a file (``dbsync.edges.conflict_spool``), since each entry
    holds two versions of a record whole. Consumers only append, count and iterate."""

    def append(self, entry: dict[str, Any], /) -> None: ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __len__(self) -> int: ...


@dataclass
class MergeCounts:
    """The figures of a merge report for one collection, and its conflicts."""

    local_only: int = 0
    remote_only: int = 0
    common: int = 0
    updated: int = 0
    kept_local: int = 0
    conflicts_resolved: int = 0
    deleted: int = 0
    deleted_locally: int = 0
    total: int = 0
    writes: int = 0
    conflicts: Conflicts = field(default_factory=list[dict[str, Any]])

    def add(self, decision: Decision, fields: Sequence[str]) -> None:
        outcome = decision.outcome
        if outcome is Outcome.COMMON:  # by far the most frequent: no attribute lookup by name
            self.common += 1
        elif outcome is Outcome.CONFLICT:
            self.conflicts_resolved += 1
            self.conflicts.append(conflict_entry(decision, fields))
        else:
            name = outcome.value
            setattr(self, name, getattr(self, name) + 1)
        self.total += decision.result is not None
        self.writes += decision.changes_ours


def conflict_entry(decision: Decision, fields: Sequence[str]) -> dict[str, Any]:
    """A conflict as the report shows it: the key, the kept version, the losing one whole."""
    sample = decision.result or decision.ours or decision.theirs
    assert sample is not None
    key = dict(zip(fields, key_values(line_document(sample), fields), strict=True))
    return {
        "key": key,
        "winner": _document(decision.result),
        "loser": _document(decision.loser),
        "rule": decision.rule,
        "lost": losing_side(decision),
    }


def losing_side(decision: Decision) -> str:
    """Whose version a conflict decided against: ``OURS`` or ``THEIRS`` (so that an asset
    whose own edits keep losing can be told, whichever rule decided)."""
    if decision.loser is None:  # changed beats deleted: the deletion lost
        return OURS if decision.ours is None else THEIRS
    return OURS if decision.loser == decision.ours else THEIRS


def _document(line: bytes | None) -> dict[str, Any] | None:
    return None if line is None else line_document(line)


def redecide(
    current: bytes | None, planned: bytes | None, rules: Rules
) -> tuple[bytes | None, Decision | None]:
    """A record the application changed after a merge read it, decided again: ``current`` is
    its line now (None: deleted meanwhile), ``planned`` the merge's result for it (None: the
    merge deleted it). Returns the line to write (None: leave the record as the application
    wrote it) and the conflict decided, if any.

    Changed beats deleted, whichever side deleted; otherwise the conflict rule decides, two-way,
    so that a newer edit of the application wins and an older one loses as it would have in the
    merge itself."""
    if planned is None:
        return None, None  # the merge deleted (or moved) it; the application changed it: kept
    if current is None:
        return planned, None  # deleted meanwhile: the merge's change wins
    decision = decide_two_way(current, planned, rules)
    conflict = decision if decision.outcome is Outcome.CONFLICT else None
    if decision.result is None or line_body(decision.result) == line_body(current):
        return None, conflict
    return decision.result, conflict


def fold_equal_keys(
    pairs: Iterable[tuple[SortKey, bytes]],
    rules: Rules,
    folded: Callable[[Decision], None] | None = None,
) -> Iterator[bytes]:
    """Key-sorted lines with each key once: the same key in two files (two part layouts met,
    say after git merged two assets' snapshots) is one record, and the conflict rule decides
    which version it keeps. ``folded`` is told every decision that drops a version, so that
    the losing version is reported and kept like any other."""
    current: tuple[SortKey, bytes] | None = None
    for key, line in pairs:
        if current is not None and key == current[0]:
            if line != current[1]:
                decision = _both_changed(current[1], line, rules)
                if folded is not None:
                    folded(decision)
                assert decision.result is not None
                current = (key, decision.result)
            continue
        if current is not None:
            yield current[1]
        current = (key, line)
    if current is not None:
        yield current[1]
