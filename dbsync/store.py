"""The only database access in dbsync: MongoDB through pymongo, and the embedded store.

Everything else talks to a ``Store``. Documents cross this boundary as pymongo decodes them
(``dict`` in field order; Int32 as ``int``, Int64 as ``bson.Int64``, binary subtype 0 as
``bytes``...), never as Extended JSON.

``open_store`` picks the implementation from the URI. Every MongoDB call goes through
``call_with_retries`` so that a stepping-down primary or a restarting ``mongod`` costs a pause, not
a failed merge; every message that can reach a user passes through ``scrub_secrets`` so that no
password is ever printed.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote_plus

import bson
import montydb
from bson import json_util
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument

from dbsync.errors import DatabaseUnreachable, InvalidInput, UsageError

Document = dict[str, Any]
T = TypeVar("T")

STORE_CODEC_OPTIONS: CodecOptions[Document] = CodecOptions(document_class=dict)
"""How raw BSON read from either store becomes a ``Document`` (``decode_raw``)."""

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
    """What ``Store.apply`` wrote: documents inserted or replaced, and documents deleted."""

    upserted: int
    deleted: int


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
        """Delete ``delete_ids``, then insert or replace each of ``upserts`` by its ``_id``.

        Bulk writes; one transaction where the server supports it. Raises on any failure,
        leaving recovery (restoring the backup) to the caller.
        """
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


# --- Opening a store -------------------------------------------------------------------------


def open_store(uri: str, database: str, *, retry: RetryPolicy | None = None) -> Store:
    """The store a URI names: MongoDB for ``mongodb://``/``mongodb+srv://``, else embedded.

    Nothing is contacted yet for MongoDB (pymongo connects lazily); call ``ping`` to find out
    whether the server is there.
    """
    validate_database_name(database)
    if uri.startswith(MONGODB_SCHEMES):
        from dbsync.mongo import open_mongo  # pymongo takes 0.3 s to import: only when needed

        return open_mongo(uri, database, retry or RetryPolicy())
    if uri.startswith(EMBEDDED_SCHEME):
        return EmbeddedStore(embedded_path(uri), database)
    raise UsageError(f"unsupported database URI {redact_uri(uri)!r}", hint=ACCEPTED_URIS)


def validate_database_name(name: str) -> None:
    """Refuse a name MongoDB would refuse, before it becomes a confusing server error."""
    hint = (
        'choose a name without / \\ . space " $ or NUL, of 1 to 63 bytes '
        "(--database or DBSYNC_DATABASE)"
    )
    if not name:
        raise UsageError("the database name is empty", hint=hint)
    forbidden = sorted(set(name) & set('/\\. "$\x00'))
    if forbidden:
        shown = ", ".join(repr(char) for char in forbidden)
        raise UsageError(f"the database name {name!r} contains {shown}", hint=hint)
    if len(name.encode()) > 63:
        raise UsageError(f"the database name {name!r} is longer than 63 bytes", hint=hint)


def embedded_path(uri: str) -> Path:
    """The directory of an ``embedded://PATH`` URI, which must be absolute.

    A relative path would depend on the directory dbsync happens to run in (git hooks run in
    the repository root, a user anywhere), so two runs could open two different stores.
    """
    path = Path(uri[len(EMBEDDED_SCHEME) :])
    if not path.is_absolute():
        raise UsageError(
            f"the embedded store path in {uri!r} is not absolute",
            hint="write embedded:///ABSOLUTE/PATH (three slashes on Linux and macOS)",
        )
    return path


# --- Keeping passwords out of messages -------------------------------------------------------


def redact_uri(uri: str) -> str:
    """The URI with its password replaced by ``***`` (the user name is kept, to help).

    The user info ends at the last ``@`` before the first ``/`` (pymongo's reading) or before
    the first ``?`` (a password holding an unescaped ``/``), whichever comes later: when the two
    readings differ, more is hidden rather than less.
    """
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return uri
    end = _userinfo_end(rest)
    user, colon, _password = rest[:end].partition(":")
    if end < 0 or not colon:
        return uri
    return f"{scheme}://{user}:***@{rest[end + 1 :]}"


def _userinfo_end(rest: str) -> int:
    first_slash = _find_or_end(rest, "/")
    first_query = _find_or_end(rest, "?")
    return max(rest.rfind("@", 0, first_slash), rest.rfind("@", 0, first_query))


def _find_or_end(text: str, char: str) -> int:
    index = text.find(char)
    return len(text) if index < 0 else index


def uri_secrets(uri: str) -> tuple[str, ...]:
    """The password of a URI as written and percent-decoded, longest first, for scrubbing.

    Even a short password is scrubbed: a garbled message is better than a leaked password.
    """
    _scheme, separator, rest = uri.partition("://")
    end = _userinfo_end(rest)
    _user, colon, password = rest[: max(end, 0)].partition(":")
    if not separator or end < 0 or not colon or not password:
        return ()
    return tuple(sorted({password, unquote_plus(password)}, key=len, reverse=True))


_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")


def scrub_secrets(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every URI redacted and every known secret replaced by ``***``.

    Driver messages name hosts and sometimes echo the URI; the literal replacement also catches
    a password that appears outside any URI.
    """
    text = _URI_IN_TEXT.sub(lambda match: redact_uri(match.group(0)), text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


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
    return bson.decode(raw, codec_options=STORE_CODEC_OPTIONS)


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
    )


# --- MongoDB ---------------------------------------------------------------------------------


# --- The embedded store (montydb) ------------------------------------------------------------

_MONTYDB_STORAGE_MARKER = ".monty.storage"
"""The file ``montydb.set_storage`` writes to record a repository's engine: its presence means
the directory is already a montydb repository, which must not be reconfigured."""


class EmbeddedStore:
    """An on-disk store without a server: montydb on SQLite, documents kept as BSON.

    montydb was chosen for BSON fidelity (every type comes back byte-identical, tested) and
    because it takes an ``_id`` of any type (mongita only takes ObjectId or str). It has no
    indexes and no ``bulk_write``: every query decodes and filters the whole collection in
    Python, ``$in`` costs one comparison per document per id, and an insert compares each new
    ``_id`` with every stored one. ``bench/embedded_store_choice.py`` measured, in seconds, on
    documents of 7 fields (10,000 documents and 100 ids; 20,000 and 143):

    ==============================================  =========  =========
    operation                                       10,000     20,000
    ==============================================  =========  =========
    one full scan, ``find({})``                     0.11       0.28
    the same sorted by ``_id``                      0.27       0.55
    ``find({"_id": {"$in": ids}})``                 1.9        5.4
    one scan filtered in Python by ``id_key``       0.09       0.33
    ``delete_one({"_id": x})``, each                0.06       0.11
    ``replace_one(..., upsert=True)``, each         0.14       0.28
    ``delete_many({"_id": {"$in": ids}})``          1.9        5.6
    ``insert_many`` of the ids into the full one    0.02       0.05
    drop, then one ``insert_many`` of everything    0.07       0.13
    ``apply``: half the ids replaced, half deleted  0.20       0.47
    ==============================================  =========  =========

    So every read by ``_id`` is one scan filtered in Python, and ``apply`` scans once, then
    either only inserts (when no present document is deleted or replaced) or rewrites the
    collection: drop, then one insert of what is kept and the upserts. The rewrite costs less
    than one ``delete_many`` of a single id (0.29 s at 20,000), whatever the number of changes.
    The price is a wider window: a crash during the rewrite leaves the collection partly
    written, where ``delete_many`` + ``insert_many`` would leave the replaced documents missing;
    neither is atomic in montydb, and in both cases the merge's backup is what restores it.
    Upserts are encoded before anything is dropped, so a bad document fails first.

    montydb's cursor holds a whole result in memory; ``batch_size`` has no effect here. The
    embedded store is for trying dbsync, the demo and tests, not for millions of documents.
    """

    def __init__(self, path: Path, database: str) -> None:
        self._path = path
        self._client = _open_montydb(path)
        self._db = self._client[database]

    def collection_names(self) -> list[str]:
        names = self._db.list_collection_names()
        return sorted({name for name in names if not name.startswith("system.")})

    def count(self, collection: str) -> int:
        return int(self._db[collection].count_documents({}))

    def size_bytes(self, collection: str) -> int:
        return encoded_size(self._scan(collection))

    def iter_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[Document]:
        """Documents in ``_id`` order (montydb sorts in BSON order; ``batch_size`` is moot)."""
        yield from self._db[collection].find({}, sort=[("_id", 1)])

    def iter_raw_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[bytes]:
        """The BSON montydb stored, read from its SQLite file in batches, never decoded."""
        path = self._path / self._db.name / f"{collection}.collection"
        if not path.is_file():
            return
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            cursor = connection.execute("SELECT v FROM documents")
            while rows := cursor.fetchmany(batch_size):
                for (raw,) in rows:
                    yield bytes(raw)
        finally:
            connection.close()

    def fingerprint(self, collection: str) -> str:
        """Figures of the collection's SQLite file that any write changes (through montydb's
        own client too), read without reading a document (montydb's count decodes them all):
        the file's size, modification time and change counter, and its WAL's size and header
        (a reader leaves an empty WAL behind: that counts as none)."""
        path = self._path / self._db.name / f"{collection}.collection"
        return (
            f"{_file_mark(path, 24, 28, with_time=True)},{_file_mark(Path(f'{path}-wal'), 0, 32)}"
        )

    def find_by_ids(self, collection: str, ids: Sequence[Any]) -> list[Document]:
        """One scan filtered in Python: 0.33 s, where ``$in`` takes 5.4 s (143 ids, 20,000 docs)."""
        wanted = {id_key(value) for value in ids}
        found = [doc for doc in self._scan(collection) if id_key(doc["_id"]) in wanted]
        return in_requested_order(ids, found)

    def apply(
        self, collection: str, upserts: Sequence[Document], delete_ids: Sequence[Any]
    ) -> WriteCounts:
        """One scan, then inserts only, or a rewrite when a present document must go."""
        plan = plan_embedded_apply(self._scan(collection), upserts, delete_ids)
        _check_encodable(plan.inserts)
        target = self._db[collection]
        if plan.rewrite:
            target.drop()
            _insert_into_montydb(target, plan.kept + plan.inserts)
        else:
            _insert_into_montydb(target, plan.inserts)
        return WriteCounts(upserted=len(upserts), deleted=plan.deleted)

    def insert_many(self, collection: str, documents: Iterable[Document]) -> int:
        """One insert of everything before the first duplicate ``_id``, then the error if any.

        Documents before a duplicate stay inserted, as in MongoDB. Duplicates are found here by
        ``id_key``: montydb's own key would let ``5`` and ``Int64(5)`` both in, and names no
        ``_id`` when it refuses one. The input is held in memory, as montydb holds every read.
        """
        target = self._db[collection]
        seen = {id_key(doc["_id"]) for doc in target.find({}, {"_id": 1})}
        accepted, duplicate = take_until_duplicate(list(documents), seen)
        _check_encodable(accepted)
        _insert_into_montydb(target, accepted)
        if duplicate is not None:
            raise duplicate_id_error(collection, duplicate["_id"], len(accepted))
        return len(accepted)

    def replace_collection(self, collection: str, documents: Iterable[Document]) -> int:
        """Checks every document before dropping anything, so a bad backup changes nothing."""
        kept, duplicate = take_until_duplicate(list(documents), set())
        if duplicate is not None:
            raise duplicate_id_error(collection, duplicate["_id"], 0)
        _check_encodable(kept)
        target = self._db[collection]
        target.drop()
        _insert_into_montydb(target, kept)
        return len(kept)

    def ping(self) -> None:
        if not self._path.is_dir():
            raise DatabaseUnreachable(
                f"cannot reach the embedded store at {self._path}: the directory is gone",
                hint="check --uri / DBSYNC_URI, or run dbsync init to create a new store",
            )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EmbeddedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _scan(self, collection: str) -> Iterator[Document]:
        documents: Iterator[Document] = iter(self._db[collection].find({}))
        return documents


@dataclass(frozen=True)
class EmbeddedApplyPlan:
    """What ``EmbeddedStore.apply`` writes, decided from one scan of the collection."""

    kept: list[Document]  # present documents neither deleted nor replaced
    inserts: list[Document]  # the upserts, the last one for each _id
    deleted: int  # present documents named in delete_ids
    rewrite: bool  # whether a present document must go (deleted or replaced)


def plan_embedded_apply(
    existing: Iterable[Document], upserts: Sequence[Document], delete_ids: Sequence[Any]
) -> EmbeddedApplyPlan:
    """Split the present documents into kept and removed; pure, so it is tested directly."""
    inserts = {id_key(document_id(document)): document for document in upserts}
    deleting = {id_key(value) for value in delete_ids}
    kept: list[Document] = []
    deleted = removed = 0
    for document in existing:
        key = id_key(document["_id"])
        deleted += key in deleting
        removed += key in deleting or key in inserts
        if key not in deleting and key not in inserts:
            kept.append(document)
    return EmbeddedApplyPlan(kept, list(inserts.values()), deleted, rewrite=removed > 0)


def _check_encodable(documents: Iterable[Document]) -> None:
    """Fail on a document BSON cannot hold before anything is dropped or written."""
    for document in documents:
        try:
            bson.encode(document)
        except (InvalidDocument, TypeError, OverflowError) as error:
            raise InvalidInput(
                f"document {describe_id(document.get('_id'))} cannot be stored: {error}"
            ) from None


def _insert_into_montydb(target: Any, documents: list[Document]) -> None:
    """One ``insert_many`` for all ``documents``, never batches.

    montydb checks each new ``_id`` against a Python list of every stored key, so ``k`` inserts
    into ``n`` documents cost ``k * n`` comparisons: batches into a growing collection would be
    quadratic (0.6 s of 1.0 s for a 10,000-document rewrite in batches of 1,000).

    montydb also refuses field names with ``.`` or a leading ``$`` on insert, as pymongo 3 did,
    while MongoDB 5 stores them. Those documents go through ``replace_one(upsert=True)``, which
    stores them but scans the collection, so only they take that path.
    """
    if not documents:
        return
    try:
        target.insert_many(documents)
    except InvalidDocument:  # raised while encoding, before montydb writes anything
        plain = [document for document in documents if _montydb_inserts(document)]
        if plain:
            target.insert_many(plain)
        for document in documents:
            if not _montydb_inserts(document):
                target.replace_one({"_id": document["_id"]}, document, upsert=True)


def _file_mark(path: Path, start: int, end: int, *, with_time: bool = False) -> str:
    """A file's size and the bytes ``start:end`` of its header ("-": no file, or empty)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(end)[start:end].hex()
            info = os.fstat(handle.fileno())
    except FileNotFoundError:
        return "-"
    if not info.st_size:
        return "-"
    time = f":{info.st_mtime_ns}" if with_time else ""
    return f"{info.st_size}{time}:{header}"


def _montydb_inserts(document: Document) -> bool:
    """Whether montydb's insert takes the document: its field names pass pymongo 3's check."""
    try:
        bson.encode(document, check_keys=True)
    except InvalidDocument:
        return False
    return True


def _open_montydb(path: Path) -> Any:
    """A montydb client on ``path``, configuring SQLite + BSON storage on first use.

    A repository made earlier with another engine is refused rather than reconfigured, which
    would hide its data.
    """
    path.mkdir(parents=True, exist_ok=True)
    if not (path / _MONTYDB_STORAGE_MARKER).exists():
        montydb.set_storage(str(path), storage="sqlite", use_bson=True)
    client = montydb.MontyClient(str(path))
    engine = client.server_info()["storageEngine"]
    if engine != "sqlite":
        client.close()
        raise InvalidInput(
            f"{path} holds a montydb store using {engine!r} storage; dbsync needs 'sqlite'",
            hint="point embedded:// at a new or empty directory",
        )
    return client
