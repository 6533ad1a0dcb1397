"""Opening a store: the URI names the implementation.

Above both stores: ``embedded://PATH`` opens the embedded store, ``mongodb://`` and
``mongodb+srv://`` the MongoDB one, whose module is imported only then (pymongo takes 0.3 s to
import: the git hooks and drivers, which never talk to MongoDB, stay fast).
"""

from __future__ import annotations

from pathlib import Path

from dbsync.edges.embedded import EmbeddedStore
from dbsync.edges.secrets import redact_uri
from dbsync.edges.store import (
    ACCEPTED_URIS,
    EMBEDDED_SCHEME,
    MONGODB_SCHEMES,
    RetryPolicy,
    Store,
)
from dbsync.errors import UsageError


def open_store(uri: str, database: str, *, retry: RetryPolicy | None = None) -> Store:
    """The store a URI names: MongoDB for ``mongodb://``/``mongodb+srv://``, else embedded.

    Nothing is contacted yet for MongoDB (pymongo connects lazily); call ``ping`` to find out
    whether the server is there.
    """
    validate_database_name(database)
    if uri.startswith(MONGODB_SCHEMES):
        from dbsync.edges.mongo import open_mongo  # pymongo takes 0.3 s to import: only when needed

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
