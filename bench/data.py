"""Synthetic collections and the three snapshots of a merge: base, ours and theirs.

Two kinds of documents, both as pymongo decodes them:

* ``pnl`` — like ``tests/data/telegrampnl-pnls.json``: ObjectId ``_id``, user ids, tickers, float
  profits, ISO timestamps as strings, occasional nulls. Keyed as PRODUCT.md configures
  ``pnl_data`` (``user_id, username, timestamp, ticker``, with ``preserve``), so export really
  sorts and conflicts go to the completeness and hash rules and to ``preserve``.
* ``mixed`` — Int64, Int32 and Python ints beyond Int32, Decimal128, dates, binary (subtypes 0
  and 4), nested documents and arrays, a rare NaN. Keyed by ``_id``; the newer ``updated`` wins.

Everything derives from the seed and a document's index, so every run builds the same data.
Each side changes 1 % of the records (at least 10): edits, inserts, deletes, some records
changed on both sides (conflicts, deleted on one side and edited on the other) and some changed
identically on both. ``prepare`` writes what the phases read into one folder.
"""

from __future__ import annotations

import datetime
import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import bson
from bson import Binary, Decimal128, Int64, ObjectId

from dbsync.core.ordering import SortKey
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, encode_record, write_section

KINDS = ("pnl", "mixed")
RULES = {
    "pnl": Rules(
        key=("user_id", "username", "timestamp", "ticker"),
        timestamp="timestamp",
        preserve=("user_id", "profit_usd", "profit_sol", "ticker"),
    ),
    "mixed": Rules(key=("_id",), timestamp="updated"),
}
COLLECTION = {"pnl": "pnl_data", "mixed": "events"}

Document = dict[str, Any]

_OID_EPOCH = 0x6865E26E  # the seconds in the first ObjectId of the real PNL data
_OID_MACHINE = bytes.fromhex("00db2977eb")
_PNL_START = datetime.datetime(2025, 4, 8)
_MIXED_START = datetime.datetime(2024, 1, 1)
_TICKERS = (
    "DFDF XENO EDUARDO THUMB_MAN BONK WIF POPCAT MEW SLERF BOME MICHI GIGA FWOG MOODENG PNUT "
    "CHILLGUY GOAT ZEREBRO AI16Z FARTCOIN"
).split()
_TAGS = ("alpha", "beta", "gamma", "delta", "ops", "prod", "eu", "us")


def object_id(index: int) -> ObjectId:
    """Increasing with ``index``, as a real ``_id`` is (time, machine, counter)."""
    seconds = (_OID_EPOCH + index // 50).to_bytes(4, "big")
    return ObjectId(seconds + _OID_MACHINE + (index & 0xFFFFFF).to_bytes(3, "big"))


class Generator:
    """The documents of one kind, by index; ``rng`` draws from one stream, so go in order."""

    def __init__(self, kind: str, seed: int, stream: str = "base") -> None:
        self.kind = kind
        self.rng = random.Random(f"{kind}:{seed}:{stream}")
        users = random.Random(f"users:{seed}")
        self.users = [
            (f"historical_{users.randrange(-(2**63), 2**63)}", f"@trader{users.randrange(10**6)}")
            for _ in range(2000)
        ]

    def document(self, index: int) -> Document:
        return self._pnl(index) if self.kind == "pnl" else self._mixed(index)

    def _pnl(self, index: int) -> Document:
        r = self.rng
        user_id, username = self.users[r.randrange(len(self.users))]
        profit = round(r.uniform(-40.0, 1500.0), 2)
        return {
            "_id": object_id(index),
            "user_id": user_id,
            "username": username,
            "ticker": r.choice(_TICKERS),
            "initial_investment": round(r.uniform(5.0, 100.0), 2),
            "profit_usd": profit,
            "profit_sol": None if r.random() < 0.02 else profit / r.uniform(140.0, 160.0),
            "currency": "USD",
            # unique per record: the timestamp is part of the key
            "timestamp": (_PNL_START + datetime.timedelta(seconds=index * 61)).isoformat(),
            "screenshot": f"https://cdn.example/pnl/{index}.png" if r.random() < 0.08 else None,
            "is_historical": r.random() < 0.7,
        }

    def _mixed(self, index: int) -> Document:
        r = self.rng
        created = _MIXED_START + datetime.timedelta(milliseconds=r.randrange(3 * 10**10))
        return {
            "_id": object_id(index),
            "seq": Int64(index * 1_000_003 + 7),
            "count": r.randrange(10_000),
            "total": r.randrange(2**40, 2**62),  # a Python int beyond Int32: $numberLong
            "ratio": float("nan") if index % 1000 == 999 else r.random(),
            "price": Decimal128(f"{r.randrange(10**7)}.{r.randrange(100):02d}"),
            "created": created,
            "updated": created + datetime.timedelta(milliseconds=r.randrange(10**9)),
            "payload": r.randbytes(16),
            "ref": Binary(r.randbytes(16), 4),
            "tags": [r.choice(_TAGS) for _ in range(r.randrange(3))] + [r.randrange(100)],
            "owner": {
                "name": f"user{r.randrange(10**5)}",
                "level": r.randrange(10),
                "geo": {"lat": r.uniform(-90, 90), "lon": r.uniform(-180, 180)},
            },
            "note": None if r.random() < 0.7 else f"note {r.randrange(10**6)}",
        }


def documents(kind: str, seed: int, indexes: range, stream: str = "base") -> Iterator[Document]:
    generator = Generator(kind, seed, stream)
    for index in indexes:
        yield generator.document(index)


# ---------------------------------------------------------------- what each side changes

EDIT, COMPLETE, EMPTIER, SAME, DELETE = "edit", "complete", "emptier", "same", "delete"
TIE_EDIT, TIE_COMPLETE = "tie-edit", "tie-complete"
_CONFLICTS = {
    # both sides changed a record differently: pairs of (ours, theirs) edits, in turn
    "pnl": [(EDIT, COMPLETE), (EDIT, EDIT), (EMPTIER, EDIT), (EDIT, EMPTIER), (COMPLETE, EDIT)],
    "mixed": [(EDIT, EDIT), (TIE_EDIT, TIE_COMPLETE), (TIE_EDIT, TIE_EDIT), (EMPTIER, EDIT)],
}


@dataclass(frozen=True)
class Counts:
    """How many records of each kind of change; ``per_side`` is 1 % of the size, at least 10."""

    per_side: int
    conflicts: int  # changed differently on both sides
    identical: int  # changed the same way on both sides
    deleted_vs_edited: int  # per direction: deleted on one side, edited on the other
    deletes: int  # per side, the other side unchanged
    inserts: int  # per side
    edits: int  # per side, the other side unchanged

    @classmethod
    def for_size(cls, size: int) -> Counts:
        per_side = max(10, size // 100)
        conflicts, identical = max(1, per_side // 10), max(1, per_side // 50)
        deleted_vs_edited, deletes = max(1, per_side // 50), max(1, per_side // 20)
        inserts = max(1, per_side // 20)
        edits = per_side - conflicts - identical - 2 * deleted_vs_edited - deletes - inserts
        return cls(per_side, conflicts, identical, deleted_vs_edited, deletes, inserts, edits)

    def expected(self, size: int) -> dict[str, int]:
        """Figures any correct merge must reproduce, and the range of its writes to ours."""
        theirs_only = self.edits + self.inserts + self.deletes + self.deleted_vs_edited
        return {
            "base_records": size,
            "ours_records": size + self.inserts - self.deletes - self.deleted_vs_edited,
            "theirs_records": size + self.inserts - self.deletes - self.deleted_vs_edited,
            "merged_records": size + 2 * self.inserts - 2 * self.deletes,
            "conflicts": self.conflicts + 2 * self.deleted_vs_edited,
            "writes_at_least": theirs_only,
            "writes_at_most": theirs_only + self.conflicts,
        }


def change_plan(kind: str, size: int, seed: int) -> dict[int, tuple[str | None, str | None]]:
    """Base index → (what ours did, what theirs did); None means unchanged."""
    counts = Counts.for_size(size)
    c = counts
    needed = 2 * c.edits + c.conflicts + c.identical + 2 * c.deleted_vs_edited + 2 * c.deletes
    picked = iter(random.Random(f"plan:{kind}:{seed}").sample(range(size), needed))
    plan: dict[int, tuple[str | None, str | None]] = {}

    def take(count: int, actions: tuple[str | None, str | None]) -> None:
        for _ in range(count):
            plan[next(picked)] = actions

    take(c.edits, (EDIT, None))
    take(c.edits, (None, EDIT))
    take(c.deletes, (DELETE, None))
    take(c.deletes, (None, DELETE))
    take(c.deleted_vs_edited, (DELETE, EDIT))
    take(c.deleted_vs_edited, (EDIT, DELETE))
    take(c.identical, (SAME, SAME))
    pairs = _CONFLICTS[kind]
    for number in range(c.conflicts):
        take(1, pairs[number % len(pairs)])
    return plan


def changed(kind: str, doc: Document, action: str, rng: random.Random) -> Document | None:
    """The document after one side's change (a new dict; ``doc`` is left alone)."""
    if action == DELETE:
        return None
    new = dict(doc)
    if kind == "pnl":
        profit = round(rng.uniform(-40.0, 1500.0), 2)
        new["profit_usd"], new["profit_sol"] = profit, profit / rng.uniform(140.0, 160.0)
        if action == COMPLETE:
            new["screenshot"] = f"https://cdn.example/pnl/{rng.randrange(10**9)}.png"
        elif action == EMPTIER:  # one field emptied, one filled: as complete as before
            new["profit_usd"] = None
            new["screenshot"] = new["screenshot"] or "https://cdn.example/pnl/retaken.png"
        return new
    new["count"], new["ratio"] = rng.randrange(10_000), rng.random()
    tie = action in (TIE_EDIT, TIE_COMPLETE)
    step = 1000 if tie else rng.randrange(1, 10**8)
    new["updated"] = doc["updated"] + datetime.timedelta(milliseconds=step)
    if action in (COMPLETE, TIE_COMPLETE):
        new["note"] = f"completed {rng.randrange(10**6)}"
    elif action == EMPTIER:
        new["note"], new["tags"] = None, []
    return new


def side_version(kind: str, seed: int, side: str, index: int, doc: Document, action: str) -> Any:
    # an identical change on both sides draws from one stream; otherwise each side its own
    stream = "both" if action == SAME else side
    return changed(kind, doc, action, random.Random(f"{seed}:{stream}:{index}"))


# ---------------------------------------------------------------- writing the inputs


@dataclass(frozen=True)
class Params:
    kind: str
    size: int
    seed: int
    collection: str
    expected: dict[str, int]
    prepare_seconds: float

    @property
    def rules(self) -> Rules:
        return RULES[self.kind]

    @classmethod
    def load(cls, folder: Path) -> Params:
        return cls(**json.loads((folder / "params.json").read_text()))


def prepare(folder: Path, kind: str, size: int, seed: int) -> Params:
    """Write ``ours.bson`` (this asset's database) and ``{base,ours,theirs}.jsonl``."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rules, plan = RULES[kind], change_plan(kind, size, seed)
    counts = Counts.for_size(size)
    records: dict[str, list[tuple[SortKey, bytes]]] = {"base": [], "ours": [], "theirs": []}
    with (folder / "ours.bson").open("wb") as database:
        for index, doc in enumerate(documents(kind, seed, range(size))):
            pair = encode_record(doc, rules.key)
            records["base"].append(pair)
            for side, action in zip(("ours", "theirs"), plan.get(index, (None, None)), strict=True):
                version = (
                    doc if action is None else side_version(kind, seed, side, index, doc, action)
                )
                if version is not None:
                    records[side].append(
                        pair if version is doc else encode_record(version, rules.key)
                    )
                    if side == "ours":
                        database.write(bson.encode(version))
        start = size
        for side in ("ours", "theirs"):
            inserted = range(start, start + counts.inserts)
            for doc in documents(kind, seed, inserted, stream=f"inserts:{side}"):
                records[side].append(encode_record(doc, rules.key))
                if side == "ours":
                    database.write(bson.encode(doc))
            start += counts.inserts
    header = Header(COLLECTION[kind], rules)
    for name, pairs in records.items():
        pairs.sort(key=itemgetter(0))
        with (folder / f"{name}.jsonl").open("wb") as handle:
            write_section(handle, header, (line for _, line in pairs))
    params = Params(
        kind, size, seed, COLLECTION[kind], counts.expected(size), time.perf_counter() - started
    )
    (folder / "params.json").write_text(json.dumps(asdict(params), indent=1))
    return params
