"""What several commands share: opening the configured store."""

from __future__ import annotations

from dbsync.config import Config
from dbsync.edges.store import RetryPolicy, Store, open_store


def open_configured_store(config: Config) -> Store:
    uri, database = config.require_database()
    return open_store(uri, database, retry=RetryPolicy(budget_seconds=config.retry_seconds))
