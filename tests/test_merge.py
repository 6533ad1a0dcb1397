import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbsync.core import merge as merge_module
from dbsync.core.merge import (
    MODIFIED_BEATS_DELETED,
    MergeCounts,
    Outcome,
    align,
    align_runs,
    decide,
)
from dbsync.core.rules import Rules
from dbsync.core.snapshot import line_document, line_sort_key, record_line
from dbsync.errors import InvalidInput

RULES = Rules(key=("_id",), timestamp="ts")


def rec(_id, ts=1, **fields) -> bytes:
    doc = {"_id": _id, "ts": ts, **fields}
    return record_line(json.dumps(doc, separators=(",", ":")).encode())


def snap(*lines: bytes) -> list[bytes]:
    return sorted(lines, key=lambda line: line_sort_key(line, ("_id",)))


def merged(base, ours, theirs, rules=RULES) -> list[bytes]:
    return [d.result for d in decide(base, ours, theirs, rules) if d.result is not None]


def outcomes(base, ours, theirs, rules=RULES):
    return {
        line_document(d.result or d.ours or d.theirs)["_id"]: d.outcome
        for d in decide(base, ours, theirs, rules)
    }


# ------------------------------------------------------------- literal cases, three-way


def test_a_record_changed_on_one_side_only_takes_that_change():
    base = snap(rec(1, v=1), rec(2, v=1))
    ours = snap(rec(1, v=1), rec(2, ts=2, v=2))
    theirs = snap(rec(1, ts=3, v=3), rec(2, v=1))
    assert merged(base, ours, theirs) == [rec(1, ts=3, v=3), rec(2, ts=2, v=2)]
    assert outcomes(base, ours, theirs) == {1: Outcome.UPDATED, 2: Outcome.KEPT_LOCAL}


def test_a_deletion_on_one_side_propagates_when_the_other_did_not_change():
    base = snap(rec(1), rec(2), rec(3))
    ours = snap(rec(1), rec(3))
    theirs = snap(rec(1), rec(2))
    assert merged(base, ours, theirs) == [rec(1)]
    assert outcomes(base, ours, theirs) == {
        1: Outcome.COMMON,
        2: Outcome.DELETED_LOCALLY,
        3: Outcome.DELETED,
    }


def test_a_deleted_record_that_the_other_side_changed_is_kept():
    base = snap(rec(1, v=1))
    ours = snap()
    theirs = snap(rec(1, ts=2, v=2))
    decisions = list(decide(base, ours, theirs, RULES))
    assert [d.result for d in decisions] == [rec(1, ts=2, v=2)]
    assert decisions[0].rule == MODIFIED_BEATS_DELETED


def test_both_changed_differently_the_rule_decides_and_the_loser_is_kept_in_the_decision():
    base = snap(rec(1, v=1))
    ours = snap(rec(1, ts=5, v="ours"))
    theirs = snap(rec(1, ts=4, v="theirs"))
    (decision,) = decide(base, ours, theirs, RULES)
    assert decision.outcome is Outcome.CONFLICT
    assert (decision.result, decision.loser, decision.rule) == (
        ours[0],
        theirs[0],
        "newer timestamp",
    )


def test_added_on_both_sides_identically_is_one_common_record():
    assert outcomes(snap(), snap(rec(7)), snap(rec(7))) == {7: Outcome.COMMON}


def test_deleted_on_both_sides_is_gone():
    assert merged(snap(rec(1)), snap(), snap()) == []


# ------------------------------------------------------------- literal cases, two-way


def test_two_way_is_a_union_and_deletes_nothing():
    ours = snap(rec(1), rec(2, ts=2, v="new"))
    theirs = snap(rec(2, v="old"), rec(3))
    assert merged(None, ours, theirs) == [rec(1), rec(2, ts=2, v="new"), rec(3)]
    assert outcomes(None, ours, theirs) == {
        1: Outcome.LOCAL_ONLY,
        2: Outcome.CONFLICT,
        3: Outcome.REMOTE_ONLY,
    }


def test_natural_keys_recognise_one_record_under_two_ids():
    rules = Rules(key=("user", "ticker"), timestamp="ts")
    ours = [record_line(b'{"_id":"a1","user":"u","ticker":"SOL","ts":1}')]
    theirs = [record_line(b'{"_id":"b7","user":"u","ticker":"SOL","ts":1}')]
    decisions = list(decide(None, ours, theirs, rules))
    assert len(decisions) == 1 and decisions[0].outcome is Outcome.CONFLICT


def test_counts_follow_the_decisions():
    counts = MergeCounts()
    for decision in decide(None, snap(rec(1), rec(2, v=1)), snap(rec(2, ts=2, v=2), rec(3)), RULES):
        counts.add(decision, ("_id",))
    assert (counts.local_only, counts.remote_only, counts.common) == (1, 1, 0)
    assert (counts.conflicts_resolved, counts.total, counts.writes) == (1, 3, 2)
    assert counts.conflicts[0]["key"] == {"_id": 2}
    assert counts.conflicts[0]["loser"]["v"] == 1


def test_align_pairs_lines_by_key_and_passes_identical_lines_through():
    a = snap(rec(1), rec(2), rec(4))
    b = snap(rec(1), rec(3), rec(4))
    assert list(align([a, b], ("_id",))) == [
        (rec(1), rec(1)),
        (rec(2), None),
        (None, rec(3)),
        (rec(4), rec(4)),
    ]


# ------------------------------------------------------------- properties


KEYS = st.integers(0, 12)
VERSION = st.tuples(st.integers(0, 5), st.sampled_from(["a", "b", "", None]))
STATES = st.dictionaries(KEYS, VERSION, max_size=10)


def lines_of(state: dict) -> list[bytes]:
    return snap(*(rec(k, ts=ts, v=v) for k, (ts, v) in state.items()))


def expanded(items, width):
    """``align_runs``'s runs as the rows ``align`` gives of them."""
    for item in items:
        yield from ([(line,) * width for line in item] if isinstance(item, list) else [item])


def reference_align(streams, fields):
    """The rows ``align`` gives, one key at a time as it once read them: a line at the head of
    every stream passed on, else the lines of the smallest key; a key computed only for a line
    in a row that is not the same on every stream, and checked to sort after the last one
    computed of its stream."""
    heads = [[iter(stream), None, None, None] for stream in streams]  # lines, line, key, previous

    def advance(head):
        if head[2] is not None:
            head[3] = head[2]
        head[1], head[2] = next(head[0], None), None

    def key(head):
        if head[2] is None:
            head[2] = line_sort_key(head[1], fields)
            if head[3] is not None and not head[3] < head[2]:
                raise InvalidInput("records are not sorted by key (or a key appears twice)")
        return head[2]

    for head in heads:
        advance(head)
    while True:
        lines = tuple(head[1] for head in heads)
        if lines[0] is not None and lines.count(lines[0]) == len(lines):
            yield lines
            for head in heads:
                advance(head)
            continue
        present = [head for head in heads if head[1] is not None]
        if not present:
            return
        smallest = min(key(head) for head in present)
        row = []
        for head in heads:
            taken = head[1] is not None and key(head) == smallest
            row.append(head[1] if taken else None)
            if taken:
                advance(head)
        yield tuple(row)


def aligned(function, streams):
    try:
        return list(function(streams, ("_id",)))
    except InvalidInput as error:
        return error.message


RAW_LINES = st.lists(st.sampled_from([rec(k, v=v) for k in range(8) for v in "ab"]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    states=st.lists(st.one_of(STATES, RAW_LINES), min_size=2, max_size=3),
    read_ahead=st.integers(1, 4),
)
def test_property_align_runs_gives_the_rows_one_key_at_a_time_gives(
    states, read_ahead, monkeypatch_ahead
):
    """Whatever the streams (sorted or not, keys twice or not) and however far each reads
    ahead: the rows of a walk one key at a time, or the same refusal of an unsorted stream."""
    streams = [lines_of(s) if isinstance(s, dict) else s for s in states]
    monkeypatch_ahead(read_ahead)
    runs = aligned(align_runs, streams)
    expected = aligned(reference_align, streams)
    assert (runs if isinstance(runs, str) else list(expanded(runs, len(streams)))) == expected
    assert aligned(align, streams) == expected


def test_align_runs_reads_ahead_a_bounded_number_of_bytes():
    """Large documents: each stream holds about ``RUN_BYTES`` ahead, not ``RUN_LINES`` lines."""
    pulled = [0, 0]
    big = [rec(n, blob="x" * 100_000) for n in range(200)]

    def stream(side):
        for line in big:
            pulled[side] += 1
            yield line

    first = next(align_runs([stream(0), stream(1)], ("_id",)))
    assert isinstance(first, list) and first[0] == big[0]
    most = merge_module.RUN_BYTES // 100_000 + merge_module.READ_STEP
    assert 0 < pulled[0] <= most and 0 < pulled[1] <= most


@pytest.fixture(scope="module")
def monkeypatch_ahead():
    """Set how far ``align_runs`` reads ahead (a module fixture: hypothesis runs the test
    body many times per call)."""
    before = merge_module.RUN_LINES, merge_module.READ_STEP

    def set_ahead(lines: int) -> None:
        merge_module.RUN_LINES = lines
        merge_module.READ_STEP = max(1, lines // 2)

    yield set_ahead
    merge_module.RUN_LINES, merge_module.READ_STEP = before


@settings(max_examples=200, deadline=None)
@given(STATES, STATES, st.one_of(st.none(), STATES))
def test_property_merge_is_symmetric(ours, theirs, base):
    base_lines = None if base is None else lines_of(base)
    left = merged(base_lines, lines_of(ours), lines_of(theirs))
    right = merged(base_lines, lines_of(theirs), lines_of(ours))
    assert left == right


@settings(max_examples=200, deadline=None)
@given(STATES, STATES)
def test_property_two_way_merge_is_idempotent_and_deterministic(ours, theirs):
    once = merged(None, lines_of(ours), lines_of(theirs))
    assert merged(None, once, lines_of(theirs)) == once
    assert merged(None, once, once) == once
    assert merged(None, lines_of(ours), lines_of(theirs)) == once


@settings(max_examples=200, deadline=None)
@given(STATES, STATES, STATES)
def test_property_two_way_merge_is_associative_without_preserve(a, b, c):
    a, b, c = lines_of(a), lines_of(b), lines_of(c)
    assert merged(None, merged(None, a, b), c) == merged(None, a, merged(None, b, c))


@settings(max_examples=200, deadline=None)
@given(STATES, STATES, STATES)
def test_property_three_way_takes_every_one_sided_change(base, ours, theirs):
    result = {
        line_document(line)["_id"]: line
        for line in merged(lines_of(base), lines_of(ours), lines_of(theirs))
    }
    b, o, t = (
        dict(zip((line_document(ln)["_id"] for ln in lines_of(s)), lines_of(s), strict=True))
        for s in (base, ours, theirs)
    )
    for key in set(b) | set(o) | set(t):
        if o.get(key) == b.get(key):
            assert result.get(key) == t.get(key)
        elif t.get(key) == b.get(key):
            assert result.get(key) == o.get(key)


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(5, 60))
def test_property_three_assets_exchanging_files_converge_and_the_newest_wins(rng, steps):
    """Assets edit records (each edit newer than every earlier one) and mail each other their
    snapshots in a random order; after everyone has heard from everyone, all hold the same
    bytes and every record is its newest version."""
    assets = [{} for _ in range(3)]
    clock = 0
    newest = {}
    for _ in range(steps):
        if rng.random() < 0.5:
            clock += 1
            asset, key = rng.randrange(3), rng.randrange(8)
            version = (clock, rng.choice(["x", "y", ""]))
            assets[asset][key] = version
            newest[key] = version
        else:
            sender, receiver = rng.sample(range(3), 2)
            union = merged(None, lines_of(assets[receiver]), lines_of(assets[sender]))
            assets[receiver] = {
                line_document(ln)["_id"]: (line_document(ln)["ts"], line_document(ln)["v"])
                for ln in union
            }
    for sender, receiver in [(0, 1), (1, 2), (2, 0), (0, 1), (1, 2)]:
        union = merged(None, lines_of(assets[receiver]), lines_of(assets[sender]))
        assets[receiver] = {
            line_document(ln)["_id"]: (line_document(ln)["ts"], line_document(ln)["v"])
            for ln in union
        }
    snapshots = [lines_of(state) for state in assets]
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert assets[0] == newest


PRESERVING = Rules(key=("_id",), timestamp="ts", preserve=("p",))


def prec(_id, ts, p, v) -> bytes:
    doc = {"_id": _id, "ts": ts, "v": v}
    if p is not None:
        doc["p"] = p
    return record_line(json.dumps(doc, separators=(",", ":")).encode())


def test_preserve_cannot_be_associative_and_this_is_the_witness():
    """Documented in docs/merge.md: A is newest and lacks p; B and C are older and disagree on p.
    Merging A with B first keeps B's p; merging A with C first keeps C's. No rule that keeps a
    winner's own value and fills the gaps from losers can be associative (two different
    histories produce the same intermediate document), so dbsync guarantees convergence by
    commutativity and a monotone rank instead: see the next test."""
    a, b, c = [prec(1, 3, None, "a")], [prec(1, 2, 1, "b")], [prec(1, 1, 2, "c")]
    ab_c = merged(None, merged(None, a, b, PRESERVING), c, PRESERVING)
    ac_b = merged(None, merged(None, a, c, PRESERVING), b, PRESERVING)
    assert line_document(ab_c[0])["p"] == 1 and line_document(ac_b[0])["p"] == 2


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(5, 60))
def test_property_with_preserve_assets_still_converge_and_the_newest_body_wins(rng, steps):
    assets = [{} for _ in range(3)]
    clock, newest = 0, {}

    def exchange(sender, receiver):
        union = merged(
            None, list(assets[receiver].values()), list(assets[sender].values()), PRESERVING
        )
        assets[receiver] = {line_document(ln)["_id"]: ln for ln in union}

    for _ in range(steps):
        if rng.random() < 0.5:
            clock += 1
            asset, key = rng.randrange(3), rng.randrange(6)
            line = prec(key, clock, rng.choice([None, "", 1, 2]), rng.choice("xyz"))
            assets[asset][key] = line
            newest[key] = line_document(line)["v"]
        else:
            exchange(*rng.sample(range(3), 2))
        for state in assets:  # keep each asset's dict in key order
            items = sorted(state.items())
            state.clear()
            state.update(items)
    for _ in range(10):
        before = [list(state.values()) for state in assets]
        for sender, receiver in [(0, 1), (1, 2), (2, 0)]:
            exchange(sender, receiver)
            assets[receiver] = dict(sorted(assets[receiver].items()))
        if [list(state.values()) for state in assets] == before:
            break
    assert list(assets[0].values()) == list(assets[1].values()) == list(assets[2].values())
    assert {k: line_document(ln)["v"] for k, ln in assets[0].items()} == newest
