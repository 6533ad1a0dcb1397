"""``dbsync agent``: sync on a schedule, serve the HTTP API, alert on DEGRADED and on recovery.

For assets that run unattended. One worker thread runs cycles — a full ``dbsync sync`` under
the asset's lock, which retries pending merges first — so two cycles never overlap; after a
failed cycle the next waits longer (doubling, capped), and a success restores the schedule.
``POST /sync`` asks the worker for a cycle now. SIGTERM and SIGINT stop it cleanly: the cycle
under way finishes, nothing is cut in half.

After every cycle the status is computed (the document of ``dbsync status --json``); when it
becomes DEGRADED, and again when it stops being DEGRADED, ``alert_command`` (``dbsync.toml``)
runs with that document on stdin — not again while the status stays where it is.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dbsync.agent.api import ApiServer
from dbsync.agent.metrics import MetricsInput, render_metrics
from dbsync.agent.status_page import PageInput, render_page
from dbsync.config import Config
from dbsync.edges.state import FAILED, SUCCESS, reading_state
from dbsync.errors import DbsyncError, UsageError
from dbsync.runs import status as status_service
from dbsync.runs import sync as sync_service
from dbsync.runs.pipeline import retry_run

PAGE_HISTORY = 200
"""Runs the status page charts: the last few days of a 5-minute agent with a collection or two."""
PAGE_CONFLICTS = 10
MAX_BACKOFF_SECONDS = 3600.0
ALERT_TIMEOUT_SECONDS = 30.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_UNITS: dict[str | None, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_interval(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``250ms`` or plain seconds → seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(f"cannot read the interval {text!r}", hint="use e.g. 30s, 5m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def backoff(interval: float, failures: int) -> float:
    """The wait before the next cycle: the interval, doubled per consecutive failure, capped."""
    return min(interval * (1 << min(failures, 16)), max(interval, MAX_BACKOFF_SECONDS))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Alerter:
    """Runs ``command`` when the status enters DEGRADED and when it leaves it."""

    command: str | None
    degraded: bool = False
    fired: int = 0

    def observe(self, document: dict[str, Any]) -> bool:
        """Whether this status is a transition (and the command ran for it)."""
        now_degraded = document.get("status") == status_service.DEGRADED
        if now_degraded == self.degraded:
            return False
        self.degraded = now_degraded
        if self.command:
            subprocess.run(
                self.command,
                shell=True,
                input=json.dumps(document),
                text=True,
                timeout=ALERT_TIMEOUT_SECONDS,
                check=False,
            )
            self.fired += 1
        return True


@dataclass
class Agent:
    """The schedule, the worker and what the API asks of them."""

    load_config: Callable[[], Config]
    interval: float
    log: Callable[[str], None]
    cycle_runner: Callable[[Config], str] | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)
    busy: threading.Lock = field(default_factory=threading.Lock)
    failures: int = 0
    cycles: int = 0
    last_cycle: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)
    alerter: Alerter | None = None

    # ------------------------------------------------------------ the worker

    def run_cycle(self) -> dict[str, Any]:
        """One sync cycle, then the status and any alert; never raises."""
        with self.busy:
            config = self.load_config()
            began = time.monotonic()
            try:
                summary = (self.cycle_runner or sync_cycle)(config)
                outcome, error = SUCCESS, None
            except DbsyncError as failure:
                summary, outcome, error = "", FAILED, failure.message.splitlines()[0]
            self.failures = 0 if outcome == SUCCESS else self.failures + 1
            self.cycles += 1
            status = status_service.health(config)
            self._alert(config, status)
            self.last_cycle = {
                "time": _now(),
                "outcome": outcome,
                "error": error,
                "duration_ms": int((time.monotonic() - began) * 1000),
                "status": status["status"],
            }
        line = f"{_now()} cycle {self.cycles}: {outcome} in {self.last_cycle['duration_ms']} ms"
        line += f"; {summary}" if summary else ""
        line += f"; error: {error}" if error else ""
        self.log(f"{line}; status {status['status']}")
        return self.last_cycle

    def _alert(self, config: Config, status: dict[str, Any]) -> None:
        if self.alerter is None:
            self.alerter = Alerter(config.alert_command)
        self.alerter.command = config.alert_command
        if self.alerter.observe(status) and config.alert_command:
            self.log(f"{_now()} alert: status {status['status']}, ran alert_command")

    def serve_schedule(self) -> None:
        """Cycles until ``stopping`` is set: at once, then every interval (or sooner on wake)."""
        while not self.stopping.is_set():
            self.run_cycle()
            self.wake.wait(backoff(self.interval, self.failures))
            self.wake.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def stop_from_signal(self, *_: object) -> None:
        """A signal handler that stops the agent without taking a lock in the handler.

        A handler runs in the main thread between two bytecodes, possibly while that thread holds
        the lock inside ``wake`` (entering or leaving ``wake.wait``): ``stop()`` called there
        would wait for a lock its own thread holds, for ever. A thread of its own takes the locks
        once the main thread lets them go.
        """
        threading.Thread(target=self.stop, name="dbsync-agent-stop", daemon=True).start()

    # ------------------------------------------------------------ the API backend

    def health(self) -> dict[str, Any]:
        return {
            "alive": not self.stopping.is_set(),
            "uptime_seconds": int(time.monotonic() - self.started),
            "cycles": self.cycles,
            "consecutive_failures": self.failures,
            "syncing": self.busy.locked(),
            "last_cycle": self.last_cycle,
        }

    def status(self) -> dict[str, Any]:
        return status_service.health(self.load_config())

    def history(self, limit: int) -> list[dict[str, Any]]:
        with reading_state(self.load_config().state_dir) as state:
            return [entry.to_json() for entry in state.history(limit)] if state else []

    def pending(self) -> list[dict[str, Any]]:
        with reading_state(self.load_config().state_dir) as state:
            waiting = state.list_pending() if state else []
        return [
            {
                "id": p.id,
                "source": p.source,
                "commit": p.commit,
                "created": p.created,
                "attempts": p.attempts,
                "last_error": p.last_error,
            }
            for p in waiting
        ]

    def trigger_sync(self) -> dict[str, Any]:
        """Ask the worker for a cycle now (answered at once: cycles can take a while)."""
        self.wake.set()
        return {"queued": True, "syncing": self.busy.locked(), "cycles": self.cycles}

    def retry_pending(self, pending_id: int) -> dict[str, Any] | None:
        config = self.load_config()
        with self.busy:
            return retry_one_pending(config, pending_id)

    def page(self) -> str:
        config = self.load_config()
        with reading_state(config.state_dir) as state:
            history = state.history(PAGE_HISTORY) if state else []
            conflicts = state.losing_versions(limit=PAGE_CONFLICTS) if state else []
        now = datetime.datetime.now(datetime.timezone.utc)
        document = status_service.health(config)
        return render_page(PageInput(document, history, conflicts, now, self.health()))

    def metrics(self) -> bytes:
        with reading_state(self.load_config().state_dir) as state:
            data = MetricsInput(
                history=state.history() if state else [],
                collections=state.collection_states() if state else [],
                pending_merges=len(state.list_pending()) if state else 0,
                conflicts_decided=Counter(v.collection for v in state.losing_versions())
                if state
                else {},
                agent=self.health(),
            )
        return render_metrics(data)


def _quiet(message: str) -> None:
    """The agent's runs print nothing: their outcome is in its log line and the history."""


def sync_cycle(config: Config, retry: sync_service.PushRetry | None = None) -> str:
    """One ``dbsync sync``; its steps, and what it warned of, as a summary line."""
    result = sync_service.sync_run(config, _quiet, retry=retry)
    warnings = "".join(f"; warning: {message}" for message in result.warnings)
    return ", ".join(result.steps[1:]) + warnings


def retry_one_pending(config: Config, pending_id: int) -> dict[str, Any] | None:
    """Merge one queued merge now; None when there is no such entry."""
    with reading_state(config.state_dir) as state:
        known = state is not None and any(p.id == pending_id for p in state.list_pending())
    if not known:
        return None
    try:
        retry_run(config, pending_id, say=_quiet, warn=_quiet)  # the retry every run makes first
    except DbsyncError as error:
        return {"id": pending_id, "status": FAILED, "error": error.message}
    return {"id": pending_id, "status": "merged"}


def run_agent(agent: Agent, *, bind: str, port: int, api_key: str | None) -> None:
    """Serve the API in a thread and run the schedule in this one until ``agent.stop()``."""
    server = ApiServer((bind, port), agent, api_key=api_key)
    server.serve_in_thread()
    agent.log(
        f"{_now()} dbsync agent: every {agent.interval:g} s; API on http://{bind}:{server.port}"
    )
    try:
        agent.serve_schedule()
    finally:
        server.shutdown()
        server.server_close()
        agent.log(f"{_now()} dbsync agent stopped after {agent.cycles} cycle(s)")
