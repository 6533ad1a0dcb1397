"""The merge driver at the cost of the change: only the lines that differ between base, ours and
theirs are decoded and checked deeply; a lying line among them is refused as before."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from dbsync.core import snapshot
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, record_line, write_section
from dbsync.edges import pulled, snapshot_files
from dbsync.edges.snapshot_files import verify_file
from dbsync.integration import merge_driver
from dbsync.integration.merge_driver import merge_files

RULES = Rules(("_id",), "ts", ())
HEADER = Header("items", RULES)
OLD, NEW = "2025-01-01T00:00:00", "2025-02-01T00:00:00"


def body(n: int, value: str, ts: str = OLD) -> bytes:
    return orjson.dumps({"_id": n, "v": value, "ts": ts})


BASE = [body(n, f"record {n}") for n in range(1, 21)]


def snapshot_file(path: Path, bodies: list[bytes]) -> Path:
    """A file whose hashes and trailer are right whatever the bodies hold, in the order given."""
    handle = io.BytesIO()
    write_section(handle, HEADER, [record_line(b) for b in bodies])
    path.write_bytes(handle.getvalue())
    return path


def edited(bodies: list[bytes], **changes: bytes) -> list[bytes]:
    """``bodies`` with record ``n`` (``r<n>=...``) replaced."""
    replaced = {int(name[1:]): new for name, new in changes.items()}
    return [replaced.get(n, b) for n, b in enumerate(bodies, start=1)]


def merge(tmp_path: Path, base: list[bytes], ours: list[bytes], theirs: list[bytes]):
    paths = [
        snapshot_file(tmp_path / name, bodies)
        for name, bodies in (("base", base), ("ours", ours), ("theirs", theirs))
    ]
    before = paths[1].read_bytes()
    return merge_files(*paths, "items.jsonl"), paths[1], before


def line_of(path: Path, needle: bytes) -> int:
    lines = path.read_bytes().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if needle in line)


@pytest.mark.parametrize("ahead", [1, 150, snapshot_files.READ_BATCH_BYTES])
def test_only_the_changed_lines_are_decoded(tmp_path, monkeypatch, ahead):
    """However far the walk reads ahead to pass the unchanged runs (``align_batches``: each
    side a batch of the reader at a time, of ``ahead`` bytes, lines cut across batches)."""
    monkeypatch.setattr(snapshot_files, "READ_BATCH_BYTES", ahead)
    checked: list[bytes] = []
    original = snapshot.checked_document

    def counting(line: bytes):
        checked.append(line)
        return original(line)

    monkeypatch.setattr(snapshot, "checked_document", counting)
    ours = edited(BASE, r3=body(3, "ours"))
    theirs = edited(BASE, r9=body(9, "theirs"))
    result, path, _ = merge(tmp_path, BASE, ours, theirs)
    assert result.merged, result.message
    # record 3 and record 9 as each side holds them: 4 distinct lines of 60 (in a row one side
    # changed, the line the other two hold alike is decoded once)
    assert sorted(snapshot.line_body(line) for line in checked) == sorted(
        [BASE[2], body(3, "ours"), BASE[8], body(9, "theirs")]
    )
    assert verify_file(path).ok


@pytest.mark.parametrize("ahead", [1, 150, snapshot_files.READ_BATCH_BYTES])
def test_the_quick_walk_merges_as_the_full_verification_does(tmp_path, monkeypatch, ahead):
    """Same bytes, same counts, whichever way the versions were checked, however far the
    quick walk reads ahead (each side's batches of ``ahead`` bytes)."""
    monkeypatch.setattr(snapshot_files, "READ_BATCH_BYTES", ahead)
    ours = edited(BASE, r3=body(3, "ours"), r5=body(5, "ours", NEW), r7=body(7, "both"))
    theirs = [
        *edited(BASE, r5=body(5, "theirs"), r7=body(7, "both"), r9=body(9, "theirs"))[:-1],
        body(30, "added there"),
    ]
    results = []
    for name in ("quick", "full"):
        if name == "full":
            monkeypatch.setattr(merge_driver, "_merge_changes", _unused)
        (tmp_path / name).mkdir()
        result, path, _ = merge(tmp_path / name, BASE, ours, theirs)
        assert result.merged, result.message
        results.append((path.read_bytes(), result.message, vars(result.counts["items"])))
    (quick_bytes, quick_message, quick), (full_bytes, full_message, full) = results
    assert quick_bytes == full_bytes and quick_message == full_message
    assert {k: v for k, v in quick.items() if k != "conflicts"} == {
        k: v for k, v in full.items() if k != "conflicts"
    }
    assert (quick["conflicts_resolved"], quick["updated"], quick["deleted"]) == (1, 1, 1)


def _unused(*args: object) -> None:
    raise AssertionError("this way of merging was not expected to run")


@pytest.fixture
def quick_only(monkeypatch):
    """The merge may not fall back to verifying everything first."""
    monkeypatch.setattr(merge_driver, "_merge_verified", _unused)


def test_a_normal_merge_needs_no_full_verification(tmp_path, quick_only):
    ours = edited(BASE, r3=body(3, "ours"))
    theirs = [*edited(BASE, r9=body(9, "theirs"))[1:], body(25, "added there")]
    result, path, _ = merge(tmp_path, BASE, ours, theirs)
    assert result.merged, result.message
    assert verify_file(path).ok


@pytest.mark.parametrize(
    ("damaged", "changed"),
    [
        (("base", "ours", "theirs"), None),  # a line the same on every side: tested once
        (("theirs",), None),  # a line only theirs holds so
        (("ours",), "r12"),
        (("theirs",), "r4"),  # in a row another side changed
    ],
    ids=["every side", "theirs", "ours", "theirs, changed row"],
)
def test_a_line_whose_body_is_not_its_hash_is_refused_on_any_side(
    tmp_path, monkeypatch, damaged, changed
):
    """The walk tests each line's hash itself (read with ``hashes=False``), a line the same on
    every side once: a damaged line is refused wherever it is, whatever batch it falls in."""
    monkeypatch.setattr(snapshot_files, "READ_BATCH_BYTES", 300)
    ours = edited(BASE, **({changed: body(int(changed[1:]), "ours")} if changed else {}))
    sides = {"base": BASE, "ours": ours, "theirs": edited(BASE, r9=body(9, "theirs"))}
    paths = {name: snapshot_file(tmp_path / name, bodies) for name, bodies in sides.items()}
    for name in damaged:  # the body changed, its hash and the trailer left as they were
        data = paths[name].read_bytes()
        assert data.count(b'"record 4"') == 1
        paths[name].write_bytes(data.replace(b'"record 4"', b'"record X"'))
    before = paths["ours"].read_bytes()
    result = merge_files(paths["base"], paths["ours"], paths["theirs"], "items.jsonl")
    assert not result.merged
    assert "does not match its hash" in result.message
    assert paths["ours"].read_bytes() == before


def test_each_line_s_hash_is_tested_once_when_every_side_holds_it(tmp_path, monkeypatch):
    sides = {
        "base": BASE,
        "ours": edited(BASE, r3=body(3, "ours")),
        "theirs": edited(BASE, r9=body(9, "theirs")),
    }
    paths = [snapshot_file(tmp_path / name, bodies) for name, bodies in sides.items()]
    tested = []
    original = snapshot._hex_hash
    monkeypatch.setattr(snapshot, "_hex_hash", lambda body: tested.append(body) or original(body))
    result = merge_files(*paths, "items.jsonl")
    assert result.merged, result.message
    # 18 lines the same on every side once, records 3 and 9 on each of the three sides
    assert len(tested) == 18 + 6


LYING = b'{"_id":4,"v":{"$numberLong":"four"},"ts":"2025-01-01T00:00:00"}'
HAND_EDITED = b'{"_id": 4, "v": "spaced out", "ts": "2025-01-01T00:00:00"}'


@pytest.mark.parametrize(
    ("theirs", "problem"),
    [
        (edited(BASE, r4=LYING), "a value lies about its type"),
        (edited(BASE, r4=HAND_EDITED), "not written the way dbsync writes it"),
        (edited(BASE, r4=b'{"_id":4,"v":1'), "not valid JSON"),
        ([*BASE[:2], body(4, "early"), BASE[2], *BASE[4:]], "out of order"),
        ([*BASE[:3], body(4, "one"), body(4, "two"), *BASE[4:]], "duplicate key"),
        ([*BASE[:3], BASE[2], *BASE[4:]], "duplicate key"),  # a copy of its neighbour
    ],
    ids=["lying type", "hand-edited", "not json", "out of order", "twice", "neighbour twice"],
)
def test_a_lying_changed_line_is_refused_as_before(tmp_path, theirs, problem):
    """Re-hashed lines (their hash and the trailer are right) among the changed ones."""
    ours = edited(BASE, r12=body(12, "ours"))
    result, path, before = merge(tmp_path, BASE, ours, theirs)
    assert not result.merged
    assert "cannot merge items.jsonl record by record: their version, line" in result.message
    assert problem in result.message
    assert path.read_bytes() == before  # left as this side's version, a conflict for git


def test_a_lying_line_of_our_own_changes_names_our_version(tmp_path):
    ours = edited(BASE, r4=LYING)
    result, path, before = merge(tmp_path, BASE, ours, edited(BASE, r9=body(9, "theirs")))
    assert not result.merged
    assert f"our version, line {line_of(path, b'four')}: a value lies" in result.message
    assert path.read_bytes() == before


def test_a_lying_line_two_sides_hold_alike_is_refused_once_the_third_changes_it(tmp_path):
    """In a row only theirs changed, base and ours hold the same line, decoded once: the
    problem found in it still refuses the merge."""
    lying = edited(BASE, r4=LYING)
    result, path, before = merge(tmp_path, lying, lying, edited(BASE, r4=body(4, "theirs")))
    assert not result.merged
    assert "a value lies about its type" in result.message
    assert path.read_bytes() == before


def test_a_lying_line_the_same_on_every_side_passes_through_unchanged(tmp_path, quick_only):
    """Decided: a line byte-identical in base, ours and theirs is passed on as bytes, unread.

    The merge changes nothing about it: ours (this clone's own commit) already holds it, and the
    merged file holds it exactly as ours did. Refusing would leave git a textual conflict over a
    record neither side changed. It is not let into a database: the hook's merge that follows,
    ``dbsync merge`` and ``dbsync verify`` all check every line, and name this one.
    """
    lying = edited(BASE, r4=LYING)
    ours = edited(lying, r12=body(12, "ours"))
    theirs = edited(lying, r15=body(15, "theirs"))
    result, path, _ = merge(tmp_path, lying, ours, theirs)
    assert result.merged, result.message
    assert record_line(LYING) in path.read_bytes().splitlines(keepends=True)
    problems = verify_file(path).problems
    assert [(p.line, "a value lies about its type" in p.message) for p in problems] == [
        (line_of(path, b"four"), True)
    ]


@pytest.mark.parametrize("walk", ["quick", "full"])
def test_the_blob_ids_are_of_the_versions_as_given_whichever_walk_merged_them(
    tmp_path, monkeypatch, walk
):
    """The quick walk takes them from its own reads (no file read again); a merge it leaves
    to the full verification after reading part of the files reads them again, before OURS
    is replaced."""
    ours = edited(BASE, r3=body(3, "ours"))
    theirs = edited(BASE, r9=body(9, "theirs"))
    expected = {}
    for name, bodies in (("base", BASE), ("ours", ours), ("theirs", theirs)):
        expected[name] = pulled.file_digest(snapshot_file(tmp_path / f"{name}.copy", bodies))
    read_again = []
    original_digest = pulled.file_digest
    monkeypatch.setattr(
        pulled, "file_digest", lambda path: read_again.append(path) or original_digest(path)
    )
    monkeypatch.setattr(snapshot_files, "READ_BATCH_BYTES", 64)
    if walk == "full":
        original_walk = merge_driver._walk

        def gives_up(*args, **kwargs):
            yield next(original_walk(*args, **kwargs))
            raise RuntimeError("given up after the first row")

        monkeypatch.setattr(merge_driver, "_walk", gives_up)
    result, path, _ = merge(tmp_path, BASE, ours, theirs)
    assert result.merged, result.message
    assert result.decided is not None
    assert result.decided.blobs == expected
    assert len(read_again) == (3 if walk == "full" else 0)
    assert original_digest(path) != expected["ours"]  # OURS now holds the merge


def test_a_blob_digest_reads_the_file_again_only_when_the_reader_did_not_read_it_whole(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"0123456789" * 10)
    whole, part = pulled.BlobDigest(path), pulled.BlobDigest(path)
    with path.open("rb") as handle:
        while chunk := handle.read(7):
            whole.update(chunk)
    part.update(b"0123456789")
    assert whole.finish() == part.finish() == pulled.file_digest(path)
    path.write_bytes(b"changed")  # a finished digest is kept
    assert whole.finish() == part.finish() != pulled.file_digest(path)
