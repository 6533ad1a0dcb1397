"""MongoDB servers for the tests: SecantusDB started on port 0, or a real mongod you name.

Each test module that asks for one gets its own server process (a fresh storage folder, port 0),
in replica-set mode (what most users run: transactions, change streams) or standalone (no
transactions); every test gets a database of its own on it, so tests never see each other's
records.

To run the same tests against a real MongoDB, name it:
``DBSYNC_TEST_MONGODB_URI=mongodb://localhost:27017/?replicaSet=rs0`` (a replica set) and/or
``DBSYNC_TEST_MONGODB_STANDALONE_URI=mongodb://localhost:27018`` (a standalone server). The
tests then create databases named ``dbsync_test_*`` there, and drop them when done. Tests that
must kill and restart the server only run on SecantusDB.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pymongo import MongoClient

REPLICA_SET, STANDALONE = "replica-set", "standalone"
MODES = (REPLICA_SET, STANDALONE)
EMBEDDED = "embedded"
STORES = (EMBEDDED, *MODES)
"""Every store a test can run on: the embedded store, then a MongoDB server in each mode."""
SERVER_FIXTURES = {REPLICA_SET: "replica_set", STANDALONE: "standalone"}
"""The module-scoped fixture of each mode, for tests that pick the mode at run time."""
EXTERNAL = {
    REPLICA_SET: "DBSYNC_TEST_MONGODB_URI",
    STANDALONE: "DBSYNC_TEST_MONGODB_STANDALONE_URI",
}
LAUNCHER = Path(__file__).with_name("secantus_server.py")
STOP_SECONDS = 5.0
START_SECONDS = 60.0
"""How long a server may take to start (a loaded machine): a bound, never a measurement."""

_names = itertools.count()


@dataclass
class MongoServer:
    """One MongoDB server: SecantusDB in a process of its own, or an external one."""

    mode: str
    folder: Path
    uri: str = ""
    external: bool = False
    transaction_lifetime: float = 60.0
    auth: bool = False
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    databases: list[str] = field(default_factory=list)

    @property
    def replicated(self) -> bool:
        return self.mode == REPLICA_SET

    def start(self) -> None:
        """Start SecantusDB (again on the same port and storage after ``kill``)."""
        assert not self.external, "an external server is not started by the tests"
        self.folder.mkdir(parents=True, exist_ok=True)
        port_file = self.folder / "port"
        port_file.unlink(missing_ok=True)
        command = [sys.executable, str(LAUNCHER), str(self.folder / "data"), str(port_file)]
        command += [
            "--port",
            str(self.port),
            "--transaction-lifetime",
            str(self.transaction_lifetime),
        ]
        if self.mode == STANDALONE:
            command.append("--standalone")
        if self.auth:
            command.append("--auth")
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + START_SECONDS
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"SecantusDB did not start: {(self.folder / 'server.log').read_text()}"
                )
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.uri = f"mongodb://127.0.0.1:{self.port}/"

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would stop it."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """At the end of its tests: SIGTERM, then SIGKILL after a few seconds (its storage is
        thrown away; a server still serving a client's cursor once took 30 s to stop)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def new_database(self) -> str:
        """A database name no other test uses."""
        name = f"dbsync_test_{os.getpid()}_{next(_names)}"
        self.databases.append(name)
        return name

    def client(self) -> MongoClient:  # type: ignore[type-arg]
        return MongoClient(self.uri, serverSelectionTimeoutMS=10_000)

    def drop_databases(self) -> None:
        if not self.databases or (self.process is None and not self.external):
            return
        with self.client() as client:
            for name in self.databases:
                client.drop_database(name)
        self.databases.clear()


def start_server(mode: str, folder: Path, transaction_lifetime: float = 60.0) -> MongoServer:
    external = os.environ.get(EXTERNAL[mode])
    if external:
        return MongoServer(mode, folder, external, external=True)
    server = MongoServer(mode, folder, transaction_lifetime=transaction_lifetime)
    server.start()
    return server


def served(mode: str, folder: Path) -> Iterator[MongoServer]:
    """A server for the length of a fixture: started, then stopped (an external one is left
    running, its test databases dropped)."""
    server = start_server(mode, folder)
    yield server
    if server.external:
        server.drop_databases()
    server.stop()


@pytest.fixture(scope="module", params=MODES)
def mongo_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MongoServer]:
    """A MongoDB server for this module, once in each mode (replica set, standalone)."""
    yield from served(request.param, tmp_path_factory.mktemp(f"mongo-{request.param}"))


@pytest.fixture(scope="module")
def replica_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A replica-set primary for this module (transactions, change streams)."""
    yield from served(REPLICA_SET, tmp_path_factory.mktemp("mongo-rs"))


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A standalone server for this module (no transactions, no change streams)."""
    yield from served(STANDALONE, tmp_path_factory.mktemp("mongo-standalone"))


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[MongoServer]:
    """A replica-set SecantusDB server for one test alone, which the test may kill and restart
    (skipped against an external server: the tests do not stop a server they did not start)."""
    if os.environ.get(EXTERNAL[REPLICA_SET]):
        pytest.skip("kills and restarts the server: SecantusDB only")
    server = start_server(REPLICA_SET, tmp_path / "mongo")
    yield server
    server.stop()
