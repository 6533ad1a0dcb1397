"""MongoDB's official BSON corpus (tests/data/bson-corpus), as cases the tests iterate over.

The corpus format is described in mongodb/specifications source/bson-corpus/bson-corpus.md: each
file names a BSON type and lists ``valid`` cases (canonical BSON and its Extended JSON forms),
``decodeErrors`` (bad BSON bytes) and ``parseErrors`` (Extended JSON, or for Decimal128 a string,
that a parser must refuse).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "bson-corpus"


@dataclass(frozen=True)
class Valid:
    name: str
    bson: bytes  # canonical_bson
    canonical: str  # canonical_extjson
    relaxed: str | None
    degenerate_bson: bytes | None
    degenerate: str | None
    lossy: bool
    converted_bson: bytes | None  # what a deprecated type becomes (pymongo reads it so)
    deprecated: bool

    @property
    def stored(self) -> bytes:
        """The BSON a store holds after reading the case through pymongo."""
        return self.converted_bson or self.bson


@dataclass(frozen=True)
class ParseError:
    name: str
    text: str  # Extended JSON of one document


def _files() -> list[tuple[str, dict[str, object]]]:
    return [(path.stem, json.loads(path.read_text())) for path in sorted(CORPUS.glob("*.json"))]


def _hex(value: object) -> bytes | None:
    return bytes.fromhex(value) if isinstance(value, str) else None


def valid_cases() -> list[Valid]:
    cases = []
    for stem, spec in _files():
        for case in spec.get("valid", []):  # type: ignore[attr-defined]
            cases.append(
                Valid(
                    name=f"{stem}: {case['description']}",
                    bson=bytes.fromhex(case["canonical_bson"]),
                    canonical=case["canonical_extjson"],
                    relaxed=case.get("relaxed_extjson"),
                    degenerate_bson=_hex(case.get("degenerate_bson")),
                    degenerate=case.get("degenerate_extjson"),
                    lossy=bool(case.get("lossy")),
                    converted_bson=_hex(case.get("converted_bson")),
                    deprecated=bool(spec.get("deprecated")),
                )
            )
    return cases


def parse_error_cases() -> list[ParseError]:
    """Every parse error as one Extended JSON document (a Decimal128 string goes in a wrapper)."""
    cases = []
    for stem, spec in _files():
        decimal = spec.get("bson_type") == "0x13"
        for case in spec.get("parseErrors", []):  # type: ignore[attr-defined]
            text = case["string"]
            if decimal:
                text = json.dumps({"d": {"$numberDecimal": text}})
            cases.append(ParseError(f"{stem}: {case['description']}", text))
    return cases
