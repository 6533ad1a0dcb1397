"""How a collection's records are identified and how conflicts between them are decided.

Its own module so that ``config`` can build ``Rules`` without importing the snapshot format.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rules:
    """How a collection's records are identified and how conflicts between them are decided."""

    key: tuple[str, ...] = ("_id",)
    timestamp: str | None = None
    preserve: tuple[str, ...] = ()
