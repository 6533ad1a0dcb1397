"""``dbsync agent``: the real command against real git repositories; its sync cycle on each
store (embedded, and a MongoDB replica set)."""

import json
import os
import queue
import re
import select
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dbsync.agent.schedule import Agent, Alerter, backoff, parse_interval
from dbsync.errors import UsageError
from tests.git_helpers import DBSYNC, real_records

DOWN = 'uri = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200"\nretry_seconds = 0.2\n'


def test_intervals_and_backoff():
    assert parse_interval("30s") == 30 and parse_interval("5m") == 300
    assert parse_interval("1h") == 3600 and parse_interval("250ms") == 0.25
    assert parse_interval("12") == 12
    for bad in ("soon", "0s", "-5m", "5 weeks"):
        with pytest.raises(UsageError):
            parse_interval(bad)
    assert [backoff(60, n) for n in range(4)] == [60, 120, 240, 480]
    assert backoff(60, 30) == 3600
    assert backoff(7200, 3) == 7200  # never shorter than the interval itself


def test_a_stop_signal_never_waits_for_a_lock_the_main_thread_holds():
    """SIGTERM can land while the main thread is inside ``wake.wait`` holding the event's lock."""
    agent = Agent(lambda: None, 3600.0, lambda line: None)  # type: ignore[arg-type, return-value]
    with agent.wake._cond:  # where the main thread is when it enters or leaves wake.wait
        handler = threading.Thread(target=agent.stop_from_signal, args=(signal.SIGTERM, None))
        handler.start()
        handler.join(timeout=30)
        assert not handler.is_alive(), "the handler waits for the lock its thread holds"
        assert not agent.wake.is_set()  # stop() waits in its own thread for the lock
    assert agent.wake.wait(timeout=30) and agent.stopping.is_set()


def test_the_alert_fires_on_degrading_and_on_recovering_only(tmp_path):
    log = tmp_path / "alerts"
    alerter = Alerter(f"cat >> {log}; echo >> {log}")
    statuses = ["HEALTHY", "DEGRADED", "DEGRADED", "WARNING", "HEALTHY", "DEGRADED"]
    fired = [alerter.observe({"status": status}) for status in statuses]
    assert fired == [False, True, False, True, False, True]
    lines = [json.loads(line) for line in log.read_text().split("\n") if line]
    assert [line["status"] for line in lines] == ["DEGRADED", "WARNING", "DEGRADED"]


def without_uri(config: str) -> str:
    """``config`` (a dbsync.local.toml) without its ``uri`` line, whatever the store."""
    return "".join(line for line in config.splitlines(True) if not line.startswith("uri = "))


class RunningAgent:
    """``dbsync agent`` in a subprocess, its output lines collected as they come."""

    def __init__(self, repo, *args: str, env: dict[str, str] | None = None) -> None:
        command = [DBSYNC, "agent", "--every", "1h", "--port", "0", *args]
        self.process = subprocess.Popen(
            command,
            cwd=repo.root,
            env={**repo.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        banner = self.wait_for(r"API on http://127\.0\.0\.1:(\d+)")
        self.port = int(re.search(r":(\d+)$", banner).group(1))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.seen))

    def call(self, method: str, path: str, key: str | None = None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def test_the_agent_syncs_on_trigger_alerts_and_recovers(store_pair, tmp_path):
    a, b = store_pair
    alerts = tmp_path / "alerts.jsonl"
    local = a.root / "dbsync.local.toml"
    reachable = local.read_text() + f'alert_command = "cat >> {alerts}; echo >> {alerts}"\n'
    local.write_text(reachable)
    a.import_records(real_records()[:40])
    agent = RunningAgent(a)
    try:
        agent.wait_for(r"cycle 1: success")
        assert agent.call("GET", "/health")[1]["cycles"] == 1
        b.git("pull")
        assert len(b.dump()) == 40  # the cycle exported, committed and pushed
        assert agent.call("GET", "/status")[1]["status"] == "HEALTHY"

        a.import_records(real_records()[40:45])
        assert agent.call("POST", "/sync")[0] == 202
        agent.wait_for(r"cycle 2: success")
        b.git("pull")
        assert len(b.dump()) == 45

        local.write_text(DOWN + without_uri(reachable))
        agent.call("POST", "/sync")
        agent.wait_for(r"cycle 3: failed.*status DEGRADED")
        agent.call("POST", "/sync")
        agent.wait_for(r"cycle 4: failed.*status DEGRADED")
        local.write_text(reachable)
        agent.call("POST", "/sync")
        agent.wait_for(r"cycle 5: success.*status HEALTHY")
        history = agent.call("GET", "/history?limit=50")[1]
        assert any(
            entry["operation"] == "sync" and entry["status"] == "failed" for entry in history
        )
        assert agent.call("GET", "/pending") == (200, [])
    finally:
        assert agent.stop() == 0
    fired = [json.loads(line) for line in alerts.read_text().split("\n") if line]
    assert [document["status"] for document in fired] == ["DEGRADED", "HEALTHY"]
    assert "stopped after 5 cycle(s)" in agent.wait_for("stopped")


class HeldPush:
    """The remote's pre-receive hook, holding a push until the test lets it go: it says it
    started through one FIFO, and waits for a line on another. No clock involved."""

    def __init__(self, remote: Path) -> None:
        self.started, self.release = remote / "push-started", remote / "push-release"
        os.mkfifo(self.started)
        os.mkfifo(self.release)
        hook = remote / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\necho started > '{self.started}'\nread go < '{self.release}'\n")
        hook.chmod(0o755)
        self._started = os.open(self.started, os.O_RDONLY | os.O_NONBLOCK)

    def wait_started(self, timeout: float = 60) -> None:
        readable, _, _ = select.select([self._started], [], [], timeout)
        assert readable, "the sync cycle never reached the push"
        assert os.read(self._started, 100) == b"started\n"

    def let_go(self, timeout: float = 60) -> None:
        writer = threading.Thread(target=self.release.write_text, args=("go\n",), daemon=True)
        writer.start()
        writer.join(timeout)
        assert not writer.is_alive(), "the held push never read its release"
        os.close(self._started)


def test_the_api_answers_while_a_sync_runs(pair):
    """Requests during a cycle that is provably under way (its push is held by the remote):
    every one is answered at once, and says the cycle runs (the API never waits for it)."""
    a, _ = pair
    a.import_records(real_records())
    agent = RunningAgent(a)
    try:
        agent.wait_for(r"cycle 1: success")
        held = HeldPush(a.root.parent / "remote.git")
        a.import_records([{**r, "note": "edited"} for r in real_records()], "upsert")
        assert agent.call("POST", "/sync")[0] == 202
        held.wait_started()
        answers = [agent.call("GET", "/health") for _ in range(30)]  # under the burst of 40
        held.let_go()
        assert [status for status, _ in answers] == [200] * 30
        assert all(health["syncing"] for _, health in answers), answers
        agent.wait_for(r"cycle 2: success")
    finally:
        agent.stop()


def test_the_api_key_and_the_bind_rules(pair):
    a, _ = pair
    agent = RunningAgent(a, env={"DBSYNC_API_KEY": "k3y"})
    try:
        assert agent.call("GET", "/status")[0] == 401
        assert agent.call("GET", "/status", key="nope")[0] == 401
        assert agent.call("GET", "/health", key="k3y")[0] == 200
        assert agent.call("GET", "/nowhere", key="k3y")[0] == 404
        assert agent.call("POST", "/health", key="k3y")[0] == 405
    finally:
        agent.stop()
    refused = a.dbsync("agent", "--bind", "0.0.0.0", ok=False)
    assert refused.code == 2 and "DBSYNC_API_KEY" in refused.err
