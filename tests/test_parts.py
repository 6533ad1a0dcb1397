"""Collections past 50 MB are split into parts by key hash: tested with small limits."""

import shutil

import pytest

from dbsync.config import load_config
from dbsync.core import ordering, snapshot
from dbsync.edges import parts, snapshot_files
from dbsync.errors import InvalidInput
from dbsync.integration.merge_driver import merge_files
from dbsync.runs import export as export_module
from dbsync.runs.diff import diff_paths
from dbsync.runs.export import export
from dbsync.runs.merge import MergeOptions, merge_snapshot
from dbsync.runs.stats import collection_stats
from dbsync.runs.verify import verify_path


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    monkeypatch.setattr(parts, "MAX_FILE_BYTES", 12_000)
    monkeypatch.setattr(parts, "TARGET_PART_BYTES", 4_000)


def docs(n, start=0, note="x"):
    return [
        {"_id": i, "user": f"user{i}", "note": note * 20, "n": i} for i in range(start, start + n)
    ]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "dbsync.toml").write_text('database = "shop"\n')
    return load_config(cwd=tmp_path, environ={})


def files_of(folder):
    return sorted(p.name for p in folder.glob("*.jsonl"))


def test_a_large_collection_is_split_into_parts_none_over_the_limit(project, mongo_store):
    mongo_store.insert_many("pnl", docs(400))
    (result,) = export(project, mongo_store)
    names = files_of(project.snapshot_dir)
    count = len(names)
    assert count > 1 and count & (count - 1) == 0
    assert names[0] == f"pnl.part-{0:0{len(str(count - 1))}d}-of-{count}.jsonl"
    assert all((project.snapshot_dir / n).stat().st_size <= 12_000 for n in names)
    assert result.records == 400 and len(result.paths) == count
    report = verify_path(project.snapshot_dir)
    assert report.ok and report.records == 400
    found = parts.collection_files(project.snapshot_dir)["pnl"]
    assert [snapshot.line_document(line)["_id"] for line in found.lines()] == list(range(400))


def test_parts_are_deterministic_and_a_one_record_change_touches_one_part(
    project, mongo_store, tmp_path
):
    mongo_store.insert_many("pnl", docs(400))
    export(project, mongo_store)
    before = {n: (project.snapshot_dir / n).read_bytes() for n in files_of(project.snapshot_dir)}
    mongo_store.apply("pnl", [{**docs(1, 7)[0], "n": -1}], [])
    export(project, mongo_store)
    after = {n: (project.snapshot_dir / n).read_bytes() for n in files_of(project.snapshot_dir)}
    assert set(before) == set(after)
    assert sum(before[n] != after[n] for n in before) == 1
    second = mongo_store.__class__(mongo_store._client, "second", retry=mongo_store._retry)
    same = [{**d, "n": -1} if d["_id"] == 7 else d for d in docs(400)]
    second.insert_many("pnl", list(reversed(same)))  # the same records, inserted otherwise
    copy = tmp_path / "copy"
    shutil.copytree(project.snapshot_dir, copy)  # the layout came through git
    export(project, second, target_dir=copy)
    assert {n: (copy / n).read_bytes() for n in files_of(copy)} == after


def test_the_number_of_parts_never_shrinks_by_itself(project, mongo_store):
    mongo_store.insert_many("pnl", docs(400))
    export(project, mongo_store)
    count = len(files_of(project.snapshot_dir))
    mongo_store.apply("pnl", [], list(range(10, 400)))
    export(project, mongo_store, allow_deletes=True)
    assert len(files_of(project.snapshot_dir)) == count
    assert verify_path(project.snapshot_dir).records == 10


def test_verify_names_a_missing_part_and_a_record_in_the_wrong_part(project, mongo_store):
    mongo_store.insert_many("pnl", docs(400))
    export(project, mongo_store)
    names = files_of(project.snapshot_dir)
    (project.snapshot_dir / names[1]).unlink()
    problems = [p.message for p in verify_path(project.snapshot_dir).problems]
    assert any("part(s) 1 of" in p and "missing" in p for p in problems)
    with pytest.raises(InvalidInput, match="missing"):
        merge_snapshot(project, mongo_store, project.snapshot_dir, MergeOptions())


def test_a_forged_record_in_the_wrong_part_is_caught(project, mongo_store):
    mongo_store.insert_many("pnl", docs(400))
    export(project, mongo_store)
    first, second = (project.snapshot_dir / n for n in files_of(project.snapshot_dir)[:2])
    header = snapshot.parse_header(first.read_bytes().split(b"\n", 1)[0] + b"\n")
    stray = second.read_bytes().split(b"\n")[1] + b"\n"
    lines = [*first.read_bytes().splitlines(keepends=True)[1:-1], stray]
    ordered = sorted(lines, key=lambda ln: snapshot.line_sort_key(ln, ("_id",)))
    snapshot_files.write_snapshot(first, header, ordered)
    problems = [p.message for p in verify_path(project.snapshot_dir).problems]
    assert any("belongs in part" in p for p in problems)


def test_merge_diff_stats_and_the_merge_driver_work_across_parts(project, mongo_store, tmp_path):
    mongo_store.insert_many("pnl", docs(400))
    export(project, mongo_store)
    base = tmp_path / "base"
    shutil.copytree(project.snapshot_dir, base)
    assert collection_stats(project, mongo_store)["collections"]["pnl"]["snapshot"] == "in sync"
    mongo_store.apply("pnl", [{**docs(1, 3)[0], "n": 333}], [])
    export(project, mongo_store)
    changes = list(diff_paths(base, project.snapshot_dir))
    assert [(c.kind, c.key) for c in changes] == [("changed", {"_id": 3})]
    other = mongo_store.__class__(mongo_store._client, "receiver", retry=mongo_store._retry)
    report = merge_snapshot(project, other, project.snapshot_dir, MergeOptions())
    assert report.collections["pnl"].total == 400
    changed = [
        n
        for n in files_of(base)
        if (base / n).read_bytes() != (project.snapshot_dir / n).read_bytes()
    ]
    (name,) = changed
    theirs = tmp_path / "theirs.jsonl"
    shutil.copy(base / name, theirs)
    ours = tmp_path / "ours.jsonl"
    shutil.copy(project.snapshot_dir / name, ours)
    result = merge_files(base / name, ours, theirs, name)
    assert result.merged and ours.read_bytes() == (project.snapshot_dir / name).read_bytes()


def test_two_layouts_meeting_are_read_as_one_and_export_keeps_one(project, mongo_store, tmp_path):
    mongo_store.insert_many("pnl", docs(400))
    export(project, mongo_store)
    count = len(files_of(project.snapshot_dir))
    bigger = tmp_path / "bigger"
    shutil.copytree(project.snapshot_dir, bigger)
    for path in bigger.glob("*.jsonl"):  # the same collection split in twice the parts
        path.unlink()
    files = parts.collection_files(project.snapshot_dir)["pnl"]
    lines = list(files.lines())
    for index in range(count * 2):
        chosen = [
            ln
            for ln in lines
            if ordering.part_of(snapshot.line_sort_key(ln, ("_id",)), count * 2) == index
        ]
        header = snapshot.Header("pnl", files.rules, (index, count * 2))
        snapshot_files.write_snapshot(bigger / snapshot.header_filename(header), header, chosen)
    for path in bigger.glob("*.jsonl"):
        shutil.copy(path, project.snapshot_dir / path.name)  # a pull brought the new layout
    mixed = parts.collection_files(project.snapshot_dir)["pnl"]
    assert len(mixed.files) == count * 3 and mixed.complete()
    assert [snapshot.line_document(ln)["_id"] for ln in mixed.lines()] == list(range(400))
    other = mongo_store.__class__(mongo_store._client, "receiver", retry=mongo_store._retry)
    assert (
        merge_snapshot(project, other, project.snapshot_dir, MergeOptions())
        .collections["pnl"]
        .total
        == 400
    )
    export(project, mongo_store)
    assert len(files_of(project.snapshot_dir)) == count * 2  # one layout again, the larger
    assert verify_path(project.snapshot_dir).ok


def test_records_growing_past_the_first_estimate_still_split_under_the_limit(
    project, mongo_store, tmp_path, monkeypatch
):
    """The number of parts is first estimated from the records that filled one file; when later
    records are far larger, a part passes the limit and the collection is written again in
    more parts — still deterministic, still nothing over the limit."""
    overflows = []

    class Spy(export_module._PartTooLarge):
        def __init__(self, total_bytes):
            super().__init__(total_bytes)
            overflows.append(total_bytes)

    monkeypatch.setattr(export_module, "_PartTooLarge", Spy)
    small = docs(150)
    large = [{"_id": i, "user": f"user{i}", "note": "y" * 2000, "n": i} for i in range(150, 400)]
    mongo_store.insert_many("pnl", small + large)
    (result,) = export(project, mongo_store)
    assert overflows  # the first estimate was too small: the retry path ran
    names = files_of(project.snapshot_dir)
    assert all((project.snapshot_dir / n).stat().st_size <= 12_000 for n in names)
    assert verify_path(project.snapshot_dir).records == 400 == result.records
    second = mongo_store.__class__(mongo_store._client, "second", retry=mongo_store._retry)
    second.insert_many("pnl", list(reversed(small + large)))
    export(project, second, target_dir=tmp_path / "other")
    first = {n: (project.snapshot_dir / n).read_bytes() for n in names}
    assert {n: (tmp_path / "other" / n).read_bytes() for n in files_of(tmp_path / "other")} == first
