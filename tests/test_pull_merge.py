"""The merge after a pull decides only what the pull changed: the rows git's merge driver
recorded for the file it wrote, or one walk of the pulled file beside the synced copy that
checks deeply only the lines the copy lacks. Every shortcut falls back when it cannot vouch,
and decides, backs up and writes what a merge reading everything does."""

from __future__ import annotations

import io
import random
import re
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import montydb
import pytest

from dbsync.config import load_config
from dbsync.core import snapshot
from dbsync.core.rules import Rules
from dbsync.core.snapshot import SnapshotError
from dbsync.edges import log_index, parts, pulled
from dbsync.edges import synced as synced_module
from dbsync.edges.backups import collection_file
from dbsync.edges.changes import inserted_file
from dbsync.edges.driver_decisions import clear_driver_decisions
from dbsync.edges.pulled import RECORDS, CannotVouch, VouchedFile
from dbsync.edges.synced import save_synced, synced_dir
from dbsync.errors import InvalidInput
from dbsync.integration import merge_driver
from dbsync.integration.merge_driver import merge_files, record_driver_merge
from dbsync.runs import log as log_runs
from dbsync.runs import merge as merge_module
from dbsync.runs.export import export
from dbsync.runs.merge import MergeOptions, merge_snapshot
from dbsync.runs.pending import resolve_pending
from tests.indexed_helpers import TOML, count_checked_lines, docs

LABEL = "database_backup/pnl.jsonl"


@pytest.fixture
def config(tmp_path):
    root = tmp_path / "asset"
    root.mkdir()
    (root / "dbsync.toml").write_text(TOML)
    return load_config(cwd=root, environ={})


@pytest.fixture
def paths(monkeypatch):
    """How the pulled snapshot was compared with the synced copy, file by file."""
    seen: list[str] = []
    for name in ("walked_rows", "recorded_rows"):
        original = getattr(pulled, name)

        def watched(*args, _name=name, _original=original):
            if _name == "walked_rows":  # tried, whether it vouches or not
                seen.append(_name)
            found = _original(*args)
            if _name == "recorded_rows" and found is not None:
                seen.append(_name)
            return found

        monkeypatch.setattr(pulled, name, watched)
    return seen


@pytest.fixture
def checked_lines(monkeypatch):
    return count_checked_lines(monkeypatch)


def documents(store):
    return sorted(store.iter_documents("pnl"), key=lambda d: d["_id"])


def outcome(report, config):
    counts = {
        name: {**vars(c), "conflicts": list(c.conflicts)} for name, c in report.collections.items()
    }
    folder = config.state_dir / "backups" / report.backup
    preimages = collection_file(folder, "pnl")
    return counts, preimages.read_bytes(), inserted_file(preimages).read_bytes()


def edit(store_path: Path, database: str, seed: int, *, count: int = 12, start: int = 0) -> None:
    """What an application does between syncs, through montydb's own client: newer and older
    edits, inserts, deletions."""
    rng = random.Random(seed)
    client = montydb.MontyClient(str(store_path))
    pnl = client[database]["pnl"]
    chosen = rng.sample(range(200), count)
    for i in chosen[: count // 3]:
        at = "2026-06-01" if rng.random() < 0.5 else "2024-06-01"
        pnl.update_one({"_id": i}, {"$set": {"at": at}})
    for i in chosen[count // 3 : 2 * count // 3]:
        pnl.delete_one({"_id": i})
    for n in range(count // 3):
        pnl.insert_one({"_id": start + 1000 + n, "user": f"u{n % 5}", "ticker": f"N{seed}x{n}"})
    client.close()


class Pull:
    """Two assets of one collection: ``mine`` (the asset under test: its project, its store)
    and another that changed its copy; what git would give the merge driver, and where."""

    def __init__(self, config, store, tmp_path: Path, seed: int) -> None:
        self.config, self.store, self.tmp = config, store, tmp_path
        store.insert_many("pnl", docs(200))
        export(config, store)
        self.base = tmp_path / "base"  # the common ancestor: both assets' first snapshot
        shutil.copytree(config.snapshot_dir, self.base)
        other = type(store)(tmp_path / "other-store", "dbsync_test")
        other.insert_many("pnl", docs(200))
        edit(tmp_path / "other-store", "dbsync_test", seed + 100, start=500)
        self.theirs = tmp_path / "theirs"
        export(config, other, target_dir=self.theirs)
        other.close()
        edit(store._path, "dbsync_test", seed)  # this asset's own changes, exported and
        export(config, store)  # committed: the snapshot and the synced copy are ours

    def names(self) -> list[str]:
        return sorted(path.name for path in self.config.snapshot_dir.glob("*.jsonl"))

    def drive(self, *, record: bool = True) -> None:
        """git's merge: the driver on each file, its result put in the work tree."""
        for name in self.names():
            ours = self.tmp / f"ours-{name}"
            shutil.copyfile(self.config.snapshot_dir / name, ours)
            result = merge_files(self.base / name, ours, self.theirs / name, LABEL)
            assert result.merged, result.message
            if record:
                record_driver_merge(result, LABEL, self.config.root)
            elif result.decided is not None:
                result.decided.record.close()
            shutil.copyfile(ours, self.config.snapshot_dir / name)

    def fast_forward(self) -> None:
        """A pull this asset had nothing to add to: the other asset's files, as they are."""
        for name in self.names():
            shutil.copyfile(self.theirs / name, self.config.snapshot_dir / name)

    def merge(self):
        options = MergeOptions(base=synced_dir(self.config.state_dir))
        return merge_snapshot(self.config, self.store, self.config.snapshot_dir, options)

    def copy(self) -> tuple[Path, Path]:
        """The store and the state as they are, to merge again by the full read."""
        store_copy, state_copy = self.tmp / "store-copy", self.tmp / "state-copy"
        shutil.copytree(self.store._path, store_copy)
        shutil.copytree(self.config.state_dir, state_copy, ignore=shutil.ignore_patterns("db"))
        return store_copy, state_copy

    def full_merge(self, copies: tuple[Path, Path], monkeypatch):
        """The same merge from the copies, everything read: no change index, no record."""
        store_copy, state_copy = copies
        self.store.close()
        shutil.rmtree(self.store._path)
        shutil.copytree(store_copy, self.store._path)
        state = self.config.state_dir
        for name in ("synced", RECORDS, "change-index.sqlite"):
            target = state / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            if (state_copy / name).is_dir():
                shutil.copytree(state_copy / name, target)
            elif (state_copy / name).exists():
                shutil.copyfile(state_copy / name, target)
        monkeypatch.setattr(merge_module.ChangeIndex, "open_read_only", lambda state_dir: None)
        return self.merge()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("split", [False, True], ids=["one-file", "parts"])
@pytest.mark.parametrize("how", ["driver", "fast-forward", "driver-unrecorded"])
def test_a_pull_is_merged_from_what_it_changed_as_a_full_read_merges_it(
    config, embedded_store, paths, checked_lines, monkeypatch, tmp_path, seed, split, how
):
    if split:
        monkeypatch.setattr(parts, "MAX_FILE_BYTES", 9_000)
        monkeypatch.setattr(parts, "TARGET_PART_BYTES", 3_000)
    pull = Pull(config, embedded_store, tmp_path, seed)
    assert (len(pull.names()) > 1) is split
    if how == "fast-forward":
        pull.fast_forward()
    else:
        pull.drive(record=how == "driver")
    if seed == 2:  # and the application wrote since the export
        edit(embedded_store._path, "dbsync_test", seed + 7, count=6, start=3000)
    copies = pull.copy()
    before = documents(embedded_store)
    checked_lines.clear()
    report = pull.merge()
    walked = "walked_rows" in paths
    assert walked is (how != "driver") and ("recorded_rows" in paths) is (how == "driver")
    if how == "driver":
        assert checked_lines == []  # the driver checked them: the file is not read
    else:
        assert 0 < len(checked_lines) < 60  # the lines the synced copy lacks, no others
    after = documents(embedded_store)
    assert after != before

    full = pull.full_merge(copies, monkeypatch)
    assert outcome(report, config) == outcome(full, config)
    assert documents(embedded_store) == after


def test_the_driver_records_what_it_changed_and_a_merge_clears_it(config, embedded_store, tmp_path):
    pull = Pull(config, embedded_store, tmp_path, 1)
    pull.drive()
    (record,) = (config.state_dir / RECORDS).glob("*.rows")
    assert record.stem == pulled.file_digest(config.snapshot_dir / "pnl.jsonl")
    pull.merge()
    resolve_pending(config, config.snapshot_dir)  # what the pipeline does after a merge
    assert not (config.state_dir / RECORDS).exists()  # the database has what it decided


def test_a_record_of_another_ours_is_not_used(config, embedded_store, paths, tmp_path):
    """The driver merged from an "ours" that is not the synced copy (a commit made by hand,
    say): its rows are not where the synced copy differs from the file."""
    pull = Pull(config, embedded_store, tmp_path, 2)
    pull.drive()  # a record of the file it wrote, from ours: the synced copy
    (copy,) = synced_dir(config.state_dir).glob("*.jsonl")
    shutil.copyfile(pull.base / copy.name, copy)  # now the synced copy is another file
    found = pulled.pulled_rows(
        parts.collection_files(config.snapshot_dir)["pnl"],
        parts.collection_files(synced_dir(config.state_dir))["pnl"],
        config.state_dir / RECORDS,
    )
    assert paths == ["walked_rows"]
    header = parts.collection_files(config.snapshot_dir)["pnl"].files[0][1]
    assert found.rows == pulled.walked_rows(config.snapshot_dir / copy.name, copy, header)


def lie_in_a_changed_line(config, lie: bytes) -> tuple[Path, int]:
    """A changed line of the snapshot (one the synced copy lacks) made to lie, its hash and the
    trailer written again so that they hold: the file, and the line's number."""
    (path,) = config.snapshot_dir.glob("*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    synced = set((synced_dir(config.state_dir) / path.name).read_bytes().splitlines(True))
    number = next(
        i for i, line in enumerate(lines[1:-1], 1) if line not in synced and b'"at":"' in line
    )
    body = re.sub(rb'"at":"[^"]*"', b'"at":' + lie, snapshot.line_body(lines[number]))
    assert body != snapshot.line_body(lines[number])
    lines[number] = snapshot.record_line(body)
    digest = snapshot.Digest(lines[0])
    for line in lines[1:-1]:
        digest.add(line)
    path.write_bytes(b"".join(lines[:-1]) + digest.trailer())
    return path, number + 1


@pytest.mark.parametrize("pull_kind", ["driver", "fast-forward"])
@pytest.mark.parametrize("lie", [b'{"$date":"never"}', b'{"$numberInt":"x"}'])
def test_a_lying_changed_line_with_its_hash_right_is_refused_before_anything_is_written(
    config, embedded_store, paths, tmp_path, pull_kind, lie
):
    """Valid JSON, a value lying about its type, hash and trailer right: on a file the driver
    wrote (then no longer the file it recorded) or one a fast-forward brought."""
    pull = Pull(config, embedded_store, tmp_path, 0)
    pull.drive() if pull_kind == "driver" else pull.fast_forward()
    path, number = lie_in_a_changed_line(config, lie)
    before = documents(embedded_store)
    backups = sorted((config.state_dir / "backups").glob("*"))
    with pytest.raises(SnapshotError) as refused:
        pull.merge()
    assert refused.value.exit_code == 4 and f"{path}:{number}:" in str(refused.value)
    assert "walked_rows" in paths and "recorded_rows" not in paths
    assert documents(embedded_store) == before
    assert sorted((config.state_dir / "backups").glob("*")) == backups


@pytest.mark.parametrize("where", ["changed line", "unchanged line", "trailer"])
def test_a_fast_forward_with_a_damaged_line_is_refused_as_a_full_read_refuses_it(
    config, embedded_store, paths, tmp_path, where
):
    pull = Pull(config, embedded_store, tmp_path, 1)
    pull.fast_forward()
    (path,) = config.snapshot_dir.glob("*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    synced = set((synced_dir(config.state_dir) / path.name).read_bytes().splitlines(True))
    changed = [i for i, line in enumerate(lines[1:-1], 1) if line not in synced]
    kept = [i for i, line in enumerate(lines[1:-1], 1) if line in synced]
    if where == "trailer":
        number = len(lines) - 1
        lines[number] = lines[number].replace(b'"count":', b'"count":1')
    else:
        number = changed[0] if where == "changed line" else kept[5]
        damaged = lines[number].replace(b'"user":"u', b'"user":"v', 1)  # its hash now wrong
        assert damaged != lines[number]
        lines[number] = damaged
    path.write_bytes(b"".join(lines))
    before = documents(embedded_store)
    with pytest.raises(SnapshotError) as refused:
        pull.merge()
    assert refused.value.exit_code == 4 and f"{path}:{number + 1}:" in str(refused.value)
    assert paths == ["walked_rows"]  # tried, could not vouch: the full read named it
    assert documents(embedded_store) == before


def test_a_snapshot_laid_out_otherwise_than_the_synced_copy_is_read_in_full(
    config, embedded_store, paths, monkeypatch, tmp_path
):
    pull = Pull(config, embedded_store, tmp_path, 0)
    monkeypatch.setattr(parts, "MAX_FILE_BYTES", 9_000)
    monkeypatch.setattr(parts, "TARGET_PART_BYTES", 3_000)
    shutil.rmtree(pull.theirs)
    other = type(embedded_store)(tmp_path / "other-store", "dbsync_test")
    export(config, other, target_dir=pull.theirs)  # the other asset's layout: parts
    other.close()
    for path in config.snapshot_dir.glob("*.jsonl"):
        path.unlink()
    for path in pull.theirs.glob("*.jsonl"):
        shutil.copyfile(path, config.snapshot_dir / path.name)
    copies = pull.copy()
    report = pull.merge()
    assert paths == []  # no file compared: the layouts differ
    after = documents(embedded_store)
    full = pull.full_merge(copies, monkeypatch)
    assert outcome(report, config) == outcome(full, config)
    assert documents(embedded_store) == after


def test_records_beyond_the_newest_are_pruned_and_cleared_with_the_queue(config, tmp_path):
    folder = config.state_dir / RECORDS
    output = tmp_path / "output"
    for n in range(pulled.RECORDS_KEPT + 5):
        output.write_bytes(f"file {n}\n".encode())
        record = pulled.DriverRecord()
        record.add(None, b"x\n")
        record.save(folder, {"ours": "0" * 40, "merged": pulled.file_digest(output)})
        record.close()
    assert len(list(folder.glob("*.rows"))) == pulled.RECORDS_KEPT
    clear_driver_decisions(config)
    assert not folder.exists()


def test_a_record_a_driver_could_not_finish_is_not_saved(config, tmp_path):
    record = pulled.DriverRecord()
    record.add(b"a\n", None)
    record.discard()
    output = tmp_path / "output"
    output.write_bytes(b"x\n")
    record.save(
        config.state_dir / RECORDS, {"ours": "0" * 40, "merged": pulled.file_digest(output)}
    )
    record.close()
    assert not (config.state_dir / RECORDS).exists()


def test_a_file_changed_since_it_was_vouched_for_is_not_recorded_as_synced(tmp_path):
    path = tmp_path / "pnl.jsonl"
    path.write_bytes(b"header\nrecord\ntrailer\n")
    check = pulled.content_check(path.read_bytes())
    assert list(VouchedFile(path, check)) == [b"record\n"]
    path.write_bytes(b"header\nanother\ntrailer\n")
    with pytest.raises(InvalidInput, match="changed while it was being merged"):
        list(VouchedFile(path, check))
    with pytest.raises(InvalidInput, match="changed while it was being merged"):
        VouchedFile(path, check).read()


def test_rows_past_what_is_held_are_left_to_the_full_read(config, embedded_store, tmp_path):
    pull = Pull(config, embedded_store, tmp_path, 0)
    pull.fast_forward()
    (path,) = config.snapshot_dir.glob("*.jsonl")
    (copy,) = synced_dir(config.state_dir).glob("*.jsonl")
    header = snapshot.parse_header(path.read_bytes().splitlines(True)[0])
    assert isinstance(header, snapshot.Header)
    pulled_rows = pulled.walked_rows(path, copy, header)
    assert pulled_rows
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pulled, "ROWS_HELD", len(pulled_rows) - 1)
        with pytest.raises(CannotVouch):
            pulled.walked_rows(path, copy, header)


def index_rows(config, old: str, new: str) -> set[tuple[int, bytes | None, bytes | None]] | None:
    """The changes the log index holds for a pair of blobs (None: a wide pair)."""
    with closing(sqlite3.connect(config.state_dir / log_index.INDEX_FILE)) as connection:
        found = connection.execute(
            "SELECT id, wide FROM pairs WHERE old = ? AND new = ?",
            (bytes.fromhex(old), bytes.fromhex(new)),
        ).fetchone()
        assert found is not None, (old, new)
        if found[1]:
            return None
        rows = connection.execute("SELECT key, old, new FROM changes WHERE pair = ?", found[:1])
        return {(key % (1 << 64), old_line, new_line) for key, old_line, new_line in rows}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("wide", [False, True], ids=["kept", "wide"])
def test_the_driver_gives_the_log_index_the_pairs_it_would_compute_from_the_blobs(
    config, embedded_store, tmp_path, monkeypatch, seed, wide
):
    """base → theirs, ours → merged, theirs → merged: what ``dbsync log`` would compute from
    the two blobs of each (``runs.log._file_changes``), keyed by git's blob ids."""
    if wide:
        monkeypatch.setattr(merge_driver, "LINES_KEPT", 500)
        monkeypatch.setattr(log_runs, "LINES_KEPT", 500)
    subprocess.run(["git", "init", "-q"], cwd=config.root, check=True)
    pull = Pull(config, embedded_store, tmp_path, seed)
    (name,) = pull.names()
    files = {
        "base": (pull.base / name).read_bytes(),
        "ours": (config.snapshot_dir / name).read_bytes(),
        "theirs": (pull.theirs / name).read_bytes(),
    }
    pull.drive()
    files["merged"] = (config.snapshot_dir / name).read_bytes()
    fields = ("user", "ticker")
    wides = 0
    for old, new in (("base", "theirs"), ("ours", "merged"), ("theirs", "merged")):
        expected = log_runs._file_changes(files[old], files[new], fields)
        found = index_rows(config, _blob_id(files[old]), _blob_id(files[new]))
        if expected is None:
            assert found is None
            wides += 1
        else:
            assert found == {(c.key, c.old, c.new) for c in expected}
    assert (wides > 0) is wide


def _blob_id(data: bytes) -> str:
    return (
        subprocess.run(
            ["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )


@pytest.mark.parametrize("damage", ["cut short", "not json", "out of order"])
def test_a_damaged_record_is_not_gone_by_the_file_is_walked(
    config, embedded_store, paths, tmp_path, monkeypatch, damage
):
    pull = Pull(config, embedded_store, tmp_path, 1)
    pull.drive()
    (record,) = (config.state_dir / RECORDS).glob("*.rows")
    meta, *rows = record.read_bytes().splitlines(keepends=True)
    if damage == "cut short":
        rows = rows[: len(rows) // 2 + 1]
    elif damage == "not json":
        rows[2] = b'{"h":"0123456789abcdef","d":{oops}}\n'
    else:
        rows = rows[2:4] + rows[:2] + rows[4:]
    record.write_bytes(meta + b"".join(rows))
    copies = pull.copy()
    report = pull.merge()
    assert paths == ["walked_rows"]
    after = documents(embedded_store)
    full = pull.full_merge(copies, monkeypatch)
    assert outcome(report, config) == outcome(full, config)
    assert documents(embedded_store) == after


def test_a_vouched_file_is_kept_as_the_synced_copy_byte_for_byte(tmp_path, monkeypatch):
    """Kept as it is when written as dbsync writes (one copy, not rewritten line by line);
    else its lines are written again, canonical, with the digest they give."""
    header = snapshot.Header("pnl", Rules(key=("_id",)))
    lines = [snapshot.encode_record({"_id": i, "v": i}, ("_id",))[1] for i in range(3)]
    out = io.BytesIO()
    summary = snapshot.write_section(out, header, lines)
    source, state = tmp_path / "pnl.jsonl", tmp_path / "state"
    rewritten = []
    monkeypatch.setattr(
        synced_module,
        "write_section",
        lambda *args: rewritten.append(1) or snapshot.write_section(*args),
    )
    for data in (out.getvalue(), out.getvalue().replace(b'"count":', b'"count": ')):
        source.write_bytes(data)
        vouched = VouchedFile(source, pulled.content_check(data))
        synced = save_synced(state, [(header, vouched)], None)
        assert (synced_dir(state) / "pnl.jsonl").read_bytes() == out.getvalue()
        assert synced.digests == {"pnl": summary.digest}
    assert len(rewritten) == 1  # only the file whose trailer was not written as dbsync writes
