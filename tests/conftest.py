"""Fixtures shared by the tests: a MongoStore on mongomock and an EmbeddedStore on disk."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mongomock
import pytest
from mongomock.collection import BulkOperationBuilder

from dbsync.edges.embedded import EmbeddedStore
from dbsync.edges.mongo import MongoStore, open_mongo
from dbsync.edges.store import RetryPolicy
from tests.cli_helpers import DATA
from tests.git_helpers import Repo, copy_pair, environment, init_pair, make_home
from tests.mongo_servers import EMBEDDED, MODES, REPLICA_SET, SERVER_FIXTURES, MongoServer

pytest_plugins = [
    "project",  # end-to-end fixtures: a dbsync project driven by the console script
    "mongo_servers",  # MongoDB servers: SecantusDB on port 0, or the mongod you name
]


SLOW = {
    "test_agent.py::test_the_agent_syncs_on_trigger_alerts_and_recovers",
    "test_bench.py::test_the_bench_runs_end_to_end_and_its_results_are_consistent",
    "test_demo.py::test_the_demo_converges_and_prints_each_step",
    "test_import_safety.py::test_an_import_killed_on_mongodb_is_undone_by_the_restore_status_names",
    "test_kills.py::test_killed_runs_never_commit_a_partial_file_and_the_next_sync_repairs",
    "test_live_writes.py::test_an_application_writing_inside_the_hook_s_compare_and_set_loses_nothing",
    "test_liveness.py::test_five_busy_assets_all_make_progress_and_converge",
    "test_mongo_safety.py::test_records_held_by_a_killed_transaction_are_waited_for_with_a_message",
    "test_recovery.py::test_a_hook_merge_killed_mid_write_on_mongodb_is_recovered_the_first_time",
    "test_recovery.py::test_a_merge_run_by_hand_after_a_killed_hook_merge_leaves_status_true",
    "test_recovery.py::test_a_server_killed_before_a_pull_leaves_the_merge_pending_until_it_is_back",
    "test_recovery.py::test_a_server_killed_during_a_pull_s_merge_leaves_it_pending_until_it_is_back",
    "test_recovery.py::test_following_status_after_a_killed_hook_merge_keeps_every_deletion",
}
"""The slowest end-to-end cases (20 s and more each on a loaded machine), marked ``slow`` so that
a developer can leave them out locally (``-m "not slow"``); CI runs them all."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "liveness: the short form of the benchmark's five-asset liveness run; it runs in CI "
        "(never deselect it there)",
    )
    config.addinivalue_line(
        "markers",
        "slow: one of the slowest end-to-end cases; '-m \"not slow\"' leaves them out locally, "
        "CI runs them",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the SLOW tests, and run them first: on two workers a minute-long test that
    starts last is a minute the other worker waits at the end."""
    for item in items:
        if f"{item.path.name}::{item.originalname}" in SLOW:  # type: ignore[attr-defined]
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _accepting_sort_none(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` taking the ``sort`` keyword pymongo >= 4.11 passes, when it is None.

    pymongo 4.11 added ``sort`` to ``ReplaceOne``/``UpdateOne`` and passes it to the bulk
    builder's ``add_replace``/``add_update``; mongomock 4.3's builder predates it and raises
    TypeError. dbsync never sorts an update, so ``sort=None`` is dropped; any other value still
    fails loudly rather than being ignored.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, sort: Any = None, **kwargs: Any) -> Any:
        if sort is not None:
            raise NotImplementedError(f"mongomock cannot sort a bulk update (sort={sort!r})")
        return method(self, *args, **kwargs)

    return wrapper


@pytest.fixture(autouse=True)
def mongomock_accepts_pymongo_bulk_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let mongomock run the real pymongo bulk operations that production code builds."""
    for name in ("add_replace", "add_update"):
        original = getattr(BulkOperationBuilder, name)
        monkeypatch.setattr(BulkOperationBuilder, name, _accepting_sort_none(original))


def no_sleep_policy(**overrides: Any) -> RetryPolicy:
    """A retry policy that never waits for real."""
    return RetryPolicy(sleep=lambda seconds: None, **overrides)


@pytest.fixture
def mongo_store() -> Iterator[MongoStore]:
    store = MongoStore(mongomock.MongoClient(), "dbsync_test", retry=no_sleep_policy())
    yield store
    store.close()


@pytest.fixture
def embedded_store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    store = EmbeddedStore(tmp_path / "store", "dbsync_test")
    yield store
    store.close()


def store_on(request: pytest.FixtureRequest, mode: str) -> MongoStore:
    """A MongoStore on this module's server in ``mode``, on a database of the test's own."""
    server: MongoServer = request.getfixturevalue(SERVER_FIXTURES[mode])
    store = open_mongo(server.uri, server.new_database(), no_sleep_policy())
    request.addfinalizer(store.close)
    return store


@pytest.fixture(params=MODES)
def server_store(request: pytest.FixtureRequest) -> MongoStore:
    """A MongoStore on a real MongoDB wire-protocol server, in replica-set and in standalone
    mode."""
    return store_on(request, request.param)


@pytest.fixture(params=[*MODES, EMBEDDED])
def store(request: pytest.FixtureRequest) -> Any:
    """Each test using ``store`` runs on each implementation: a MongoDB server (replica set
    and standalone) and the embedded store."""
    if request.param == EMBEDDED:
        return request.getfixturevalue("embedded_store")
    return store_on(request, request.param)


@pytest.fixture
def pnl_records() -> list[dict[str, Any]]:
    """190 real PNL records (11 duplicate pairs, string timestamps), as plain JSON."""
    records: list[dict[str, Any]] = json.loads(DATA.read_text())
    return records


# ---------------------------------------------------------------- git integration (test_git_*)


@pytest.fixture(scope="session")
def git_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Subprocess environment: a temporary HOME, no system git config, a pinned identity."""
    return environment(make_home(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def pair_template(tmp_path_factory: pytest.TempPathFactory, git_env: dict[str, str]) -> Path:
    """A remote and two initialised assets, built once; tests work on copies."""
    folder = tmp_path_factory.mktemp("pair-template")
    init_pair(folder, git_env)
    return folder


@pytest.fixture
def pair(pair_template: Path, tmp_path: Path, git_env: dict[str, str]) -> tuple[Repo, Repo]:
    """Assets ``a`` and ``b`` (``Repo``s) sharing a bare remote, with dbsync's hooks installed."""
    return copy_pair(pair_template, tmp_path / "assets", git_env)


@pytest.fixture(params=[EMBEDDED, REPLICA_SET])
def store_pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Repo, Repo]:
    """``pair`` on each store: embedded stores, then a database of each asset's own on this
    module's replica-set server. A test that differs on a standalone server (writes without
    transactions) adds it: ``@pytest.mark.parametrize("store_pair", STORES, indirect=True)``.
    """
    if request.param == EMBEDDED:
        pair: tuple[Repo, Repo] = request.getfixturevalue("pair")
        return pair
    server: MongoServer = request.getfixturevalue(SERVER_FIXTURES[request.param])
    return init_pair(tmp_path / "assets", request.getfixturevalue("git_env"), server)
