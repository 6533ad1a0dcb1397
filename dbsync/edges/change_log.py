"""The change log of an embedded store's collection: which documents were written since a mark,
told by SQLite itself, exactly, without reading a document.

montydb's client updates a document in place (``UPDATE documents SET v = ? WHERE k = ?``: the
row keeps its rowid), so neither the rowids nor the file's figures say exactly what was
written (in WAL mode the file's change counter does not move, and its modification time is as
coarse as the kernel's clock tick). SQLite's triggers do: dbsync adds to montydb's file a table
``dbsync_changes`` and three triggers on montydb's ``documents`` table, so that every insert,
update and delete — by montydb's client, by dbsync, by any SQLite client — appends the key
``k`` it touched, under an ever-growing ``seq`` (``AUTOINCREMENT``: never reused) and a random
nonce. montydb reads and writes only ``documents``: its format is unchanged.

A mark is ``<generation>:<seq>:<nonce>``: the log's last row when it was taken. The log answers
for the writes after a mark only while it can prove it saw them all: its three triggers are
there with the SQL dbsync wrote (a dropped and re-created ``documents`` table loses them), the
generation is the one the mark names (a log started afresh has another), and the row of the
mark is still there with its nonce (an older copy of the file put back has not). Anything else:
None, and the caller reads every document.

What the log cannot see: a client that turns SQLite's triggers off (a C program's
``SQLITE_DBCONFIG_ENABLE_TRIGGER``) or edits the file's bytes. dbsync's own writes do not.
"""

from __future__ import annotations

import secrets
import sqlite3
import struct

LOG_MARK = "log:"
"""What a store's fingerprint holds after ``STREAM_MARK`` for a mark of this log (not a MongoDB
resume token)."""
TABLE = "dbsync_changes"
GENERATION = "dbsync_change_log"
TRIGGERS = {
    "dbsync_logged_insert": (
        "CREATE TRIGGER dbsync_logged_insert AFTER INSERT ON documents BEGIN "
        f"INSERT INTO {TABLE} (k, nonce) VALUES (NEW.k, randomblob(8)); END"
    ),
    "dbsync_logged_update": (
        "CREATE TRIGGER dbsync_logged_update AFTER UPDATE ON documents BEGIN "
        f"INSERT INTO {TABLE} (k, nonce) VALUES (OLD.k, randomblob(8)); "
        f"INSERT INTO {TABLE} (k, nonce) VALUES (NEW.k, randomblob(8)); END"
    ),
    "dbsync_logged_delete": (
        "CREATE TRIGGER dbsync_logged_delete AFTER DELETE ON documents BEGIN "
        f"INSERT INTO {TABLE} (k, nonce) VALUES (OLD.k, randomblob(8)); END"
    ),
}
_START = (
    f"DROP TABLE IF EXISTS {TABLE}",
    f"DROP TABLE IF EXISTS {GENERATION}",
    f"CREATE TABLE {TABLE} (seq INTEGER PRIMARY KEY AUTOINCREMENT, k BLOB NOT NULL, "
    "nonce BLOB NOT NULL)",
    f"CREATE TABLE {GENERATION} (generation TEXT NOT NULL)",
)
_SENTINEL = b""
"""The key of the row a log starts with (no ``_id`` has it): a mark always has a row."""


def is_intact(connection: sqlite3.Connection) -> bool:
    """Whether the log of this file sees every write: its triggers there, as dbsync wrote them."""
    rows = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'documents'"
    ).fetchall()
    found = dict(rows)
    return all(found.get(name) == sql for name, sql in TRIGGERS.items())


def start(connection: sqlite3.Connection) -> None:
    """Start the log afresh, with a new generation (inside the caller's write transaction):
    whatever marks were taken before are no longer answered for."""
    for name in TRIGGERS:
        connection.execute(f"DROP TRIGGER IF EXISTS {name}")
    for statement in _START:
        connection.execute(statement)
    connection.execute(f"INSERT INTO {GENERATION} VALUES (?)", (secrets.token_hex(8),))
    for sql in TRIGGERS.values():
        connection.execute(sql)
    connection.execute(f"INSERT INTO {TABLE} (k, nonce) VALUES (?, randomblob(8))", (_SENTINEL,))


def mark(connection: sqlite3.Connection) -> str | None:
    """The log's mark as of now (None: no intact log)."""
    if not is_intact(connection):
        return None
    generation = _generation(connection)
    last = connection.execute(f"SELECT seq, nonce FROM {TABLE} ORDER BY seq DESC LIMIT 1")
    row = last.fetchone()
    if generation is None or row is None:
        return None
    return f"{generation}:{row[0]}:{bytes(row[1]).hex()}"


def _generation(connection: sqlite3.Connection) -> str | None:
    try:
        rows = connection.execute(f"SELECT generation FROM {GENERATION}").fetchall()
    except sqlite3.OperationalError:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def since(connection: sqlite3.Connection, token: str) -> int | None:
    """The ``seq`` of the mark ``token`` when the log answers for everything after it."""
    try:
        generation, seq_text, nonce = token.split(":")
        seq = int(seq_text)
        nonce_bytes = bytes.fromhex(nonce)
    except ValueError:
        return None
    if not is_intact(connection) or _generation(connection) != generation:
        return None
    row = connection.execute(f"SELECT nonce FROM {TABLE} WHERE seq = ?", (seq,)).fetchone()
    if row is None or bytes(row[0]) != nonce_bytes:
        return None
    return seq


def keys_after(connection: sqlite3.Connection, seq: int, limit: int) -> list[bytes] | None:
    """montydb's keys of the documents written after ``seq`` (None: more than ``limit``)."""
    query = f"SELECT DISTINCT k FROM {TABLE} WHERE seq > ? AND k != ? LIMIT ?"
    keys = [bytes(k) for (k,) in connection.execute(query, (seq, _SENTINEL, limit + 1))]
    return None if len(keys) > limit else keys


def written_after(connection: sqlite3.Connection, seq: int) -> bool:
    query = f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE seq > ?)"
    return bool(connection.execute(query, (seq,)).fetchone()[0])


def forget_before(connection: sqlite3.Connection, seq: int) -> None:
    """Drop the rows before the mark ``seq`` (its own row stays: it proves the mark)."""
    connection.execute(f"DELETE FROM {TABLE} WHERE seq < ?", (seq,))


def id_bytes_of_key(key: bytes) -> bytes:
    """montydb's key of an ``_id`` (its BSON element without the name) as ``{"": _id}`` in
    BSON: what a change stream's ``documentKey`` and ``change_index.id_bytes`` give."""
    element = key[:1] + b"\x00" + key[1:]
    return struct.pack("<i", len(element) + 5) + element + b"\x00"
