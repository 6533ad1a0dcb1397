import json

import pytest

from dbsync.core import conflict
from dbsync.core.rules import Rules
from dbsync.core.snapshot import line_document, record_line

RULES = Rules(key=("_id",), timestamp="ts", preserve=("profit",))


def line(doc: dict) -> bytes:
    return record_line(json.dumps(doc, separators=(",", ":")).encode())


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        ({"$date": {"$numberLong": "1700000000000"}}, 1700000000000),
        ("2023-11-14T22:13:20", 1700000000000),
        ("2023-11-14T22:13:20Z", 1700000000000),
        ("2023-11-15T00:13:20+02:00", 1700000000000),
        (1700000000, 1700000000000),
        (1700000000.5, 1700000000500),
        (1700000000000, 1700000000000),
        ({"$numberLong": "1700000000000"}, 1700000000000),
        ("1700000000", 1700000000000),
        ({"$timestamp": {"t": 1700000000, "i": 3}}, 1700000000000),
        (None, None),
        ("not a date", None),
        (True, None),
        ({"$numberDouble": "NaN"}, None),
        ("Infinity", None),
    ],
)
def test_timestamps_normalise_to_utc_milliseconds(value, millis):
    assert conflict.timestamp_millis(value) == millis


def test_completeness_counts_non_empty_leaves():
    doc = {
        "a": 1,
        "b": None,
        "c": "",
        "d": [],
        "e": {},
        "f": {"g": 0, "h": [1, ""]},
        "i": {"$date": {"$numberLong": "0"}},
    }
    assert conflict.completeness(doc) == 4


def test_newer_timestamp_wins_whichever_side_it_is_on():
    old, new = (
        line({"_id": 1, "ts": "2024-01-01T00:00:00", "v": 1}),
        line({"_id": 1, "ts": "2024-02-01T00:00:00", "v": 2}),
    )
    for first, second in ((old, new), (new, old)):
        result = conflict.resolve(first, second, RULES)
        assert (result.winner, result.loser, result.rule) == (new, old, conflict.NEWER)


def test_a_missing_timestamp_is_the_oldest():
    stamped = line({"_id": 1, "ts": 5, "v": 1})
    bare = line({"_id": 1, "v": 2, "extra": 3})
    assert conflict.resolve(bare, stamped, RULES).winner == stamped


def test_then_the_more_complete_version_wins():
    thin = line({"_id": 1, "ts": 5, "v": 1, "note": ""})
    full = line({"_id": 1, "ts": 5, "v": 1, "note": "x"})
    result = conflict.resolve(thin, full, RULES)
    assert (result.winner, result.rule) == (full, conflict.MORE_COMPLETE)


def test_then_the_larger_content_hash_wins():
    a, b = line({"_id": 1, "ts": 5, "v": 1}), line({"_id": 1, "ts": 5, "v": 2})
    expected = max(a, b, key=lambda ln: ln[6:22])
    assert conflict.resolve(a, b, RULES).winner == expected
    assert conflict.resolve(b, a, RULES).winner == expected
    assert conflict.resolve(a, b, RULES).rule == conflict.LARGER_HASH


def test_preserved_fields_the_winner_lacks_come_from_the_loser():
    old = line({"_id": 1, "ts": 1, "profit": 10.5, "v": 1})
    new = line({"_id": 1, "ts": 2, "profit": None, "v": 2})
    result = conflict.resolve(old, new, RULES)
    assert result.winner == new and result.preserved == ("profit",)
    assert line_document(result.line) == {"_id": 1, "ts": 2, "profit": 10.5, "v": 2}
    assert result.line[6:22] != new[6:22]  # the hash follows the new content


def test_preserved_fields_the_winner_has_stay():
    old = line({"_id": 1, "ts": 1, "profit": 10.5})
    new = line({"_id": 1, "ts": 2, "profit": 11.0})
    assert conflict.resolve(old, new, RULES).line == new
