"""The embedded store: montydb's SQLite files, read and written directly through ``sqlite3``.

The ``Store`` (``dbsync.edges.store``) for ``embedded://PATH`` URIs; ``open_store``
(``dbsync.edges.stores``) opens it. Its change log (``dbsync.edges.change_log``) makes it a
``ChangeFeed`` too.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import bson
import montydb

from dbsync.edges import change_log
from dbsync.edges.store import (
    STORE_CODEC_OPTIONS,
    STREAM_MARK,
    Change,
    ChangeCounts,
    Document,
    Redecide,
    WriteCounts,
    chunks,
    decode_raw,
    document_id,
    duplicate_id_error,
    encode_document,
    in_requested_order,
    settle,
)
from dbsync.errors import DatabaseUnreachable, DiskFull, InvalidInput, full_disk_error

T = TypeVar("T")

_MONTYDB_STORAGE_MARKER = ".monty.storage"
"""The file ``montydb.set_storage`` writes to record a repository's engine: its presence means
the directory is already a montydb repository, which must not be reconfigured."""

COLLECTION_SUFFIX = ".collection"
"""montydb's SQLite storage keeps each collection in ``<repository>/<db>/<name>.collection``."""

_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS [documents](k text NOT NULL, v text NOT NULL, PRIMARY KEY(k))"
)
"""montydb's own table, so that its client keeps reading and writing the files dbsync writes."""

BUSY_SECONDS = 30.0
"""How long a write waits for an application's write to finish before giving up."""

_KEYS_PER_QUERY = 300
"""``?`` parameters per ``IN (...)``: under SQLite's 999 even with three keys per ``_id``."""


def montydb_key(value: Any) -> bytes:
    """montydb's key ``k`` for an ``_id`` (its ``bson.id_encode``): the BSON element's type
    byte and value, without a name; computed through the public encoder."""
    element = bson.encode({"": value})[4:-1]  # type byte, the empty name's NUL, the value
    return element[:1] + element[2:]


def equivalent_keys(value: Any) -> list[bytes]:
    """Every key an ``_id`` equal to ``value`` (by ``id_key``) can have in montydb's table.

    montydb keys ``5``, ``Int64(5)`` and ``5.0`` apart (three BSON types) where MongoDB holds
    them one document: dbsync looks for all three, so it finds the record whichever type the
    application wrote it with.
    """
    keys = [montydb_key(value)]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return keys
    if isinstance(value, float) and not value.is_integer():
        return keys
    number = int(value)
    if -(2**63) <= number < 2**63:
        keys += [montydb_key(number), montydb_key(bson.Int64(number))]
    if float(number) == number:
        keys.append(montydb_key(float(number)))
    return list(dict.fromkeys(keys))


class EmbeddedStore:
    """An on-disk store without a server: montydb's SQLite storage, read and written directly.

    Each collection is montydb's SQLite file ``<path>/<db>/<name>.collection`` (WAL), table
    ``documents(k PRIMARY KEY, v)``: ``k`` is montydb's key for the ``_id``, ``v`` the document's
    BSON. dbsync reads and writes that table itself through ``sqlite3``, so an application
    using montydb's client keeps working on the same files, while dbsync gets what montydb's
    API cannot give (measured in ``bench/embedded_store_choice.py`` and the README): reads
    streamed in batches (bounded memory), writes by key (k changes cost O(k), not a rewrite of
    the collection), and a merge's or restore's writes in one transaction (``BEGIN
    IMMEDIATE``): a kill at any moment leaves the old state or the new one. The format is
    montydb's, unchanged: existing stores need no migration.

    An export adds to each collection's file a change log (``edges.change_log``: a table and
    three triggers montydb does not read), so that the store is a ``ChangeFeed`` like a
    replica set's change stream: export, ``status`` and a merge's read then read only the
    documents written since the last export, whoever wrote them.
    """

    atomic_changes = True

    def __init__(self, path: Path, database: str) -> None:
        self._path = path
        _open_montydb(path).close()  # configures a new repository, refuses another engine
        self._folder = path / database
        self._writers: dict[str, sqlite3.Connection] = {}

    def collection_names(self) -> list[str]:
        if not self._folder.is_dir():
            return []
        names = [p.name[: -len(COLLECTION_SUFFIX)] for p in self._folder.iterdir()]
        found = [p for p in names if (self._folder / (p + COLLECTION_SUFFIX)).is_file()]
        return sorted(name for name in found if not name.startswith("system."))

    def count(self, collection: str) -> int:
        return int(self._read_one(collection, "SELECT count(*) FROM documents"))

    def size_bytes(self, collection: str) -> int:
        return int(self._read_one(collection, "SELECT coalesce(sum(length(v)), 0) FROM documents"))

    def iter_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[Document]:
        """Documents in storage order (not sorted: sorting is the caller's, in bounded memory)."""
        for raw in self.iter_raw_documents(collection, batch_size=batch_size):
            yield decode_raw(raw)

    def iter_raw_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[bytes]:
        """The BSON stored, read in batches, never decoded; one read transaction, so a
        concurrent write is seen whole or not at all."""
        connection = self._reader(collection)
        if connection is None:
            return
        try:
            with _sqlite_errors(self._file(collection)):
                cursor = connection.execute("SELECT v FROM documents")
                while rows := cursor.fetchmany(batch_size):
                    for (raw,) in rows:
                        yield bytes(raw)
        finally:
            connection.close()

    def fingerprint(self, collection: str) -> str:
        """The mark of the collection's change log (``STREAM_MARK``, ``change_log.LOG_MARK`` and the
        mark: ``changed_since`` then tells exactly whether anything was written since), when
        it has an intact one (``follow_changes``). Else figures of the collection's SQLite
        file that a write changes (through montydb's own client too), read without reading a
        document: the file's size, modification time and change counter, and its WAL's size
        and header (a reader leaves an empty WAL behind: that counts as none). They miss a
        write within the clock tick of the one before, with the WAL checkpointed away."""
        path = self._file(collection)
        mark = None
        try:  # a file SQLite cannot open now (a full disk: no room for its -shm) has figures
            connection = self._reader(collection)
        except DiskFull:
            connection = None
        if connection is not None:
            try:
                with _sqlite_errors(path):
                    mark = change_log.mark(connection)
            except DiskFull:
                mark = None
            finally:
                connection.close()
            if mark is not None:
                return STREAM_MARK + change_log.LOG_MARK + mark
        return (
            f"{_file_mark(path, 24, 28, with_time=True)},{_file_mark(Path(f'{path}-wal'), 0, 32)}"
        )

    def follow_changes(self, collection: str) -> None:
        """Start the collection's change log (``edges.change_log``) if it has no intact one:
        a table and three triggers added to montydb's file, in one write transaction. Best
        effort: a store busy with a long write, or read-only, goes without one (its documents
        are then read every time, as before)."""
        connection = self._reader(collection)
        if connection is None:
            return
        try:
            if change_log.is_intact(connection):
                return
        except sqlite3.Error:
            return
        finally:
            connection.close()
        with self._briefly_written(collection) as writer:
            if writer is not None and not change_log.is_intact(writer):
                change_log.start(writer)

    def forget_changes_before(self, collection: str, token: str) -> None:
        """Drop the change log's rows before the mark ``token`` (a ``fingerprint``): nothing
        asks for what happened before the last export's mark. Best effort, as above."""
        if not token.startswith(STREAM_MARK + change_log.LOG_MARK):
            return
        with self._briefly_written(collection) as writer:
            if writer is not None:
                seq = change_log.since(writer, token[len(STREAM_MARK + change_log.LOG_MARK) :])
                if seq is not None:
                    change_log.forget_before(writer, seq)

    @contextmanager
    def _briefly_written(self, collection: str) -> Iterator[sqlite3.Connection | None]:
        """A write transaction on the collection's file that waits 2 s at most for the lock,
        for what may be left undone (the change log's upkeep): None, and nothing written, when
        the file is missing, busy or cannot be written."""
        path = self._file(collection)
        if not path.is_file():
            yield None
            return
        try:
            writer = sqlite3.connect(path, timeout=2.0, isolation_level=None)
        except sqlite3.Error:
            yield None
            return
        with closing(writer):
            try:
                writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                yield None
                return
            try:
                yield writer
            except sqlite3.Error:
                writer.execute("ROLLBACK")
                return
            except BaseException:
                writer.execute("ROLLBACK")
                raise
            try:
                writer.execute("COMMIT")
            except sqlite3.Error:
                writer.execute("ROLLBACK")

    def changed_since(self, collection: str, token: str) -> bool | None:
        """Whether anything was written to the collection after the mark ``token`` (None:
        the change log cannot answer for it)."""
        return self._logged(collection, token, lambda c, seq: change_log.written_after(c, seq))

    def changed_ids(self, collection: str, token: str, limit: int) -> list[bytes] | None:
        """The ``_id`` (``{"": _id}`` as BSON) of every document inserted, changed or deleted
        after the mark ``token``; None when the log cannot answer for it, or more than
        ``limit`` were."""

        def ids(connection: sqlite3.Connection, seq: int) -> list[bytes] | None:
            keys = change_log.keys_after(connection, seq, limit)
            return None if keys is None else [change_log.id_bytes_of_key(k) for k in keys]

        return self._logged(collection, token, ids)

    def _logged(
        self,
        collection: str,
        token: str,
        read: Callable[[sqlite3.Connection, int], T],
    ) -> T | None:
        """``read`` of the change log after the mark ``token``, in one read transaction."""
        if not token.startswith(change_log.LOG_MARK):
            return None
        try:  # a file SQLite cannot open now (a full disk: no room for its -shm) cannot tell
            connection = self._reader(collection)
        except DiskFull:
            return None
        if connection is None:
            return None
        try:
            with _sqlite_errors(self._file(collection)):
                connection.execute("BEGIN")
                seq = change_log.since(connection, token[len(change_log.LOG_MARK) :])
                found = None if seq is None else read(connection, seq)
                connection.execute("COMMIT")
                return found
        finally:
            connection.close()

    def raw_by_ids(self, collection: str, ids: Sequence[Any]) -> list[bytes]:
        """The stored BSON of the documents whose ``_id`` is in ``ids`` (of any of the types
        montydb keys apart: ``equivalent_keys``), in one read transaction."""
        connection = self._reader(collection)
        if connection is None:
            return []
        found: list[bytes] = []
        try:
            with _sqlite_errors(self._file(collection)):
                connection.execute("BEGIN")
                for chunk in chunks(ids, _KEYS_PER_QUERY):
                    keys = [key for value in chunk for key in equivalent_keys(value)]
                    query = f"SELECT v FROM documents WHERE k IN ({','.join('?' * len(keys))})"
                    found += [bytes(raw) for (raw,) in connection.execute(query, keys)]
                connection.execute("COMMIT")
        finally:
            connection.close()
        return found

    def find_by_ids(self, collection: str, ids: Sequence[Any]) -> list[Document]:
        found = [decode_raw(raw) for raw in self.raw_by_ids(collection, ids)]
        return in_requested_order(ids, found)

    def apply(
        self, collection: str, upserts: Sequence[Document], delete_ids: Sequence[Any]
    ) -> WriteCounts:
        """Deletes, then upserts, by key, in one transaction: a bad document changes nothing."""
        inserted = deleted = 0
        with self._transaction(collection) as connection:
            for value in delete_ids:
                row = _find_row(connection, value)
                if row is not None:
                    _delete_row(connection, row[0])
                    deleted += 1
            for document in upserts:
                row = _find_row(connection, document_id(document))
                _put_row(connection, None if row is None else row[0], document)
                inserted += row is None
        return WriteCounts(upserted=len(upserts), deleted=deleted, inserted=inserted)

    def apply_changes(
        self, collection: str, changes: Iterable[Change], redecide: Redecide
    ) -> ChangeCounts:
        """Every change in one transaction, each only if its record still holds what was read.

        The transaction holds SQLite's write lock from the first read: a record checked here
        cannot change before the commit, so a record decided again is written without
        another check. An application's writes wait (montydb's busy timeout) meanwhile.
        """
        counts = ChangeCounts()
        with self._transaction(collection) as connection:
            for planned in changes:
                row = _find_row(connection, planned.id)
                current = None if row is None else bytes(row[1])
                change, conflict = settle(planned, current, redecide, counts)
                if conflict is not None:
                    counts.conflicts.append(conflict)
                if change is not None:
                    _write_change(connection, row, change, counts)
        return counts

    def insert_many(self, collection: str, documents: Iterable[Document]) -> int:
        """Inserts by key in one transaction; documents before a duplicate ``_id`` stay
        inserted, as in MongoDB. Duplicates are found by ``id_key`` (``5`` and ``Int64(5)``
        are one ``_id``), where montydb's own key would let both in."""
        inserted = 0
        duplicate: Document | None = None
        with self._transaction(collection) as connection:
            for document in documents:
                document.setdefault("_id", bson.ObjectId())
                if _find_row(connection, document["_id"]) is not None:
                    duplicate = document
                    break
                _put_row(connection, None, document)
                inserted += 1
        if duplicate is not None:
            raise duplicate_id_error(collection, duplicate["_id"], inserted)
        return inserted

    def replace_collection(self, collection: str, documents: Iterable[Document]) -> int:
        """Empty the collection and insert ``documents``, in one transaction: a bad backup (a
        duplicate, a document BSON cannot hold) changes nothing."""
        kept = 0
        with self._transaction(collection) as connection:
            connection.execute("DELETE FROM documents")
            for document in documents:
                if _find_row(connection, document_id(document)) is not None:
                    raise duplicate_id_error(collection, document["_id"], 0)
                _put_row(connection, None, document)
                kept += 1
        return kept

    def ping(self) -> None:
        if not self._path.is_dir():
            raise DatabaseUnreachable(
                f"cannot reach the embedded store at {self._path}: the directory is gone",
                hint="check --uri / DBSYNC_URI, or run dbsync init to create a new store",
            )

    def close(self) -> None:
        for connection in self._writers.values():
            connection.close()
        self._writers.clear()

    def __enter__(self) -> EmbeddedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _file(self, collection: str) -> Path:
        return self._folder / (collection + COLLECTION_SUFFIX)

    def _reader(self, collection: str) -> sqlite3.Connection | None:
        """A connection to read the collection, or None when it has no documents table: absent,
        or left by montydb without its table (it creates the file, then the table)."""
        path = self._file(collection)
        if not path.is_file():
            return None
        with _sqlite_errors(path):
            connection = _connect(path)
            tables = connection.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'documents'"
            ).fetchone()[0]
        if not tables:
            connection.close()
            return None
        return connection

    def _read_one(self, collection: str, query: str) -> Any:
        connection = self._reader(collection)
        if connection is None:
            return 0
        try:
            with _sqlite_errors(self._file(collection)):
                return connection.execute(query).fetchone()[0]
        finally:
            connection.close()

    @contextmanager
    def _transaction(self, collection: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; any exception (or a kill) rolls everything back."""
        path = self._file(collection)
        with _sqlite_errors(path):
            connection = self._writer(collection)
            connection.execute("BEGIN IMMEDIATE")
        try:
            with _sqlite_errors(path):
                yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        with _sqlite_errors(path):
            connection.execute("COMMIT")

    def _writer(self, collection: str) -> sqlite3.Connection:
        """The collection's write connection, creating the file and repairing a missing table."""
        if collection not in self._writers:
            self._folder.mkdir(parents=True, exist_ok=True)
            connection = _connect(self._file(collection))
            connection.execute("PRAGMA journal_mode=WAL")  # montydb's setting, kept
            connection.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut
            connection.execute(_CREATE_TABLE)
            self._writers[collection] = connection
        return self._writers[collection]


def _connect(path: Path) -> sqlite3.Connection:
    """Autocommit (transactions are explicit), waiting on a lock rather than failing at once."""
    return sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None)


@contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    """SQLite's errors as dbsync's: a locked store is unreachable (exit 3), a damaged file is
    invalid input (exit 4), both naming the file."""
    try:
        yield
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):
            raise DatabaseUnreachable(
                f"the embedded store file {path} stayed locked for {BUSY_SECONDS:g} s ({error})",
                hint="another process holds a long write transaction on it; try again",
            ) from None
        if full_disk_error(error, path) is not None:  # not a damaged file: no room to open it
            raise DiskFull(
                f"the disk is full: the embedded store file {path} cannot be opened ({error})",
                hint="free space on that disk ('dbsync prune' removes old backups and reports), "
                "then run the command again",
            ) from None
        raise _damaged_file(path, error) from None
    except sqlite3.DatabaseError as error:
        raise _damaged_file(path, error) from None


class DamagedStore(InvalidInput):
    """A file of the embedded store that SQLite cannot read (exit 4, like any corrupt input)."""


def _damaged_file(path: Path, error: Exception) -> DamagedStore:
    return DamagedStore(
        f"the embedded store file {path} cannot be read: {error}",
        hint="restore the file from a copy, or move it away and merge the snapshot again",
    )


def _find_row(connection: sqlite3.Connection, value: Any) -> tuple[bytes, bytes] | None:
    """The stored ``(k, v)`` of the record whose ``_id`` equals ``value``, if any."""
    keys = equivalent_keys(value)
    query = f"SELECT k, v FROM documents WHERE k IN ({','.join('?' * len(keys))}) LIMIT 1"
    row = connection.execute(query, keys).fetchone()
    return None if row is None else (bytes(row[0]), bytes(row[1]))


def _delete_row(connection: sqlite3.Connection, key: bytes) -> None:
    connection.execute("DELETE FROM documents WHERE k = ?", (key,))


def _put_row(connection: sqlite3.Connection, old_key: bytes | None, document: Document) -> None:
    """Write ``document`` by its key; the record's old row goes if its ``_id`` had another
    type (``5`` replaced by ``5.0``), so the store never holds two versions of one record."""
    key = montydb_key(document_id(document))
    value = encode_document(document)
    if old_key is not None and old_key != key:
        _delete_row(connection, old_key)
    connection.execute("INSERT OR REPLACE INTO documents (k, v) VALUES (?, ?)", (key, value))


def _write_change(
    connection: sqlite3.Connection,
    row: tuple[bytes, bytes] | None,
    change: Change,
    counts: ChangeCounts,
) -> None:
    old_key = None if row is None else row[0]
    if change.document is None:
        if old_key is not None:
            _delete_row(connection, old_key)
            counts.deleted += 1
        return
    _put_row(connection, old_key, change.document)
    counts.written += 1


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


def _open_montydb(path: Path) -> Any:
    """A montydb client on ``path``, configuring SQLite + BSON storage on first use.

    A repository made earlier with another engine is refused rather than reconfigured, which
    would hide its data.
    """
    path.mkdir(parents=True, exist_ok=True)
    if not (path / _MONTYDB_STORAGE_MARKER).exists():
        montydb.set_storage(str(path), storage="sqlite", use_bson=True)
    client = montydb.MontyClient(
        str(path), datetime_conversion=STORE_CODEC_OPTIONS.datetime_conversion
    )
    engine = client.server_info()["storageEngine"]
    if engine != "sqlite":
        client.close()
        raise InvalidInput(
            f"{path} holds a montydb store using {engine!r} storage; dbsync needs 'sqlite'",
            hint="point embedded:// at a new or empty directory",
        )
    return client
