"""What the tests of reads through the change index share: a small PNL project and a count of
the documents encoded."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from dbsync.core import snapshot
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


def count_checked_lines(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every snapshot line checked deeply (types, canonical form), wherever it is done: by a
    full verification, or only for the lines a walk found changed (``ChangedLineChecks``)."""
    seen: list[bytes] = []
    original = snapshot.checked_document

    def counting(line: bytes) -> Any:
        seen.append(line)
        return original(line)

    monkeypatch.setattr(snapshot, "checked_document", counting)
    return seen
