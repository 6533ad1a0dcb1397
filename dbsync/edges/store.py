"""The store contract: what every store is and what crosses its boundary, with no store in it.

Everything else talks to a ``Store``. Documents cross this boundary as pymongo decodes them
(``dict`` in field order; Int32 as ``int``, Int64 as ``bson.Int64``, binary subtype 0 as
``bytes``...), never as Extended JSON.

The two stores implement it in their own modules, ``dbsync.edges.embedded`` (montydb's SQLite
files) and ``dbsync.edges.mongo`` (pymongo), and ``dbsync.edges.stores.open_store`` picks one
from a URI. This module imports neither, so that what only needs the contract (a merge's
compare-and-set ``Change``, the ``_id`` helpers) loads no store. Here too: the compare-and-set
step both stores share (``settle``), and the ``RetryPolicy`` ``open_store`` passes to MongoDB
(importable without pymongo).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import bson
from bson import json_util
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import InvalidDocument

from dbsync.errors import InvalidInput

Document = dict[str, Any]
T = TypeVar("T")

STORE_CODEC_OPTIONS: CodecOptions[Document] = CodecOptions(
    document_class=dict, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
"""How raw BSON read from either store becomes a ``Document`` (``decode_raw``), and the options
both clients are opened with. ``DATETIME_AUTO``: a date past year 9999 (or before year 1), which
BSON holds and ``datetime`` cannot, comes back as a ``DatetimeMS`` instead of failing the read."""

BATCH_SIZE = 1000
"""Documents or operations per round trip: well under MongoDB's 100,000-op and 48 MB limits."""


MONGODB_SCHEMES = ("mongodb://", "mongodb+srv://")
EMBEDDED_SCHEME = "embedded://"
ACCEPTED_URIS = (
    "use mongodb://HOST[:PORT][/?OPTIONS], mongodb+srv://CLUSTER[/?OPTIONS] "
    "or embedded:///ABSOLUTE/PATH"
)


@dataclass(frozen=True)
class WriteCounts:
    """What ``Store.apply`` wrote: documents inserted or replaced, and documents deleted.

    ``inserted`` says how many of the upserts were new (the rest replaced a document); it is
    left out of comparisons, which are about what was written.
    """

    upserted: int
    deleted: int
    inserted: int = field(default=0, compare=False)

    @property
    def replaced(self) -> int:
        return self.upserted - self.inserted


class Store(Protocol):
    """A database holding named collections of documents, addressed by ``_id``."""

    def collection_names(self) -> list[str]:
        """Names of the collections that exist, sorted; system collections left out."""
        ...

    def count(self, collection: str) -> int: ...

    def size_bytes(self, collection: str) -> int:
        """Approximate data size of the collection in bytes (BSON sizes)."""
        ...

    def iter_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[Document]:
        """Every document of the collection, streamed in batches (sorted by ``_id`` if cheap)."""
        ...

    def iter_raw_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[bytes]:
        """Every document of the collection as its raw BSON bytes, streamed, in no set order.

        Nothing is decoded: a caller that only needs to know whether a document changed can
        hash these bytes, and decode (``decode_raw``) only the ones that did.
        """
        ...

    def find_by_ids(self, collection: str, ids: Sequence[Any]) -> list[Document]:
        """The documents whose ``_id`` is in ``ids`` (missing ones are left out)."""
        ...

    def apply(
        self, collection: str, upserts: Sequence[Document], delete_ids: Sequence[Any]
    ) -> WriteCounts:
        """Delete ``delete_ids``, then insert or replace each of ``upserts`` by its ``_id``,
        whatever the records hold: a blind write, which none of dbsync's runs makes (they
        write by compare-and-set, ``apply_changes``); it stands in for an application in the
        tests and tools.

        Bulk writes; one transaction where the server supports it. Raises on any failure.
        """
        ...

    atomic_changes: bool
    """Whether ``apply_changes`` makes all of a collection's changes or none (a failure or a
    kill leaves nothing of them), so that a failed apply needs no undo."""

    def apply_changes(
        self, collection: str, changes: Iterable[Change], redecide: Redecide
    ) -> ChangeCounts:
        """Make each change only if its record still holds ``change.expected`` (compare-and-set);
        a record the application changed meanwhile goes through ``redecide`` with its new
        version. One transaction where the store has them; raises on failure."""
        ...

    def insert_many(self, collection: str, documents: Iterable[Document]) -> int:
        """Insert documents; a duplicate ``_id`` raises ``InvalidInput`` naming it."""
        ...

    def replace_collection(self, collection: str, documents: Iterable[Document]) -> int:
        """Make the collection hold exactly ``documents`` (used to restore backups)."""
        ...

    def ping(self) -> None:
        """Raise ``DatabaseUnreachable`` if the database cannot be reached."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc_info: object) -> None: ...


STREAM_MARK = "stream:"
"""A fingerprint that is a change stream's resume token (MongoDB replica sets): the database did
not change since it was taken if the stream has no event after it."""


class ChangeFeed(Protocol):
    """What a store with change streams (a MongoDB replica set) can tell without reading the
    collection: which documents changed since a resume token, and those documents alone."""

    def changed_since(self, collection: str, token: str) -> bool | None:
        """Whether anything changed in the collection after ``token`` (None: cannot tell)."""
        ...

    def changed_ids(self, collection: str, token: str, limit: int) -> list[bytes] | None:
        """The ``_id`` (``{"": _id}`` as BSON) of every document inserted, changed or deleted
        after ``token``; None when the stream cannot tell (the token is gone from the
        server's history, the collection was dropped or renamed) or more than ``limit``
        changed."""
        ...

    def raw_by_ids(self, collection: str, ids: Sequence[Any]) -> list[bytes]:
        """The stored BSON of the documents whose ``_id`` is in ``ids`` (absent ones left out)."""
        ...


def change_feed(store: Store) -> ChangeFeed | None:
    """The store's change feed, if it has one (stores without one are still stores)."""
    if all(hasattr(store, name) for name in ("changed_since", "changed_ids", "raw_by_ids")):
        return store  # type: ignore[return-value]
    return None


# --- Retries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry a transient database error.

    ``sleep``, ``clock`` and ``rng`` are injectable so that tests drive the policy without
    waiting.
    """

    budget_seconds: float = 30.0
    initial_delay: float = 0.1
    max_delay: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random
    announce: Callable[[str], None] | None = None
    """Told once, at the first retry of a kind of failure, what is retried and for how long,
    so that a wait is never silent."""

    def __post_init__(self) -> None:
        if self.budget_seconds < 0 or self.initial_delay <= 0 or self.max_delay < 0:
            raise ValueError(f"invalid retry policy: {self}")


def backoff_delay(policy: RetryPolicy, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0-based): full jitter.

    A random wait between 0 and the exponential ceiling keeps assets that lost the same server
    from coming back in lock-step.
    """
    ceiling = min(policy.max_delay, policy.initial_delay * 2.0 ** min(attempt, 62))
    return policy.rng() * ceiling


def short_reason(text: str, limit: int = 300) -> str:
    """The driver's reason without pymongo's topology dump, which can run to kilobytes."""
    text = text.partition(", Topology Description:")[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Pure helpers shared by both stores ------------------------------------------------------


def id_key(value: Any) -> Hashable:
    """A hashable stand-in for an ``_id``, equal for two ``_id`` values MongoDB holds equal.

    MongoDB compares numbers by value across Int32, Int64 and Double (``5``, ``Int64(5)`` and
    ``5.0`` name one document); booleans are not numbers; a str (compared by code points, the
    order of its UTF-8 bytes) and an ObjectId stand for themselves, the cheap common case;
    everything else is compared here by type and BSON bytes (so a sub-document ``_id``
    holding ``1`` differs from one holding ``1.0``, and Decimal128 differs from the equal
    Double: both are rare enough to leave).
    """
    if type(value) is str or type(value) is bson.ObjectId:  # the common cases, kept cheap
        return value
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", "nan") if value != value else ("number", value)
    return ("bson", bson.encode({"": value}))


def describe_id(value: Any) -> str:
    """An ``_id`` as relaxed Extended JSON, the form a user can paste into a query."""
    return json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS)


def document_id(document: Mapping[str, Any]) -> Any:
    """The ``_id`` of a document to upsert; one without ``_id`` cannot be addressed."""
    if "_id" not in document:
        shown = short_reason(describe_id(dict(document)), limit=120)
        raise InvalidInput(f"a document to write has no _id: {shown}")
    return document["_id"]


def in_requested_order(ids: Sequence[Any], documents: Iterable[Document]) -> list[Document]:
    """``documents`` in the order of ``ids``, each once, missing ones left out.

    Servers return ``$in`` matches in any order; a fixed order keeps callers deterministic.
    """
    by_key = {id_key(document["_id"]): document for document in documents}
    wanted = dict.fromkeys(id_key(value) for value in ids)
    return [by_key[key] for key in wanted if key in by_key]


def take_until_duplicate(
    batch: Sequence[Document], seen: set[Hashable]
) -> tuple[list[Document], Document | None]:
    """The documents of ``batch`` before the first whose ``_id`` is in ``seen``, and that one.

    Adds the accepted ``_id`` keys to ``seen``; gives a document without ``_id`` a new ObjectId
    first, as MongoDB would.
    """
    accepted: list[Document] = []
    for document in batch:
        key = id_key(document.setdefault("_id", bson.ObjectId()))
        if key in seen:
            return accepted, document
        seen.add(key)
        accepted.append(document)
    return accepted, None


def duplicate_id_error(
    collection: str, document_id: Any, inserted: int, *, note: str = ""
) -> InvalidInput:
    return InvalidInput(
        f"duplicate _id {describe_id(document_id)} in collection {collection!r}: "
        f"{inserted} documents were inserted before it{note}",
        hint="the collection already holds this _id, or the input repeats it",
    )


def decode_raw(raw: bytes) -> Document:
    """A document read as raw BSON (``iter_raw_documents``), decoded as the stores decode."""
    document: Document | bson.DBRef = bson.decode(raw, codec_options=STORE_CODEC_OPTIONS)
    if isinstance(document, bson.DBRef):  # pymongo reads a top level with $ref and $id so
        return dict(document.as_doc())
    return document


def encoded_size(documents: Iterable[Document]) -> int:
    """The total BSON size of ``documents``: what MongoDB counts as a collection's data size."""
    return sum(len(bson.encode(document)) for document in documents)


def same_id(left: Any, right: Any) -> bool:
    """Whether two ``_id`` values are the very same BSON value (type included)."""
    return bson.encode({"": left}) == bson.encode({"": right})


def chunks(items: Iterable[T], size: int = BATCH_SIZE) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size``, never an empty one (drivers refuse those)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def total_counts(counts: Iterable[WriteCounts]) -> WriteCounts:
    counted = list(counts)
    return WriteCounts(
        upserted=sum(count.upserted for count in counted),
        deleted=sum(count.deleted for count in counted),
        inserted=sum(count.inserted for count in counted),
    )


# --- Compare-and-set, as both stores make it -------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One record a merge or a restore writes, and what it read there (compare-and-set).

    ``expected`` is the record's BSON as read (None: there was no record); ``document`` what
    the record becomes (None: it is deleted). ``line`` is free for the caller (the merge keeps
    the snapshot line it decided, to decide again).
    """

    id: Any
    expected: bytes | None
    document: Document | None
    line: bytes | None = None


@dataclass(frozen=True)
class Redecision:
    """What a record the application changed meanwhile becomes: ``change`` to make instead
    (expecting the record's new version), or None to leave the record as the application
    wrote it; ``conflict``, the conflict this decision settled, which the store reports once
    the decision holds (a transaction retried after a write conflict decides again, and its
    first decisions are forgotten)."""

    change: Change | None
    conflict: Any = None


Redecide = Callable[[Change, "Document | None"], Redecision]
"""Called for a change whose record no longer holds ``expected``, with what it holds now."""

KEPT_LISTED = 20
"""Records left as the application wrote them that ``ChangeCounts.kept`` names (the rest are
only counted): enough for a message, bounded whatever the run's size."""


@dataclass
class ChangeCounts:
    """What ``apply_changes`` did: records written and deleted, and the ones decided again
    because the application changed them after the merge read them."""

    written: int = 0
    deleted: int = 0
    redecided: int = 0
    left: int = 0  # decided again, and the application's version kept
    conflicts: list[Any] = field(default_factory=list)
    """The conflicts settled by the decisions made again, in the order they were made."""
    kept: list[Any] = field(default_factory=list)
    """The ``_id`` of the first ``KEPT_LISTED`` records left as the application wrote them."""

    def add(self, other: ChangeCounts) -> None:
        self.written += other.written
        self.deleted += other.deleted
        self.redecided += other.redecided
        self.left += other.left
        self.conflicts += other.conflicts
        self.kept += other.kept[: max(0, KEPT_LISTED - len(self.kept))]

    def leave(self, record_id: Any) -> None:
        """A record decided again is left as the application wrote it."""
        self.left += 1
        if len(self.kept) < KEPT_LISTED:
            self.kept.append(record_id)


def settle(
    change: Change, now: bytes | None, redecide: Redecide, counts: ChangeCounts
) -> tuple[Change | None, Any]:
    """What to write for ``change`` when its record holds ``now`` (its stored BSON, None:
    absent), and the conflict that settled it, if any; counted in ``counts``.

    The change itself while the record is still what was read; nothing when the record
    already holds what the change writes; else what ``redecide`` makes of the record's new
    version, expecting those very bytes (the application changed it meanwhile)."""
    if now == change.expected:
        return change, None
    if now == (None if change.document is None else bson.encode(change.document)):
        return None, None  # already so: nothing to write, nothing overwritten
    counts.redecided += 1
    again = redecide(change, None if now is None else decode_raw(now))
    if again.change is None:
        counts.leave(change.id)
        return None, again.conflict
    return dataclasses.replace(again.change, expected=now), again.conflict


def encode_document(document: Document) -> bytes:
    """A document's BSON, failing as ``InvalidInput`` (nothing is written) when BSON cannot
    hold it. Field names with ``.`` or a leading ``$`` are stored, as MongoDB 5 stores them."""
    try:
        return bson.encode(document)
    except (InvalidDocument, TypeError, OverflowError) as error:
        raise InvalidInput(
            f"document {describe_id(document.get('_id'))} cannot be stored: {error}"
        ) from None
