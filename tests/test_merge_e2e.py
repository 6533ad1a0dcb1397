"""Two assets exchanging only snapshot files converge, losing nothing: on embedded stores, and
(the tests taking ``make_asset``) each on a database of its own on a MongoDB replica set."""

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from dbsync.config import load_config
from dbsync.edges.conflict_spool import SpooledConflicts
from dbsync.edges.embedded import EmbeddedStore
from dbsync.errors import DbsyncError
from dbsync.runs.merge import MergeOptions, merge_snapshot
from tests.cli_helpers import Project, new_project, write_lines
from tests.mongo_servers import EMBEDDED, REPLICA_SET, SERVER_FIXTURES, MongoServer

PNL_KEY = """
[collections.pnls]
key = ["user_id", "username", "timestamp", "ticker"]
timestamp = "timestamp"
preserve = ["user_id", "profit_usd", "profit_sol", "ticker"]
"""

BY_ID = """
[collections.pnls]
timestamp = "timestamp"
"""


def record(n: int, **fields) -> dict:
    return {
        "_id": {"$oid": f"{n:024x}"},
        "user_id": f"u{n}",
        "username": f"@user{n}",
        "ticker": "SOL",
        "profit_usd": float(n),
        "timestamp": "2025-07-01T00:00:00",
        **fields,
    }


@pytest.fixture(params=[EMBEDDED, REPLICA_SET])
def make_asset(request) -> Callable[..., Project]:
    """``new_project`` on each store: embedded, or a database of its own on this module's
    replica-set server."""
    if request.param == EMBEDDED:
        return new_project
    server: MongoServer = request.getfixturevalue(SERVER_FIXTURES[request.param])
    return partial(_new_mongo_project, server)


def _new_mongo_project(server: MongoServer, root: Path, toml: str = "") -> Project:
    return new_project(root, server.new_database(), toml, uri=server.uri)


def pnl_assets(tmp_path: Path, records: list[dict], make: Callable[..., Project]) -> list[Project]:
    """Two assets holding the same 190 real records (their 11 duplicate pairs included)."""
    source = write_lines(tmp_path / "pnls.json", records)
    pair = []
    for name in ("a", "b"):
        project = make(tmp_path / name)
        project.ok("import", str(source), "-c", "pnls")
        project.ok("export")
        pair.append(project)
    return pair


@pytest.fixture
def assets(tmp_path, pnl_records):
    return pnl_assets(tmp_path, pnl_records, new_project)


@pytest.fixture
def assets_on_each_store(tmp_path, pnl_records, make_asset):
    return pnl_assets(tmp_path, pnl_records, make_asset)


def add(project: Project, tmp_path: Path, docs: list[dict], name: str) -> None:
    project.ok(
        "import",
        str(write_lines(tmp_path / f"{name}.json", docs)),
        "-c",
        "pnls",
        "--mode",
        "upsert",
    )
    project.ok("export")


def exchange(receiver: Project, sender: Project, *extra: str) -> dict:
    return json.loads(
        receiver.ok("merge", str(sender.root / "database_backup"), "--json", *extra).out
    )


def assert_converged(a: Project, b: Project) -> None:
    a.ok("export")
    b.ok("export")
    assert a.snapshot() == b.snapshot()
    assert a.ok("dump", "pnls").out == b.ok("dump", "pnls").out


def test_three_and_two_new_records_give_195_on_both_with_exact_figures(assets, tmp_path):
    a, b = assets
    add(a, tmp_path, [record(n) for n in (1, 2, 3)], "a_new")
    add(b, tmp_path, [record(n) for n in (4, 5)], "b_new")
    report = exchange(a, b)["collections"]["pnls"]
    assert (report["local_only"], report["remote_only"], report["common"], report["total"]) == (
        3,
        2,
        190,
        195,
    )
    report = exchange(b, a)["collections"]["pnls"]
    assert (report["local_only"], report["remote_only"], report["common"], report["total"]) == (
        2,
        3,
        190,
        195,
    )
    assert_converged(a, b)
    assert len(a.ok("dump", "pnls").out.splitlines()) == 195  # the 11 duplicate pairs survive


def test_one_record_inserted_on_both_under_different_ids_is_one_record(tmp_path, make_asset):
    a = make_asset(tmp_path / "a", toml=PNL_KEY)
    b = make_asset(tmp_path / "b", toml=PNL_KEY)
    add(a, tmp_path, [record(1), record(7)], "a")
    add(b, tmp_path, [record(2), {**record(7), "_id": {"$oid": "b" * 24}}], "b")
    exchange(a, b)
    exchange(b, a)
    assert_converged(a, b)
    dumped = [json.loads(line) for line in a.ok("dump", "pnls").out.splitlines()]
    assert sorted(d["user_id"] for d in dumped) == ["u1", "u2", "u7"]


def test_a_conflicting_update_picks_the_same_winner_on_both_sides(tmp_path, make_asset):
    a = make_asset(tmp_path / "a", toml=BY_ID)
    b = make_asset(tmp_path / "b", toml=BY_ID)
    for project in (a, b):
        add(project, tmp_path, [record(1)], f"{project.root.name}0")
    add(a, tmp_path, [record(1, profit_usd=10.0, timestamp="2025-07-02T09:00:00")], "a1")
    add(b, tmp_path, [record(1, profit_usd=20.0, timestamp="2025-07-02T10:00:00")], "b1")
    conflicts_a = exchange(a, b)["collections"]["pnls"]["conflicts"]
    conflicts_b = exchange(b, a)["collections"]["pnls"]["conflicts"]
    assert_converged(a, b)
    winner = json.loads(a.ok("dump", "pnls").out)
    assert winner["profit_usd"] == {"$numberDouble": "20.0"}  # the newer string timestamp wins
    assert conflicts_a[0]["rule"] == "newer timestamp" == conflicts_b[0]["rule"]
    assert conflicts_a[0]["loser"]["profit_usd"] == 10.0  # the losing version is in the report
    reports = list((a.root / "database_sync" / "reports").glob("merge_report_*.txt"))
    assert any("lost:" in path.read_text() and "10.0" in path.read_text() for path in reports)


def test_a_deletion_propagates_three_way_and_never_two_way(assets_on_each_store, tmp_path):
    a, b = assets_on_each_store
    base = tmp_path / "base"
    base.mkdir()
    (base / "pnls.jsonl").write_bytes(a.snapshot())  # the common ancestor of a and b
    victim = json.loads(b.ok("dump", "pnls").out.splitlines()[0])["_id"]
    edited = tmp_path / "edited"
    edited.mkdir()
    _write_without(edited / "pnls.jsonl", b.snapshot(), victim)  # b deleted one record
    two_way = json.loads(a.ok("merge", str(edited), "--json").out)
    assert two_way["mode"] == "two-way" and two_way["collections"]["pnls"]["deleted"] == 0
    assert len(a.ok("dump", "pnls").out.splitlines()) == 190
    three_way = json.loads(a.ok("merge", str(edited), "--base", str(base), "--json").out)
    assert three_way["mode"] == "three-way"
    assert three_way["collections"]["pnls"]["deleted"] == 1
    assert len(a.ok("dump", "pnls").out.splitlines()) == 189


def _write_without(target: Path, snapshot: bytes, victim) -> None:
    """A valid snapshot file equal to ``snapshot`` minus one record (header, hashes, trailer)."""
    from dbsync.core.snapshot import Header, parse_header
    from dbsync.edges.snapshot_files import write_snapshot

    lines = snapshot.splitlines(keepends=True)
    header = parse_header(lines[0])
    assert isinstance(header, Header)
    needle = b'"_id":' + json.dumps(victim, separators=(",", ":")).encode()
    write_snapshot(target, header, [line for line in lines[1:-1] if needle not in line])


def test_dry_run_changes_nothing(assets, tmp_path):
    a, b = assets
    add(b, tmp_path, [record(n) for n in (4, 5)], "b_new")
    before = a.ok("dump", "pnls").out
    backups = a.json("backups")  # the import's
    report = exchange(a, b, "--dry-run")
    assert report["status"] == "dry-run" and report["collections"]["pnls"]["remote_only"] == 2
    assert a.ok("dump", "pnls").out == before
    assert a.json("backups") == backups


def test_merge_refuses_a_tampered_snapshot_before_writing_anything(assets, tmp_path):
    a, b = assets
    add(b, tmp_path, [record(n) for n in (4, 5)], "b_new")
    path = b.root / "database_backup" / "pnls.jsonl"
    path.write_bytes(path.read_bytes().replace(b"@user4", b"@user9"))
    before = a.ok("dump", "pnls").out
    result = a.run("merge", str(b.root / "database_backup"))
    assert result.code == 4 and "does not match its hash" in result.err
    assert a.ok("dump", "pnls").out == before


class FailingStore:
    """An embedded store that fails after k thousand writes, like a database dying mid-merge."""

    def __init__(self, inner: EmbeddedStore, fail_on: int) -> None:
        self.inner, self.fail_on = inner, fail_on

    def apply_changes(self, collection, changes, redecide):
        def failing():
            for number, change in enumerate(changes):
                if number == (self.fail_on - 1) * 1000:
                    raise DbsyncError("injected failure: the database went away")
                yield change

        return self.inner.apply_changes(collection, failing(), redecide)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("fail_on", [1, 2, 3])
def test_a_failure_after_k_writes_leaves_the_database_exactly_as_before(assets, tmp_path, fail_on):
    a, b = assets
    new = [record(n) for n in range(1, 2500)]  # three write batches of upserts
    add(b, tmp_path, new, "b_new")
    before = a.ok("dump", "pnls").out
    config = load_config(cwd=a.root, environ={})
    uri, database = config.require_database()
    store = FailingStore(EmbeddedStore(Path(uri.removeprefix("embedded://")), database), fail_on)
    with pytest.raises(DbsyncError, match="injected failure"):
        merge_snapshot(config, store, b.root / "database_backup", MergeOptions())
    store.inner.close()
    assert a.ok("dump", "pnls").out == before
    reports = sorted((a.root / "database_sync" / "reports").glob("*.json"))
    failed = json.loads(reports[-1].read_text())
    assert failed["status"] == "failed" and "nothing had been written" in failed["error"]


def test_a_record_arriving_under_an_id_another_record_holds_is_refused(tmp_path):
    a = new_project(tmp_path / "a", toml=PNL_KEY)
    b = new_project(tmp_path / "b", toml=PNL_KEY)
    add(a, tmp_path, [record(1)], "a")
    add(b, tmp_path, [{**record(2), "_id": record(1)["_id"]}], "b")  # same _id, other record
    before = a.ok("dump", "pnls").out
    refused = a.run("merge", str(b.root / "database_backup"))
    assert refused.code == 4
    assert "two different records share _id" in refused.err
    assert a.ok("dump", "pnls").out == before


def test_a_merge_spools_its_conflicts_and_every_losing_version_reaches_report_and_state(
    tmp_path,
):
    count = 120
    a = new_project(tmp_path / "a", toml=BY_ID)
    b = new_project(tmp_path / "b", toml=BY_ID)
    for project, profit, hour in ((a, 1.0, "09"), (b, 2.0, "10")):
        docs = [
            record(n, profit_usd=profit, timestamp=f"2025-07-02T{hour}:00:00") for n in range(count)
        ]
        add(project, tmp_path, docs, project.root.name)
    config = load_config(cwd=a.root, environ={})
    uri, database = config.require_database()
    store = EmbeddedStore(Path(uri.removeprefix("embedded://")), database)
    try:
        report = merge_snapshot(config, store, b.root / "database_backup", MergeOptions())
    finally:
        store.close()
    conflicts = report.collections["pnls"].conflicts
    assert isinstance(conflicts, SpooledConflicts) and len(conflicts) == count
    descriptor = conflicts.fileno()
    assert os.pread(descriptor, os.fstat(descriptor).st_size, 0).count(b"\n") == count
    (text,) = (a.root / "database_sync" / "reports").glob("merge_report_*.txt")
    assert text.read_text().count("\n    lost:  ") == count
    listed = json.loads(text.with_suffix(".json").read_text())["collections"]["pnls"]["conflicts"]
    assert sorted(c["loser"]["user_id"] for c in listed) == sorted(f"u{n}" for n in range(count))
    assert {c["loser"]["profit_usd"] for c in listed} == {1.0}
    assert len(a.json("conflicts")) == count  # every losing version recorded


def test_merge_json_streams_the_report_it_writes(tmp_path):
    a = new_project(tmp_path / "a", toml=BY_ID)
    b = new_project(tmp_path / "b", toml=BY_ID)
    for project, profit in ((a, 1.0), (b, 2.0)):
        add(project, tmp_path, [record(n, profit_usd=profit) for n in range(5)], project.root.name)
    printed = a.ok("merge", str(b.root / "database_backup"), "--json").out
    (written,) = (a.root / "database_sync" / "reports").glob("merge_report_*.json")
    assert printed == written.read_text()
    assert len(json.loads(printed)["collections"]["pnls"]["conflicts"]) == 5
