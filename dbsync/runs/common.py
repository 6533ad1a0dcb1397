"""What several commands share: opening the configured store."""

from __future__ import annotations

import sys

from dbsync.config import Config
from dbsync.edges.store import RetryPolicy, Store
from dbsync.edges.stores import open_store


def say_waiting(message: str) -> None:
    """A wait on the database, said at once (on stderr, where hooks and the agent's log see
    it too), so that a retried call is never silent."""
    print(f"dbsync: {message}", file=sys.stderr, flush=True)


def open_configured_store(config: Config) -> Store:
    uri, database = config.require_database()
    retry = RetryPolicy(budget_seconds=config.retry_seconds, announce=say_waiting)
    return open_store(uri, database, retry=retry)
