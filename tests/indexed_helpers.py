"""What the tests of reads through the change index share: a small PNL project and a count of
the documents encoded."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from dbsync.core.snapshot import encode_record

TOML = 'database = "dbsync_test"\n[collections.pnl]\nkey = ["user", "ticker"]\ntimestamp = "at"\n'


def docs(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"_id": i, "user": f"u{i % 7}", "ticker": f"T{i}", "at": f"2025-01-{1 + i % 28:02d}"}
        for i in range(start, start + n)
    ]


def count_encodings(monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> list[Any]:
    """The ``_id`` of every document the ``encode_record`` of ``modules`` encodes."""
    calls: list[Any] = []

    def counting(document: Any, fields: Any, raw: Any = None) -> Any:
        calls.append(document["_id"])
        return encode_record(document, fields, raw)

    for module in modules:
        monkeypatch.setattr(module, "encode_record", counting)
    return calls
