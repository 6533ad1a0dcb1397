"""MongoDB through pymongo: the ``Store`` for ``mongodb://`` and ``mongodb+srv://`` URIs.

Kept apart from ``dbsync.edges.store`` (the protocol, ``open_store`` and the embedded store) so that
commands that never talk to MongoDB — the git merge and diff drivers, the embedded store — do
not pay for importing pymongo. Every call goes through ``call_with_retries`` so that a
stepping-down primary or a restarting ``mongod`` costs a pause, not a failed merge; every
message that can reach a user passes through ``scrub_secrets``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import bson
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
from pymongo.operations import DeleteOne, InsertOne, ReplaceOne

from dbsync.edges.store import (
    ACCEPTED_URIS,
    STORE_CODEC_OPTIONS,
    Change,
    ChangeCounts,
    Document,
    Redecide,
    RetryPolicy,
    WriteCounts,
    backoff_delay,
    chunks,
    document_id,
    duplicate_id_error,
    encoded_size,
    id_key,
    in_requested_order,
    redact_uri,
    same_id,
    scrub_secrets,
    short_reason,
    total_counts,
    uri_secrets,
)
from dbsync.errors import DatabaseUnreachable, DbsyncError, InvalidInput, UsageError

T = TypeVar("T")

_RAW_OPTIONS: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)


SERVER_SELECTION_TIMEOUT_MS = 2000
"""Short, because ``call_with_retries`` owns the waiting: a long driver timeout would eat the
retry budget in one attempt and hide how many attempts were made."""


CONNECT_TIMEOUT_MS = 2000


TRANSIENT_LABELS = frozenset(
    {"TransientTransactionError", "RetryableWriteError", "UnknownTransactionCommitResult"}
)
"""Labels the server puts on errors that a second attempt can cure. A commit whose result is
unknown is retried too: the only transaction dbsync runs is ``apply``, whose deletes and
replacements by ``_id`` give the same result when run twice."""


AUTHENTICATION_FAILED = 18


UNAUTHORIZED = 13


DUPLICATE_KEY = 11000


CAS_ROUNDS = 5
"""Rounds of compare-and-set on a server without transactions: each round writes, reads back
what did not take, and decides those again; a record the application rewrites faster than five
rounds fails the merge (it is rolled back from its backup) rather than being overwritten."""


def cas_operation(change: Change) -> DeleteOne | ReplaceOne[Document] | InsertOne[Document]:
    """The write of one change, filtered on what the merge read (compare-and-set).

    A record read as absent is inserted (a duplicate key means the application inserted it
    meanwhile); one read as present is replaced or deleted only if the whole document still
    equals what was read: ``$expr`` ``$eq`` on ``$$ROOT`` compares documents field by field in
    order on a server (``$literal`` keeps field names starting with ``$`` from being read as
    operators), so no version field is added to the application's documents. Numbers compare
    by value there, so a change of type alone (Int32 5 → Double 5.0) is not seen.
    """
    if change.expected is None and change.document is None:
        return DeleteOne({"_id": change.id})  # a restore: whatever is there goes
    if change.expected is None:
        assert change.document is not None
        return InsertOne(change.document)
    expected = bson.decode(change.expected, codec_options=STORE_CODEC_OPTIONS)  # far dates too
    matches = {"_id": change.id, "$expr": {"$eq": ["$$ROOT", {"$literal": expected}]}}
    if change.document is None:
        return DeleteOne(matches)
    return ReplaceOne(matches, change.document)


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


def is_transient(error: PyMongoError) -> bool:
    """Whether another attempt may succeed: lost connections, elections, labelled errors."""
    if isinstance(error, ConnectionFailure):  # AutoReconnect, NotPrimaryError, timeouts
        return True
    return any(error.has_error_label(label) for label in TRANSIENT_LABELS)


def call_with_retries(
    policy: RetryPolicy,
    operation: Callable[[], T],
    description: str,
    host: str,
    *,
    secrets: Sequence[str] = (),
) -> T:
    """Run ``operation``, retrying transient errors until ``policy.budget_seconds`` is spent.

    Never sleeps past the budget: the last wait is cut to what is left, then one more attempt is
    made. Non-transient errors propagate unchanged. ``host`` must already be free of passwords;
    ``secrets`` are scrubbed from the driver's message.
    """
    started = policy.clock()
    attempt = 0
    while True:
        try:
            return operation()
        except PyMongoError as error:
            if not is_transient(error):
                raise
            elapsed = policy.clock() - started
            if elapsed >= policy.budget_seconds:
                attempts = attempt + 1
                raise _unreachable(
                    policy, error, description, host, secrets, attempts, elapsed
                ) from None
            delay = backoff_delay(policy, attempt)
            policy.sleep(min(delay, policy.budget_seconds - elapsed))
            attempt += 1


def _unreachable(
    policy: RetryPolicy,
    error: PyMongoError,
    description: str,
    host: str,
    secrets: Sequence[str],
    attempts: int,
    elapsed: float,
) -> DatabaseUnreachable:
    reason = short_reason(scrub_secrets(str(error), secrets))
    return DatabaseUnreachable(
        f"cannot reach {host}: {reason} ({description}; {attempts} attempts in {elapsed:.1f} s)",
        hint=(
            "is mongod running? check --uri / DBSYNC_URI; "
            f"dbsync retried for {policy.budget_seconds:g} s before giving up"
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
    if code == UNAUTHORIZED:
        return DbsyncError(
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

    def collection_names(self) -> list[str]:
        names = self._call("list the collections", self._db.list_collection_names)
        return sorted(name for name in names if not name.startswith("system."))

    def count(self, collection: str) -> int:
        return self._call(
            f"count the documents of {collection!r}",
            partial(self._db[collection].count_documents, {}),
        )

    def size_bytes(self, collection: str) -> int:
        size = self._call(
            f"read the size of {collection!r}", partial(self._server_size, collection)
        )
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
        """Compare-and-set writes, in batches: one transaction each on a replica set.

        Each batch is written with ``cas_operation``s (unordered), then the records that did
        not become what the change wrote are read back and decided again against their new
        version, for at most ``CAS_ROUNDS`` rounds. On a replica set a batch's rounds run in
        one transaction, retried whole on a transient error (a write conflict with the
        application aborts it: the retry reads the application's version).
        """
        counts = ChangeCounts()
        target = self._db[collection]
        for batch in chunks(changes):
            if self._is_replicated():
                step = partial(self._cas_in_transaction, target, batch, redecide)
            else:
                step = partial(_cas_rounds, target, batch, redecide, None)
            done = self._call(f"apply changes to {collection!r}", step)
            _add_counts(counts, done)
        return counts

    def _cas_in_transaction(
        self, target: Collection[Document], batch: list[Change], redecide: Redecide
    ) -> ChangeCounts:
        with self._client.start_session() as session, session.start_transaction():
            return _cas_rounds(target, batch, redecide, session)

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
        """The server's hash of the collection (``dbHash``) and its count, or None where the
        server has no ``dbHash`` (mongomock, some hosted tiers): a cheap "did it change"."""
        return self._call(f"hash {collection!r}", partial(self._server_hash, collection))

    def _server_hash(self, collection: str) -> str | None:
        try:
            found = self._db.command("dbHash", collections=[collection])
        except (OperationFailure, NotImplementedError) as error:
            if isinstance(error, PyMongoError) and is_transient(error):
                raise
            return None
        md5 = found.get("collections", {}).get(collection)
        count = self._db[collection].count_documents({})
        return None if md5 is None else f"count={count} dbHash={md5}"

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
                self._retry, operation, description, self._host, secrets=self._secrets
            )
        except PyMongoError as error:
            raise translate_pymongo_error(error, description, self._host, self._secrets) from None


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


def _add_counts(total: ChangeCounts, more: ChangeCounts) -> None:
    total.written += more.written
    total.deleted += more.deleted
    total.redecided += more.redecided
    total.left += more.left


def _cas_rounds(
    target: Collection[Document],
    batch: list[Change],
    redecide: Redecide,
    session: ClientSession | None,
) -> ChangeCounts:
    counts = ChangeCounts()
    pending = batch
    for _ in range(CAS_ROUNDS):
        _write_unordered(target, [cas_operation(change) for change in pending], session)
        current = _read_current(target, [change.id for change in pending], session)
        stale = []
        for change in pending:
            if not _took(change, current):
                stale.append(change)
                continue
            counts.written += change.document is not None
            counts.deleted += change.document is None and change.expected is not None
        pending = []
        for change in stale:
            counts.redecided += 1
            now = current.get(id_key(change.id))
            again = redecide(change, now)
            counts.left += again is None
            if again is not None:
                pending.append(again)
        if not pending:
            return counts
    raise DbsyncError(
        f"{len(pending)} records of {target.name!r} kept changing under the merge "
        f"({CAS_ROUNDS} rounds of compare-and-set)",
        hint="the application rewrites them continuously; run the merge again when it is quieter",
    )


def _write_unordered(
    target: Collection[Document],
    operations: list[DeleteOne | ReplaceOne[Document] | InsertOne[Document]],
    session: ClientSession | None,
) -> None:
    """Unordered, so one duplicate (a record the application inserted meanwhile) does not stop
    the others; duplicates are found by reading back, other errors propagate."""
    if not operations:
        return
    try:
        target.bulk_write(operations, ordered=False, session=session)
    except BulkWriteError as error:
        codes = {write_error.get("code") for write_error in error.details.get("writeErrors", [])}
        if codes - {DUPLICATE_KEY} or error.details.get("writeConcernErrors"):
            raise


def _read_current(
    target: Collection[Document], ids: list[Any], session: ClientSession | None
) -> dict[Any, Document]:
    found = target.find({"_id": {"$in": ids}}, session=session)
    return {id_key(document["_id"]): document for document in found}


def _took(change: Change, current: Mapping[Any, Document]) -> bool:
    """Whether the record now holds what the change wrote (the very BSON, field order
    included), or is gone when the change deleted it."""
    now = current.get(id_key(change.id))
    if change.document is None:
        return now is None
    return now is not None and bson.encode(now) == bson.encode(change.document)
