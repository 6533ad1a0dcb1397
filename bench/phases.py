"""The measured phases. Each runs alone in a fresh process, so that its peak memory is its own::

    python -m bench.phases PHASE FOLDER [STORE]

``FOLDER`` is what ``python -m bench.phases prepare FOLDER KIND SIZE SEED`` wrote (see
``bench.data``). The phase prints one JSON object on its last line of output: its time, its
peak resident memory and what it checked. Running one phase alone this way is also how to
profile it (``py-spy record -- python -m bench.phases merge FOLDER``).

Documents come from ``ours.bson``: raw BSON, as a store gives it, decoded by ``decode_raw``. The
encode phase gives every encoder the decoded documents (and dbsync's line the raw bytes too, as
export does) and does not count the decoding; export decodes what it reads, and counts it.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import bson
import orjson
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from bench.baselines import json_util_canonical, plain_merge
from bench.data import Params, prepare
from dbsync.config import CollectionConfig, Config
from dbsync.core import extjson
from dbsync.core.merge import decide
from dbsync.core.snapshot import Header, encode_record, line_body, write_section
from dbsync.edges.embedded import EmbeddedStore
from dbsync.edges.parts import MAX_FILE_BYTES, collection_files
from dbsync.edges.snapshot_files import read_sections, read_trailer_digest, verify_file
from dbsync.edges.sources import SourceSection
from dbsync.edges.store import Change, ChangeCounts, Redecide, decode_raw
from dbsync.runs.export import current_summary
from dbsync.runs.export import export as export_service
from dbsync.runs.merge import apply_plan, plan_collection

BATCH = 1000
WRITE_BUFFER = 1 << 20  # as dbsync.edges.files writes snapshots
CHECK_EVERY = 25  # encode: compare both encoders' output on every 25th batch of documents
ENCODE_SAMPLE = 100_000  # encode: per-document figures, on the first 100,000 at most
# wall-clock time by default; CPU time (``--clock cpu``) on a machine shared with other work
clock = time.process_time if os.environ.get("DBSYNC_BENCH_CLOCK") == "cpu" else time.perf_counter
Result = dict[str, Any]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def raw_documents(folder: Path) -> Iterator[bytes]:
    """This asset's documents in ``_id`` order, as the BSON bytes a store holds."""
    with (folder / "ours.bson").open("rb") as handle:
        while size_bytes := handle.read(4):
            yield size_bytes + handle.read(int.from_bytes(size_bytes, "little") - 4)


def database_batches(folder: Path) -> Iterator[list[dict[str, Any]]]:
    """This asset's documents in ``_id`` order, in batches, as pymongo decodes them."""
    for batch in raw_batches(folder):
        yield [decode_raw(raw) for raw in batch]


def raw_batches(folder: Path) -> Iterator[list[bytes]]:
    raws = raw_documents(folder)
    while batch := list(itertools.islice(raws, BATCH)):
        yield batch


class TimedSource:
    """The database's raw documents one by one; ``seconds`` is the time spent reading them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seconds = 0.0

    def __iter__(self) -> Iterator[bytes]:
        batches = raw_batches(self.folder)
        while True:
            started = clock()
            batch = next(batches, None)
            self.seconds += clock() - started
            if batch is None:
                return
            yield from batch


def _same_bson(
    docs: Sequence[dict[str, Any]], lines: Sequence[bytes], texts: Sequence[str]
) -> bool:
    """Both encodings read back to the very BSON documents they were made from."""
    for doc, line, text in zip(docs, lines, texts, strict=True):
        original = bson.encode(doc)
        ours = bson.encode(extjson.decode_document(line_body(line)))
        theirs = bson.encode(json_util.loads(text, json_options=CANONICAL_JSON_OPTIONS))
        if not original == ours == theirs:
            return False
    return True


def _timed(encode: Callable[[Any], Any], batch: Sequence[Any]) -> float:
    started = clock()
    for doc in batch:
        encode(doc)
    return clock() - started


def encode(folder: Path) -> Result:
    """Per document, on the same batches in turn (the order rotating): dbsync vs ``json_util``.

    ``extjson.encode_document`` does what ``json_util.dumps`` does (a document → its Extended
    JSON text); ``snapshot.encode_record`` adds the xxhash, the record line and the sort key.
    A per-document figure does not depend on the collection's size: the first
    ``ENCODE_SAMPLE`` documents are enough (json_util would take a minute over 1M).
    """
    key = Params.load(folder).rules.key
    encoders: list[Callable[[Any], Any]] = [
        lambda pair: extjson.encode_document(pair[1]),
        lambda pair: encode_record(pair[1], key, pair[0]),  # as export calls it: raw BSON too
        lambda pair: json_util_canonical(pair[1]),
    ]
    seconds = [0.0, 0.0, 0.0]
    documents = 0
    agree = True
    for number, raws in enumerate(raw_batches(folder)):
        if documents >= ENCODE_SAMPLE:
            break
        pairs = [(raw, decode_raw(raw)) for raw in raws]
        for turn in range(3):
            which = (number + turn) % 3
            seconds[which] += _timed(encoders[which], pairs)
        documents += len(pairs)
        if number % CHECK_EVERY == 0:  # not timed
            batch = [doc for _, doc in pairs]
            lines = [encode_record(doc, key, raw)[1] for raw, doc in pairs]
            agree = agree and _same_bson(batch, lines, [json_util_canonical(d) for d in batch])
    return {
        "documents": documents,
        "seconds": seconds[0],
        "record_seconds": seconds[1],
        "baseline_seconds": seconds[2],
        "checks": {"both encodings read back to the same BSON": agree},
    }


class PreparedDatabase:
    """The prepared documents as a read-only ``Store``, so that ``export`` runs as it does on a
    real database: the service, its sort, its key checks and its split into parts."""

    def __init__(self, folder: Path, collection: str, size: int) -> None:
        self.source, self.collection, self.size = TimedSource(folder), collection, size
        self.bytes = (folder / "ours.bson").stat().st_size

    def collection_names(self) -> list[str]:
        return [self.collection]

    def count(self, collection: str) -> int:
        return self.size

    def size_bytes(self, collection: str) -> int:
        return self.bytes

    def iter_raw_documents(self, collection: str, *, batch_size: int = 1000) -> Iterator[bytes]:
        return iter(self.source)  # export reads raw BSON and decodes it (counted in its time)

    def close(self) -> None:
        pass


def export(folder: Path) -> Result:
    """The ``dbsync export`` service (encode, sort, write; split into parts past 50 MB)."""
    params = Params.load(folder)
    config = Config(
        root=folder,
        uri=None,
        database="bench",
        asset="bench",
        snapshot_dir=folder / "parts",
        collections={params.collection: CollectionConfig(params.rules)},
    )
    database = PreparedDatabase(folder, params.collection, params.size)
    target = folder / "exported"
    shutil.rmtree(target, ignore_errors=True)  # a first export: no layout on disk yet
    started = clock()
    (result,) = export_service(config, database, target_dir=target)  # type: ignore[arg-type]
    seconds = clock() - started - database.source.seconds
    sizes = [path.stat().st_size for path in result.paths]
    prepared = (
        line for section in read_sections(folder / "ours.jsonl") for line in section.records
    )
    exported = collection_files(target)[params.collection].lines()
    same = all(a == b for a, b in itertools.zip_longest(prepared, exported))
    return {
        "documents": result.records,
        "seconds": seconds,
        "files": len(result.paths),
        "largest_file_bytes": max(sizes),
        "checks": {
            "the same records, byte for byte, as the prepared snapshot": same,
            "no file over 50 MB": max(sizes) <= MAX_FILE_BYTES,
        },
    }


def verify(folder: Path) -> Result:
    """``verify_file`` on this asset's snapshot: hashes, types, canonical form, order, trailer."""
    params = Params.load(folder)
    started = clock()
    result = verify_file(folder / "ours.jsonl")
    seconds = clock() - started
    expected = [(params.collection, params.expected["ours_records"])]
    return {
        "documents": params.expected["ours_records"],
        "seconds": seconds,
        "checks": {
            "no problem found": result.ok,
            "every record counted": result.sections == expected,
        },
    }


def merge(folder: Path) -> Result:
    """Three-way merge of base, ours and theirs files: ``decide`` over ``read_sections``."""
    params = Params.load(folder)
    started = clock()
    readers = [read_sections(folder / f"{name}.jsonl") for name in ("base", "ours", "theirs")]
    base, ours, theirs = (next(reader) for reader in readers)
    outcomes: Counter[str] = Counter()
    writes = 0

    def results() -> Iterator[bytes]:
        nonlocal writes
        for decision in decide(base.records, ours.records, theirs.records, ours.header.rules):
            outcomes[decision.outcome.value] += 1
            writes += decision.changes_ours
            if decision.result is not None:
                yield decision.result

    with (folder / "merged.jsonl").open("wb", buffering=WRITE_BUFFER) as handle:
        summary = write_section(handle, ours.header, results())
    for reader in readers:  # each file is checked to its end
        for _ in reader:
            pass
    seconds = clock() - started
    expected = params.expected
    return {
        "documents": params.size,
        "seconds": seconds,
        "records": summary.count,
        "conflicts": outcomes["conflict"],
        "writes": writes,
        "checks": {
            "merged record count as planned": summary.count == expected["merged_records"],
            "conflicts as planned": outcomes["conflict"] == expected["conflicts"],
        },
    }


def plain(folder: Path) -> Result:
    """The plain ``json`` + ``hashlib`` three-way merge of the same files (the baseline)."""
    params = Params.load(folder)
    started = clock()
    result = plain_merge(*(folder / f"{n}.jsonl" for n in ("base", "ours", "theirs", "plain")))
    seconds = clock() - started
    (folder / "plain-changed-ids.json").write_text(json.dumps(result.changed_ids))
    return {
        "documents": params.size,
        "seconds": seconds,
        "records": result.records,
        "conflicts": result.conflicts,
        "writes": result.writes,
        "checks": {
            "merged record count as planned": result.records == params.expected["merged_records"]
        },
    }


def merged_documents(path: Path) -> Iterator[Any]:
    with path.open("rb") as handle:
        next(handle)  # the header
        for line in handle:
            if line.startswith(b'{"end"'):
                return
            yield orjson.loads(line)["d"]


def compare(folder: Path) -> Result:
    """Not timed: dbsync's merged file and the plain one hold the same documents, in order."""
    merged = merged_documents(folder / "merged.jsonl")
    other = merged_documents(folder / "plain.jsonl")
    compared, difference = 0, None
    for mine, theirs in itertools.zip_longest(merged, other):
        if mine is None or theirs is None:
            difference = "one file holds more records than the other"
            break
        if mine != theirs:
            difference = f"record {compared + 1} differs"
            break
        compared += 1
    return {
        "documents": compared,
        "seconds": 0.0,
        "checks": {"merged record sets agree": difference is None},
        "difference": difference,
    }


class CountingStore:
    """Counts what ``apply_plan`` writes, and passes it on to a real store if there is one."""

    def __init__(self, inner: EmbeddedStore | None) -> None:
        self.inner = inner
        self.upserted: list[bytes] = []
        self.deleted: list[bytes] = []

    atomic_changes = True

    def apply_changes(
        self, collection: str, changes: Iterable[Change], redecide: Redecide
    ) -> ChangeCounts:
        def counted() -> Iterator[Change]:
            for change in changes:
                written = self.deleted if change.document is None else self.upserted
                written.append(_id_text(change.id))
                yield change

        if self.inner is not None:
            return self.inner.apply_changes(collection, counted(), redecide)
        for _ in counted():
            pass
        return ChangeCounts(written=len(self.upserted), deleted=len(self.deleted))


def _id_text(value: Any) -> bytes:
    return orjson.dumps(extjson.value_to_json(value), option=orjson.OPT_SORT_KEYS)


def _plain_changed_ids(folder: Path) -> list[bytes]:
    texts = json.loads((folder / "plain-changed-ids.json").read_text())
    return sorted(orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS) for text in texts)


def apply(folder: Path, store_name: str) -> Result:
    """``plan_collection`` (decide and spool) then ``apply_plan`` into a store, writes counted.

    ``store_name`` is ``embedded`` (montydb, loaded with this asset's documents first, not
    timed) or ``none`` (the writes are counted, nothing is stored).
    """
    params = Params.load(folder)
    rules, name = params.rules, params.collection
    inner = None
    if store_name == "embedded":
        inner = EmbeddedStore(folder / "store", "bench")
        for batch in database_batches(folder):
            inner.insert_many(name, batch)
    store = CountingStore(inner)
    header = Header(name, rules)
    started = clock()
    with tempfile.TemporaryDirectory(prefix="dbsync-bench-") as work:
        plan = plan_collection(
            name,
            rules,
            SourceSection(folder / "base.jsonl", header),
            folder / "ours.jsonl",
            SourceSection(folder / "theirs.jsonl", header),
            Path(work),
        )
        apply_plan(store, plan)  # type: ignore[arg-type]
    seconds = clock() - started
    written = sorted(store.upserted + store.deleted)
    checks = {
        "writes = changed records (per the plain merge)": written == _plain_changed_ids(folder),
        "decisions that change ours = writes": plan.counts.writes == len(written),
        "writes within the planned range": params.expected["writes_at_least"]
        <= len(written)
        <= params.expected["writes_at_most"],
    }
    if inner is not None:
        stored = current_summary(inner, name, rules)
        checks["store = merged snapshot"] = stored.digest == read_trailer_digest(
            folder / "merged.jsonl"
        )
        inner.close()
    return {
        "documents": params.size,
        "seconds": seconds,
        "writes": len(written),
        "upserts": len(store.upserted),
        "deletes": len(store.deleted),
        "store": store_name,
        "checks": checks,
    }


def interleaved(folder: Path) -> Result:
    """The three-way merge and its plain baseline timed in one process, in the order merge,
    plain, plain, merge: a change in the machine's load during the phase hits both alike
    (run in separate processes one after the other, one 10k ratio moved from 10.5x to 4.6x).
    Each figure is the sum of its two runs, halved. Peak memory is the separate phases'."""
    totals = {"merge": 0.0, "plain": 0.0}
    for name in ("merge", "plain", "plain", "merge"):
        totals[name] += PHASES[name](folder)["seconds"] / 2
    return {
        "documents": Params.load(folder).size,
        "seconds": totals["merge"] + totals["plain"],
        "merge_seconds": totals["merge"],
        "plain_seconds": totals["plain"],
        "checks": {},
    }


PHASES: dict[str, Callable[..., Result]] = {
    "encode": encode,
    "export": export,
    "verify": verify,
    "merge": merge,
    "plain": plain,
    "compare": compare,
    "apply": apply,
    "interleaved": interleaved,
}


def main(argv: list[str]) -> None:
    phase, folder, *rest = argv
    if phase == "prepare":
        kind, size, seed = rest
        started = clock()
        params = prepare(Path(folder), kind, int(size), int(seed))
        result: Result = {"documents": params.size, "seconds": clock() - started, "checks": {}}
    else:
        result = PHASES[phase](Path(folder), *rest)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
