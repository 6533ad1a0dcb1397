"""The agent's HTTP API: JSON over the standard library's threaded HTTP server.

Routes: ``GET /`` (the status page, HTML), ``GET /metrics`` (Prometheus), ``GET /health``,
``GET /status``, ``GET /history?limit=N``, ``GET /pending``, ``POST /sync`` and
``POST /pending/{id}/retry``. What they answer comes from an ``ApiBackend`` (the agent's state
store and sync loop), so the server knows nothing of MongoDB or git.

Bound to 127.0.0.1 by default. Binding anywhere else requires an API key (``Authorization:
Bearer <key>``, compared in constant time); requests are bounded in size, and each client in
rate (a token bucket), so a misbehaving client cannot starve a sync.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from dbsync.errors import UsageError

MAX_BODY_BYTES = 64 * 1024
DEFAULT_HISTORY = 20
MAX_HISTORY = 1000


class ApiBackend(Protocol):
    def health(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def history(self, limit: int) -> list[dict[str, Any]]: ...

    def pending(self) -> list[dict[str, Any]]: ...

    def trigger_sync(self) -> dict[str, Any]: ...

    def retry_pending(self, pending_id: int) -> dict[str, Any] | None:
        """The retry's outcome, or None when there is no such pending merge."""
        ...

    def page(self) -> str:
        """The status page (``dbsync.agent.status_page``)."""
        ...

    def metrics(self) -> bytes:
        """The Prometheus exposition text (``dbsync.agent.metrics``)."""
        ...


@dataclass(frozen=True)
class Text:
    """A response that is not JSON: the page, the metrics."""

    body: bytes
    content_type: str


HTML = "text/html; charset=utf-8"
METRICS = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class RateLimiter:
    """A token bucket per client address: ``rate`` requests a second, bursts of ``burst``."""

    rate: float = 20.0
    burst: float = 40.0
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, client: str) -> bool:
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            return allowed


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def require_key_for(bind: str, api_key: str | None) -> None:
    """Serving beyond this machine without a key would let anyone trigger syncs."""
    if not is_loopback(bind) and not api_key:
        raise UsageError(
            f"refusing to serve the API on {bind} without an API key",
            hint="set DBSYNC_API_KEY to a long random secret, or bind to 127.0.0.1",
        )


_RETRY = re.compile(r"/pending/(\d+)/retry")
_ROUTES = {
    "/": "GET",
    "/metrics": "GET",
    "/health": "GET",
    "/status": "GET",
    "/history": "GET",
    "/pending": "GET",
    "/sync": "POST",
}


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the agent logs one line per sync cycle, not one per request."""

    def _dispatch(self, method: str) -> None:
        refusal = self._refusal()
        if refusal is not None:
            self._send(*refusal)
            return
        path = urlsplit(self.path).path
        expected = "POST" if _RETRY.fullmatch(path) else _ROUTES.get(path)
        if expected is None:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})
        elif method != expected:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{path} takes {expected}"})
        else:
            self._send(*self._answer_or_error(path))

    def _answer_or_error(self, path: str) -> tuple[HTTPStatus, Any]:
        """A backend that fails (a damaged state store, say) gets a 500 that says why, not a
        connection closed without an answer; the server itself goes on."""
        try:
            return self._answer(path)
        except Exception as error:  # the server's rim: every request gets an answer
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"}

    def _refusal(self) -> tuple[HTTPStatus, dict[str, Any]] | None:
        if not self.server.limiter.allow(self.client_address[0]):
            return HTTPStatus.TOO_MANY_REQUESTS, {"error": "too many requests; slow down"}
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request body too large"}
        if length:
            self.rfile.read(length)
        if not self._authorised():
            return HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong API key"}
        return None

    def _authorised(self) -> bool:
        key = self.server.api_key
        if key is None:
            return True
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {key}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def _answer(self, path: str) -> tuple[HTTPStatus, Any]:
        backend = self.server.backend
        if path == "/":
            return HTTPStatus.OK, Text(backend.page().encode(), HTML)
        if path == "/metrics":
            return HTTPStatus.OK, Text(backend.metrics(), METRICS)
        if path == "/health":
            return HTTPStatus.OK, backend.health()
        if path == "/status":
            return HTTPStatus.OK, backend.status()
        if path == "/history":
            return self._history()
        if path == "/pending":
            return HTTPStatus.OK, backend.pending()
        if path == "/sync":
            return HTTPStatus.ACCEPTED, backend.trigger_sync()
        match = _RETRY.fullmatch(path)
        assert match is not None
        outcome = backend.retry_pending(int(match.group(1)))
        if outcome is None:
            return HTTPStatus.NOT_FOUND, {"error": f"no pending merge {match.group(1)}"}
        return HTTPStatus.OK, outcome

    def _history(self) -> tuple[HTTPStatus, Any]:
        values = parse_qs(urlsplit(self.path).query).get("limit", [str(DEFAULT_HISTORY)])
        if not values[0].isdigit() or not 1 <= int(values[0]) <= MAX_HISTORY:
            return HTTPStatus.BAD_REQUEST, {"error": f"limit must be 1..{MAX_HISTORY}"}
        return HTTPStatus.OK, self.server.backend.history(int(values[0]))

    def _send(self, status: HTTPStatus, payload: Any) -> None:
        if isinstance(payload, Text):
            body, content_type = payload.body, payload.content_type
        else:
            body, content_type = json.dumps(payload).encode() + b"\n", "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if content_type == HTML:  # the page loads nothing from anywhere, and says so
            self.send_header(
                "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"
            )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ApiServer(ThreadingHTTPServer):
    """A threaded server whose handlers answer from ``backend``."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        backend: ApiBackend,
        *,
        api_key: str | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        require_key_for(address[0], api_key)
        super().__init__(address, _Handler)
        self.backend = backend
        self.api_key = api_key or None
        self.limiter = limiter or RateLimiter()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="dbsync-api", daemon=True)
        thread.start()
        return thread
