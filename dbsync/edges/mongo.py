"""MongoDB through pymongo: the ``Store`` for ``mongodb://`` and ``mongodb+srv://`` URIs.

Kept apart from the contract (``dbsync.edges.store``) and from the factory
(``dbsync.edges.stores``, which imports this module only for a MongoDB URI) so that commands
that never talk to MongoDB — the git merge and diff drivers, the embedded store — do not pay
for importing pymongo. Every call goes through ``call_with_retries`` so that a
stepping-down primary or a restarting ``mongod`` costs a pause, not a failed merge; every
message that can reach a user passes through ``scrub_secrets``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    InvalidURI,
    OperationFailure,
    PyMongoError,
)
from pymongo.operations import DeleteOne, InsertOne, ReplaceOne, UpdateOne

from dbsync.edges.secrets import redact_uri, scrub_secrets, uri_secrets
from dbsync.edges.store import (
    ACCEPTED_URIS,
    BATCH_SIZE,
    STORE_CODEC_OPTIONS,
    STREAM_MARK,
    Change,
    ChangeCounts,
    Document,
    Redecide,
    RetryPolicy,
    WriteCounts,
    backoff_delay,
    chunks,
    describe_id,
    document_id,
    duplicate_id_error,
    encoded_size,
    id_key,
    in_requested_order,
    same_id,
    settle,
    short_reason,
    total_counts,
)
from dbsync.errors import (
    DatabaseBusy,
    DatabaseUnreachable,
    DbsyncError,
    InvalidInput,
    SafetyRefusal,
    UsageError,
)

T = TypeVar("T")

_RAW_OPTIONS: CodecOptions[RawBSONDocument] = CodecOptions(
    document_class=RawBSONDocument,
    datetime_conversion=STORE_CODEC_OPTIONS.datetime_conversion,
)


SERVER_SELECTION_TIMEOUT_MS = 2000
"""Short, because ``call_with_retries`` owns the waiting: a long driver timeout would eat the
retry budget in one attempt and hide how many attempts were made."""


CONNECT_TIMEOUT_MS = 2000


AUTHENTICATION_FAILED = 18


UNAUTHORIZED = 13


DUPLICATE_KEY = 11000


WRITE_CONFLICT = 112


BUSY_CODES = frozenset({WRITE_CONFLICT, 24, 46, 50, 251, 262})
"""Errors of a database that answers but cannot take the write yet: WriteConflict (112),
LockTimeout (24), LockBusy (46), MaxTimeMSExpired (50), NoSuchTransaction (251, the
transaction was aborted under us), ExceededTimeLimit (262). Waiting cures them; blaming the
connection for them would send the user after the wrong problem."""

NOT_PRIMARY_CODES = frozenset({10107, 13435, 11600, 11602, 189, 91})
"""No primary right now (an election, a node shutting down): another attempt may find one."""

TRANSIENT_LABELS = frozenset(
    {"TransientTransactionError", "RetryableWriteError", "UnknownTransactionCommitResult"}
)
"""Labels the server puts on errors that a second attempt can cure. A commit whose result is
unknown is retried too: every transaction dbsync runs reads what it writes first (a second run
finds the first one's writes and makes none)."""


TRANSACTION_LIFETIME_SECONDS = 60.0
"""mongod's default ``transactionLifetimeLimitSeconds``: a transaction its client abandoned (a
killed process) holds its records' locks this long before the server aborts it."""

LOCK_MARGIN_SECONDS = 10.0
"""Waited beyond the server's transaction lifetime, for its reaper to run."""


CAS_ROUNDS = 5
"""Rounds of compare-and-set on a server without transactions: each round writes, reads back
what did not take, and decides those again; a record the application rewrites faster than five
rounds fails the merge (it is rolled back from its backup) rather than being overwritten."""


BATCH_BYTES = 8 * 1024 * 1024
"""Bytes of documents per batch, besides ``BATCH_SIZE`` documents: one transaction each on a
replica set, well under MongoDB's 16 MB per operation and quick enough for its 60 s lifetime."""


_KEYS_ONLY = [{"$project": {"documentKey": 1, "operationType": 1}}]
"""What dbsync reads of a change event: which document, and what happened to it (the ``_id``
of the event, its resume token, is kept: a stream cannot resume without it)."""

DOCUMENT_EVENTS = frozenset({"insert", "update", "replace", "delete"})


COLLECTION, VIEW, TIMESERIES = "collection", "view", "timeseries"
SPECIAL_REASONS = {
    VIEW: "a view: the server computes it from other collections, which dbsync syncs",
    TIMESERIES: "a time-series collection: MongoDB keeps its measurements in buckets that "
    "cannot be written back record by record, so dbsync leaves it to each machine",
}


WriteOperation = DeleteOne | ReplaceOne[Document] | InsertOne[Document] | UpdateOne


def cas_operation(change: Change) -> WriteOperation:
    """The write of one change on a server without transactions, filtered on the very bytes
    the record held when it was read (compare-and-set).

    A record read as absent is inserted (a duplicate key means the application inserted it
    meanwhile); one read as present is replaced or deleted only if the whole document still
    equals what was read: ``$expr`` ``$eq`` on ``$$ROOT`` compares documents field by field in
    order on the server, against the stored BSON sent back as it was read (``RawBSONDocument``:
    nothing decoded and encoded again, so a DBRef-like sub-document, a regex's flags or a
    deprecated type compare as stored; ``$literal`` keeps field names starting with ``$`` from
    being read as operators). No version field is added to the application's documents.
    Numbers compare by value there, so a change of type alone (Int32 5 → Double 5.0) is not
    seen.
    """
    if change.expected is None and change.document is None:
        return DeleteOne({"_id": change.id})
    if change.expected is None:
        assert change.document is not None
        return InsertOne(change.document)
    literal = RawBSONDocument(change.expected, codec_options=_RAW_OPTIONS)
    matches = {"_id": change.id, "$expr": {"$eq": ["$$ROOT", {"$literal": literal}]}}
    if change.document is None:
        return DeleteOne(matches)
    return replacement(matches, change.document)


def write_by_id(change: Change) -> WriteOperation:
    """The write of one change inside a transaction that has just read the record as
    ``change.expected``: by ``_id`` alone (the transaction's snapshot guarantees the record
    is still what was read; the application writing it meanwhile aborts the transaction with
    a write conflict, and the retry reads again)."""
    if change.document is None:
        return DeleteOne({"_id": change.id})
    if change.expected is None:
        return InsertOne(change.document)
    return replacement({"_id": change.id}, change.document)


def replacement(matches: Mapping[str, Any], document: Document) -> WriteOperation:
    """Replace the matched record by ``document``. MongoDB refuses a replacement document
    with a top-level field whose name starts with ``$``; such a document goes through an
    aggregation pipeline (``$replaceWith`` of the ``$literal`` document), as MongoDB's
    documentation advises."""
    if any(name.startswith("$") for name in document):
        return UpdateOne(dict(matches), [{"$replaceWith": {"$literal": document}}])
    return ReplaceOne(dict(matches), document)


def open_mongo(uri: str, database: str, retry: RetryPolicy) -> MongoStore:
    try:
        client: MongoClient[Document] = MongoClient(
            uri,
            serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            connectTimeoutMS=CONNECT_TIMEOUT_MS,
            appname="dbsync",
            datetime_conversion=STORE_CODEC_OPTIONS.datetime_conversion,
        )
    except (ConfigurationError, ValueError, TypeError) as error:
        raise _uri_error(uri, error) from None
    return MongoStore(client, database, retry=retry, uri=uri)


def _uri_error(uri: str, error: Exception) -> DbsyncError:
    """A bad URI is a usage error; a ``mongodb+srv`` name that DNS cannot resolve is not.

    pymongo raises ConfigurationError (InvalidURI) for most bad URIs, but ValueError or
    TypeError for some (a port that is not a number, often an unescaped password).
    """
    text = scrub_secrets(str(error), uri_secrets(uri))
    resolving = isinstance(error, ConfigurationError) and not isinstance(error, InvalidURI)
    if uri.startswith("mongodb+srv://") and resolving and "DNS" in text:
        return DatabaseUnreachable(
            f"cannot resolve {redact_uri(uri)}: {text}",
            hint="check the cluster name in --uri / DBSYNC_URI and this machine's DNS",
        )
    return UsageError(f"invalid MongoDB URI {redact_uri(uri)}: {text}", hint=ACCEPTED_URIS)


UNREACHABLE, BUSY = "unreachable", "busy"


def retry_kind(error: PyMongoError) -> str | None:
    """What another attempt may cure: ``UNREACHABLE`` (a lost connection, no primary) or
    ``BUSY`` (the server answers but another transaction holds the records); None when
    retrying cannot help."""
    code = getattr(error, "code", None)
    if isinstance(error, ConnectionFailure) or code in NOT_PRIMARY_CODES:
        return UNREACHABLE  # AutoReconnect, NotPrimaryError, timeouts
    if code in BUSY_CODES or error.has_error_label("TransientTransactionError"):
        return BUSY
    if any(error.has_error_label(label) for label in TRANSIENT_LABELS):
        return UNREACHABLE
    return None


def is_transient(error: PyMongoError) -> bool:
    """Whether another attempt may succeed: lost connections, elections, busy records."""
    return retry_kind(error) is not None


def call_with_retries(
    policy: RetryPolicy,
    operation: Callable[[], T],
    description: str,
    host: str,
    *,
    secrets: Sequence[str] = (),
    lock_budget: Callable[[], float] = lambda: TRANSACTION_LIFETIME_SECONDS + LOCK_MARGIN_SECONDS,
) -> T:
    """Run ``operation``, retrying what another attempt may cure, for a bounded time.

    A server that cannot be reached is retried for ``policy.budget_seconds``; records held by
    another transaction (a write conflict) for ``lock_budget()`` at least (asked the first
    time it is needed): the server's transaction lifetime and a margin, since a killed
    dbsync's transaction keeps its locks that long. ``policy.announce`` is told at the first
    retry of each kind what is awaited and for how long. Never sleeps past the budget: the
    last wait is cut to what is left, then one more attempt is made. Other errors propagate
    unchanged. ``host`` must already be free of passwords; ``secrets`` are scrubbed from the
    driver's message.
    """
    started = policy.clock()
    attempt = 0
    announced: set[str] = set()
    while True:
        try:
            return operation()
        except PyMongoError as error:
            kind = retry_kind(error)
            if kind is None:
                raise
            budget = policy.budget_seconds if kind == UNREACHABLE else lock_budget()
            budget = max(budget, policy.budget_seconds)
            elapsed = policy.clock() - started
            reason = short_reason(scrub_secrets(_error_text(error), secrets))
            if elapsed >= budget:
                raise _given_up(kind, reason, description, host, attempt + 1, elapsed) from None
            if policy.announce is not None and kind not in announced and budget > 0:
                announced.add(kind)
                policy.announce(_waiting(kind, reason, description, host, budget))
            delay = backoff_delay(policy, attempt)
            policy.sleep(min(delay, budget - elapsed))
            attempt += 1


def _waiting(kind: str, reason: str, description: str, host: str, budget: float) -> str:
    if kind == UNREACHABLE:
        return f"cannot reach {host} ({reason}); retrying to {description} for up to {budget:g} s"
    return (  # a write conflict cannot tell an application's write from a held transaction
        f"records changed under the transaction ({reason}): another client wrote them "
        f"meanwhile, or they are held by another transaction (a killed dbsync's, until the "
        f"server's transaction lifetime ends); retrying to {description} for up to {budget:g} s"
    )


def _given_up(
    kind: str, reason: str, description: str, host: str, attempts: int, elapsed: float
) -> DatabaseUnreachable:
    tried = f"{description}; {attempts} attempts in {elapsed:.1f} s"
    if kind == BUSY:
        return DatabaseBusy(
            f"{host} kept refusing the write: records are held by another transaction "
            f"({reason}; {tried})",
            hint="another client holds a long transaction on these records; "
            "run the command again when it is done (the database itself answers)",
        )
    return DatabaseUnreachable(
        f"cannot reach {host}: {reason} ({tried})",
        hint=(
            "is mongod running? check --uri / DBSYNC_URI; "
            f"dbsync retried for {elapsed:.0f} s before giving up"
        ),
    )


def translate_pymongo_error(
    error: PyMongoError, description: str, host: str, secrets: Sequence[str] = ()
) -> DbsyncError:
    """A non-transient driver error as a ``DbsyncError`` whose text holds no password."""
    text = short_reason(scrub_secrets(_error_text(error), secrets))
    code = getattr(error, "code", None)
    if code == AUTHENTICATION_FAILED:
        return DatabaseUnreachable(
            f"cannot log in to {host}: {text}",
            hint="check the user name and password in --uri / DBSYNC_URI",
        )
    if code == UNAUTHORIZED and not secrets:
        return DatabaseUnreachable(
            f"{host} requires a user name and password to {description}: {text}",
            hint="put them in the URI: mongodb://USER:PASSWORD@HOST/ (--uri, DBSYNC_URI or "
            "dbsync.local.toml)",
        )
    if code == UNAUTHORIZED:
        return DatabaseUnreachable(
            f"{description} was refused by {host}: {text}",
            hint="give the user the readWrite role on this database",
        )
    if isinstance(error, ConfigurationError):
        return UsageError(f"{description} on {host}: {text}", hint=ACCEPTED_URIS)
    return DbsyncError(f"{description} failed on {host}: {type(error).__name__}: {text}")


def _error_text(error: PyMongoError) -> str:
    """A bulk write's first error message: its ``str`` is only 'batch op errors occurred'."""
    if isinstance(error, BulkWriteError):
        write_errors = error.details.get("writeErrors") or [{}]
        return str(write_errors[0].get("errmsg", error))
    return str(error)


def is_replicated(hello: Mapping[str, Any]) -> bool:
    """Whether a ``hello`` reply comes from a replica set member or a ``mongos`` router.

    Only those run multi-document transactions; a standalone ``mongod`` refuses them.
    """
    return "setName" in hello or hello.get("msg") == "isdbgrid"


def write_operations(
    upserts: Sequence[Document], delete_ids: Sequence[Any]
) -> list[DeleteOne | ReplaceOne[Document]]:
    """The bulk operations of ``apply``: every delete first, then every upsert, in order."""
    deletes: list[DeleteOne | ReplaceOne[Document]] = [
        DeleteOne({"_id": value}) for value in delete_ids
    ]
    replaces = [
        ReplaceOne({"_id": document_id(document)}, document, upsert=True) for document in upserts
    ]
    return deletes + replaces


class MongoStore:
    """A MongoDB database through pymongo: standalone, replica set or sharded cluster.

    Every call goes through ``call_with_retries``; a non-transient driver error comes out as a
    ``DbsyncError`` whose text names the host without its password.
    """

    def __init__(
        self,
        client: MongoClient[Document],
        database: str,
        *,
        retry: RetryPolicy,
        uri: str | None = None,
    ) -> None:
        """``uri``, when given, names the host in messages (redacted) and its password is
        scrubbed from driver messages; without it the database name stands in."""
        self._client = client
        self._db = client[database]
        self._retry = retry
        self._host = redact_uri(uri) if uri else f"MongoDB database {database!r}"
        self._secrets = uri_secrets(uri) if uri else ()
        self._replicated: bool | None = None
        self._capped: dict[str, bool] = {}
        self._lock_budget: float | None = None

    def collection_names(self) -> list[str]:
        """The collections that hold documents of their own: views (computed from other
        collections) and time-series collections (whose measurements MongoDB keeps in buckets
        that cannot be written back record by record) are left out, and listed by
        ``special_collections``."""
        listed = self._call("list the collections", self._listed_collections)
        return sorted(name for name, (kind, _) in listed.items() if kind == COLLECTION)

    def special_collections(self) -> dict[str, str]:
        """The views and time-series collections, each with why dbsync does not sync it."""
        listed = self._call("list the collections", self._listed_collections)
        return {
            name: SPECIAL_REASONS[kind] for name, (kind, _) in listed.items() if kind != COLLECTION
        }

    def collection_options(self, collection: str) -> dict[str, Any]:
        """The options a copy of the collection must be created with elsewhere: a capped
        collection's ``size`` and ``max``; nothing for a plain one."""
        listed = self._call("list the collections", self._listed_collections)
        _, options = listed.get(collection, (COLLECTION, {}))
        if not options.get("capped"):
            return {}
        carried = {"capped": True, "size": int(options["size"])}
        if options.get("max"):
            carried["max"] = int(options["max"])
        return carried

    def create_collection(self, collection: str, options: Mapping[str, Any]) -> None:
        """Create the collection with ``options`` (from ``collection_options``) if it is absent."""
        if collection in self.collection_names():
            return
        create = partial(self._db.create_collection, collection, **dict(options))
        self._call(f"create the collection {collection!r}", create)
        self._capped.pop(collection, None)

    def _listed_collections(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        """Every collection but the system ones: its kind and options."""
        try:
            found = list(self._db.list_collections())
        except NotImplementedError:  # mongomock without listCollections details
            return {name: (COLLECTION, {}) for name in self._db.list_collection_names()}
        listed = {}
        for entry in found:
            name, options = entry["name"], entry.get("options", {}) or {}
            if name.startswith("system."):
                continue
            kind = entry.get("type", COLLECTION)
            if kind == COLLECTION and "timeseries" in options:
                kind = TIMESERIES  # SecantusDB lists them as collections with timeseries options
            listed[name] = (kind, options)
        return listed

    def count(self, collection: str) -> int:
        return self._call(
            f"count the documents of {collection!r}",
            partial(self._db[collection].count_documents, {}),
        )

    def size_bytes(self, collection: str) -> int:
        size = self._call(
            f"read the size of {collection!r}", partial(self._server_size, collection)
        )
        if size == 0 and self.count(collection):  # a server that keeps no data size (SecantusDB)
            size = None
        return encoded_size(self.iter_documents(collection)) if size is None else size

    def _server_size(self, collection: str) -> int | None:
        """The data size the server keeps (summed over shards), or None where it has none.

        mongomock and servers without ``$collStats`` raise NotImplementedError or an
        OperationFailure; the caller then adds up the documents' BSON sizes itself.
        """
        pipeline: list[dict[str, Any]] = [{"$collStats": {"storageStats": {}}}]
        try:
            stats = list(self._db[collection].aggregate(pipeline))
        except (OperationFailure, NotImplementedError) as error:
            if isinstance(error, PyMongoError) and is_transient(error):
                raise
            return None
        return sum(int(stat["storageStats"]["size"]) for stat in stats)

    def iter_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[Document]:
        """Documents in ``_id`` order, fetched ``batch_size`` at a time.

        Each batch is one retried call; after a lost connection the read resumes just after the
        last ``_id`` it returned, so nothing is repeated or skipped.
        """
        reader = _ResumableRead(self._db[collection], batch_size)
        description = f"read the documents of {collection!r}"
        while batch := self._call(description, reader.next_batch):
            yield from batch

    def iter_raw_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[bytes]:
        """Raw BSON (``RawBSONDocument``), in ``_id`` order, resumed like ``iter_documents``."""
        plain = self._db[collection]
        try:
            raw: Collection[Any] = plain.with_options(codec_options=_RAW_OPTIONS)
        except NotImplementedError:  # mongomock has no RawBSONDocument: dicts, encoded below
            raw = plain
        reader = _ResumableRead(raw, batch_size)
        description = f"read the documents of {collection!r}"
        while batch := self._call(description, reader.next_batch):
            for document in batch:
                if isinstance(document, RawBSONDocument):
                    yield bytes(document.raw)
                else:
                    yield bson.encode(document)

    def find_by_ids(self, collection: str, ids: Sequence[Any]) -> list[Document]:
        """The documents whose ``_id`` is in ``ids``, in the order of ``ids``."""
        found: list[Document] = []
        for chunk in chunks(ids):
            query = partial(self._find_ids, self._db[collection], chunk)
            found += self._call(f"read documents of {collection!r} by _id", query)
        return in_requested_order(ids, found)

    @staticmethod
    def _find_ids(collection: Collection[Document], ids: list[Any]) -> list[Document]:
        return list(collection.find({"_id": {"$in": ids}}))

    def apply(
        self, collection: str, upserts: Sequence[Document], delete_ids: Sequence[Any]
    ) -> WriteCounts:
        """Ordered bulk writes of ``DeleteOne``s then ``ReplaceOne(upsert=True)``s.

        On a replica set or sharded cluster the whole apply is one transaction, retried whole on
        a transient error; on a standalone server each batch of operations is retried alone
        (deleting or replacing by ``_id`` twice gives the same result, though the counts of a
        retried batch may then be lower than what changed).
        """
        operations = write_operations(upserts, delete_ids)
        target = self._db[collection]
        description = f"apply changes to {collection!r}"
        if self._is_replicated():
            transaction = partial(self._apply_in_transaction, target, operations)
            return self._call(f"{description} in a transaction", transaction)
        batches = (partial(self._bulk_write, target, chunk, None) for chunk in chunks(operations))
        return total_counts(self._call(description, batch) for batch in batches)

    atomic_changes = False
    """A batch is one transaction on a replica set, but the batches of a collection are not."""

    def apply_changes(
        self, collection: str, changes: Iterable[Change], redecide: Redecide
    ) -> ChangeCounts:
        """Compare-and-set writes against the very bytes each record held when it was read,
        in batches of ``BATCH_SIZE`` records and ``BATCH_BYTES``.

        On a replica set (or a sharded cluster) each batch is one transaction that reads its
        records, compares their bytes, decides again the ones the application changed, and
        writes by ``_id``; the application writing one of them meanwhile aborts it with a
        write conflict, and it runs again. Nothing inside a transaction is expected to fail
        (a duplicate key there would abort it), so nothing is swallowed there. A capped
        collection cannot be written in a transaction: it takes the path of a standalone
        server, where each batch is written with filters on the bytes read (``cas_operation``)
        and read back, for at most ``CAS_ROUNDS`` rounds.
        """
        counts = ChangeCounts()
        target = self._db[collection]
        in_transactions = self._is_replicated() and not self._is_capped(collection)
        for batch in change_batches(changes):
            if in_transactions:
                step = partial(self._cas_in_transaction, target, batch, redecide)
            else:
                step = partial(_cas_rounds, target, batch, redecide)
            counts.add(self._call(f"apply changes to {collection!r}", step))
        return counts

    def _cas_in_transaction(
        self, target: Collection[Document], batch: list[Change], redecide: Redecide
    ) -> ChangeCounts:
        """One batch in one transaction; the counts (conflicts included) of the attempt that
        committed, so that a retried attempt's decisions are not counted twice."""
        with self._client.start_session() as session, session.start_transaction():
            counts = ChangeCounts()
            current = read_raw(target, [change.id for change in batch], session)
            operations = []
            for change in batch:
                planned, conflict = settle(change, current.get(id_key(change.id)), redecide, counts)
                if conflict is not None:  # committed with the transaction, or not at all
                    counts.conflicts.append(conflict)
                if planned is not None:
                    operations.append(write_by_id(planned))
                    _count_write(counts, planned)
            if operations:
                _write_in_transaction(target, operations, session)
            return counts

    def _is_capped(self, collection: str) -> bool:
        """Whether the collection is capped (MongoDB writes those outside transactions only)."""
        if collection not in self._capped:
            options = self._call(
                f"read the options of {collection!r}", partial(self._options, collection)
            )
            self._capped[collection] = bool(options.get("capped"))
        return self._capped[collection]

    def _options(self, collection: str) -> Mapping[str, Any]:
        try:
            found = list(self._db.list_collections(filter={"name": collection}))
        except NotImplementedError:  # mongomock
            return {}
        return found[0].get("options", {}) or {} if found else {}

    def _apply_in_transaction(
        self, target: Collection[Document], operations: list[DeleteOne | ReplaceOne[Document]]
    ) -> WriteCounts:
        with self._client.start_session() as session, session.start_transaction():
            return total_counts(
                self._bulk_write(target, chunk, session) for chunk in chunks(operations)
            )

    @staticmethod
    def _bulk_write(
        target: Collection[Document],
        operations: list[DeleteOne | ReplaceOne[Document]],
        session: ClientSession | None,
    ) -> WriteCounts:
        result = target.bulk_write(operations, ordered=True, session=session)
        return WriteCounts(
            upserted=result.upserted_count + result.matched_count,
            deleted=result.deleted_count,
            inserted=result.upserted_count,
        )

    def _is_replicated(self) -> bool:
        """Asked once per store: whether the server can run transactions."""
        if self._replicated is None:
            self._replicated = self._call("ask the server its topology", self._probe_replicated)
        return self._replicated

    def _probe_replicated(self) -> bool:
        """``hello`` says replica set or mongos; a server (or mongomock) that cannot answer it
        is taken for a standalone, which is where plain bulk writes are right."""
        try:
            reply = self._client.admin.command("hello")
        except (OperationFailure, NotImplementedError) as error:
            if isinstance(error, PyMongoError) and is_transient(error):
                raise
            return False
        return is_replicated(reply)

    def insert_many(self, collection: str, documents: Iterable[Document]) -> int:
        """Ordered inserts in batches; documents before a duplicate ``_id`` stay inserted."""
        target = self._db[collection]
        inserted = 0
        for batch in chunks(documents):
            inserted += self._call(
                f"insert into {collection!r}", _BatchInsert(target, batch, inserted).attempt
            )
        return inserted

    def replace_collection(self, collection: str, documents: Iterable[Document]) -> int:
        """Delete every document, then insert ``documents``: indexes and options are kept."""
        target = self._db[collection]
        self._call(f"empty {collection!r}", partial(target.delete_many, {}))
        return self.insert_many(collection, documents)

    def fingerprint(self, collection: str) -> str | None:
        """A resume token of the collection's change stream as of now (``STREAM_MARK`` and
        the token), taken before an export reads: the collection is unchanged since while
        the stream has no event after it (``changed_since``). None on a server without
        change streams (a standalone mongod). Never ``dbHash``, which holds a lock on the
        whole database while it hashes and would stall the application's writes."""
        if not self._is_replicated():
            return None
        token = self._call(
            f"open the change stream of {collection!r}", partial(self._token, collection)
        )
        return None if token is None else STREAM_MARK + token

    def _token(self, collection: str) -> str | None:
        try:
            with self._db[collection].watch(_KEYS_ONLY, max_await_time_ms=1) as stream:
                token = stream.resume_token
        except OperationFailure as error:
            if is_transient(error):
                raise
            return None  # change streams refused here (a role, a read concern): no fingerprint
        return None if token is None else json_util.dumps(token)

    def changed_since(self, collection: str, token: str) -> bool | None:
        found = self._call(
            f"read the change stream of {collection!r}",
            partial(self._drained, collection, token, 0),
        )
        if found is None:
            return None
        return bool(found)

    def changed_ids(self, collection: str, token: str, limit: int) -> list[bytes] | None:
        return self._call(
            f"read the change stream of {collection!r}",
            partial(self._drained, collection, token, limit),
        )

    def _drained(self, collection: str, token: str, limit: int) -> list[bytes] | None:
        """The ``_id`` of the documents the stream reports after ``token``, up to the present
        (one more than ``limit`` at most); None when it cannot tell: the token left the
        server's history (``ChangeStreamHistoryLost``), or the collection was dropped or
        renamed (its stream is invalidated)."""
        found: dict[bytes, None] = {}
        try:
            resume = json_util.loads(token)
            with self._db[collection].watch(
                _KEYS_ONLY, start_after=resume, max_await_time_ms=1, batch_size=BATCH_SIZE
            ) as stream:
                while (event := stream.try_next()) is not None:
                    if event.get("operationType") not in DOCUMENT_EVENTS:
                        return None  # drop, rename, dropDatabase, invalidate
                    found[bson.encode({"": event["documentKey"]["_id"]})] = None
                    if len(found) > limit:
                        break
        except OperationFailure as error:
            if is_transient(error):
                raise
            return None  # the token is too old, or not one of this server's
        except (ValueError, TypeError, KeyError):
            return None  # a token that is not one: read everything instead
        return list(found)

    def raw_by_ids(self, collection: str, ids: Sequence[Any]) -> list[bytes]:
        found: list[bytes] = []
        for chunk in chunks(ids):
            query = partial(read_raw, self._db[collection], chunk, None)
            found += self._call(f"read documents of {collection!r} by _id", query).values()
        return found

    def ping(self) -> None:
        self._call("ping", partial(self._client.admin.command, "ping"))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MongoStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, description: str, operation: Callable[[], T]) -> T:
        try:
            return call_with_retries(
                self._retry,
                operation,
                description,
                self._host,
                secrets=self._secrets,
                lock_budget=self.lock_budget,
            )
        except PyMongoError as error:
            raise translate_pymongo_error(error, description, self._host, self._secrets) from None

    def lock_budget(self) -> float:
        """How long to wait for records another transaction holds: the server's transaction
        lifetime (asked once, the first time it is needed; mongod's default when the server
        does not say) and a margin."""
        if self._lock_budget is None:
            self._lock_budget = TRANSACTION_LIFETIME_SECONDS + LOCK_MARGIN_SECONDS
            try:
                reply = self._client.admin.command(
                    {"getParameter": 1, "transactionLifetimeLimitSeconds": 1}
                )
                lifetime = float(reply.get("transactionLifetimeLimitSeconds", 0))
            except (PyMongoError, NotImplementedError, TypeError, ValueError):
                lifetime = 0
            if lifetime > 0:
                self._lock_budget = lifetime + LOCK_MARGIN_SECONDS
        return self._lock_budget


class _ResumableRead:
    """Reads a collection in ``_id`` order, one batch per call, resuming after a failure.

    A resumed read starts at the last ``_id`` returned through the ``_id`` index bounds
    (``min`` with ``hint``): unlike ``{"_id": {"$gt": last}}``, which MongoDB brackets by type,
    it also reaches the ``_id`` values of later types (strings after numbers, ...).
    """

    def __init__(self, collection: Collection[Document], batch_size: int) -> None:
        self._collection = collection
        self._batch_size = batch_size
        self._cursor: Iterator[Document] | None = None
        self._last: list[Any] = []  # the last _id returned, once there is one

    def next_batch(self) -> list[Document]:
        try:
            if self._cursor is None:
                self._cursor = self._open()
            batch = list(itertools.islice(self._cursor, self._batch_size))
        except PyMongoError:
            self._cursor = None
            raise
        if batch:
            self._last = [batch[-1]["_id"]]
        return batch

    def _open(self) -> Iterator[Document]:
        cursor = self._collection.find({}, sort=[("_id", 1)], batch_size=self._batch_size)
        if not self._last:
            return cursor
        resumed: Iterator[Document] = cursor.hint([("_id", 1)]).min([("_id", self._last[0])])
        first = next(resumed, None)  # the bound is inclusive: skip the document already returned
        if first is None or same_id(first["_id"], self._last[0]):
            return resumed
        return itertools.chain([first], resumed)


class _BatchInsert:
    """One ordered ``insert_many`` batch that can be attempted again without repeating itself.

    After a bulk write error only the documents the server did not insert are sent again. After
    a lost connection the server's progress is unknown, so the batch is resent whole; the
    message of a duplicate found then says so.
    """

    def __init__(self, target: Collection[Document], batch: list[Document], before: int) -> None:
        self._target = target
        self._pending = batch
        self._inserted = 0
        self._before = before
        self._attempts = 0

    def attempt(self) -> int:
        self._attempts += 1
        try:
            self._target.insert_many(self._pending, ordered=True)
        except BulkWriteError as error:
            self._take_progress(error)
            raise
        self._inserted += len(self._pending)
        self._pending = []
        return self._inserted

    def _take_progress(self, error: BulkWriteError) -> None:
        done = int(error.details.get("nInserted", 0))
        failed = self._pending[done] if done < len(self._pending) else None
        self._inserted += done
        self._pending = self._pending[done:]
        codes = [write_error.get("code") for write_error in error.details.get("writeErrors", [])]
        if failed is not None and DUPLICATE_KEY in codes:
            raise self._duplicate(failed["_id"]) from None

    def _duplicate(self, document_id: Any) -> InvalidInput:
        note = ""
        if self._attempts > 1:
            note = (
                " (this batch was sent again after a lost connection: the first attempt may"
                " have inserted this document)"
            )
        inserted = self._before + self._inserted
        return duplicate_id_error(self._target.name, document_id, inserted, note=note)


def change_batches(changes: Iterable[Change]) -> Iterator[list[Change]]:
    """``changes`` in lists of at most ``BATCH_SIZE`` changes and about ``BATCH_BYTES``."""
    batch: list[Change] = []
    size = 0
    for change in changes:
        batch.append(change)
        size += len(change.expected or b"") + len(change.line or b"")
        if len(batch) >= BATCH_SIZE or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def read_raw(
    target: Collection[Any], ids: Sequence[Any], session: ClientSession | None
) -> dict[Any, bytes]:
    """The stored BSON of the records whose ``_id`` is in ``ids``, by ``id_key``: the bytes a
    compare-and-set compares, never decoded and encoded again."""
    try:
        raw: Collection[Any] = target.with_options(codec_options=_RAW_OPTIONS)
    except NotImplementedError:  # mongomock has no RawBSONDocument: dicts, encoded below
        raw = target
    found: dict[Any, bytes] = {}
    for document in raw.find({"_id": {"$in": list(ids)}}, session=session):
        if isinstance(document, RawBSONDocument):
            found[id_key(document["_id"])] = bytes(document.raw)
        else:
            found[id_key(document["_id"])] = bson.encode(document)
    return found


def _count_write(counts: ChangeCounts, change: Change) -> None:
    if change.document is not None:
        counts.written += 1
    elif change.expected is not None:
        counts.deleted += 1


def _write_in_transaction(
    target: Collection[Document], operations: list[WriteOperation], session: ClientSession
) -> None:
    """The batch's writes; a duplicate ``_id`` means another client inserted the record after
    this transaction read it as absent: the transaction is aborted and runs again (a write
    conflict). A duplicate in another unique index is the record itself clashing with the
    database: invalid input, named."""
    try:
        target.bulk_write(operations, ordered=True, session=session)
    except BulkWriteError as error:
        first = (error.details.get("writeErrors") or [{}])[0]
        if first.get("code") != DUPLICATE_KEY:
            raise
        if first.get("keyPattern", {"_id": 1}) == {"_id": 1}:
            raise OperationFailure(
                "a record was inserted by another client after this transaction read it",
                code=WRITE_CONFLICT,
                details={"errorLabels": ["TransientTransactionError"]},
            ) from None
        raise unique_index_clash(target.name, first) from None


def unique_index_clash(collection: str, write_error: Mapping[str, Any]) -> InvalidInput:
    index = write_error.get("keyPattern") or write_error.get("errmsg", "")
    value = write_error.get("keyValue")
    shown = describe_id(value) if value is not None else "a value"
    return InvalidInput(
        f"a record cannot be written to {collection!r}: it would repeat {shown} in the "
        f"unique index {describe_id(index)} of this database",
        hint="another asset's record clashes with one here under that index: change one of "
        "them, or drop the index if the records are meant to share it",
    )


def _cas_rounds(
    target: Collection[Document], batch: list[Change], redecide: Redecide
) -> ChangeCounts:
    """One batch without a transaction: read, write with filters on the bytes read, read
    back; what did not take (the application wrote it in between) is decided again against
    its new version, for at most ``CAS_ROUNDS`` rounds."""
    counts = ChangeCounts()
    pending = batch
    for _ in range(CAS_ROUNDS):
        current = read_raw(target, [change.id for change in pending], None)
        planned: list[tuple[Change, Any]] = []
        for change in pending:
            settled, conflict = settle(change, current.get(id_key(change.id)), redecide, counts)
            if settled is not None:
                planned.append((settled, conflict))  # its conflict counts once it is written
            elif conflict is not None:
                counts.conflicts.append(conflict)
        _write_unordered(target, [cas_operation(change) for change, _ in planned])
        after = read_raw(target, [change.id for change, _ in planned], None)
        pending = []
        for change, conflict in planned:
            now = after.get(id_key(change.id))
            if _holds(change, now):
                _count_write(counts, change)
                if conflict is not None:
                    counts.conflicts.append(conflict)
            elif now == change.expected and change.expected is not None:
                raise _not_compared(target.name, change)
            else:
                pending.append(change)
        if not pending:
            return counts
    raise SafetyRefusal(
        f"{len(pending)} records of {target.name!r} kept changing under the merge "
        f"({CAS_ROUNDS} rounds of compare-and-set): dbsync does not overwrite them blindly",
        hint="the application rewrites them continuously; run the merge again when it is quieter",
    )


def _not_compared(collection: str, change: Change) -> SafetyRefusal:
    """The server left a record unwritten though it holds exactly the bytes the filter names:
    its ``$expr`` comparison differs from mongod's (which holds a document equal to itself).
    Writing it anyway would be a blind write; refusing rolls the run back instead."""
    return SafetyRefusal(
        f"the server did not apply a compare-and-set write to record {describe_id(change.id)} "
        f"of {collection!r}, although the record holds the bytes the write expects",
        hint="this server compares documents unlike mongod ($expr $eq on $$ROOT); use a "
        "replica set (writes in transactions compare bytes in dbsync itself)",
    )


def _write_unordered(target: Collection[Document], operations: list[WriteOperation]) -> None:
    """Unordered, so one duplicate (a record the application inserted meanwhile) does not stop
    the others; duplicates are found by reading back, other errors propagate."""
    if not operations:
        return
    try:
        target.bulk_write(operations, ordered=False)
    except BulkWriteError as error:
        write_errors = error.details.get("writeErrors", [])
        clashes = [e for e in write_errors if e.get("keyPattern", {"_id": 1}) != {"_id": 1}]
        if clashes:
            raise unique_index_clash(target.name, clashes[0]) from None
        codes = {write_error.get("code") for write_error in write_errors}
        if codes - {DUPLICATE_KEY} or error.details.get("writeConcernErrors"):
            raise


def _holds(change: Change, now: bytes | None) -> bool:
    """Whether the record now holds what the change wrote (the very BSON, field order
    included), or is gone when the change deleted it."""
    if change.document is None:
        return now is None
    return now is not None and now == bson.encode(change.document)
