"""The agent's HTTP API against a fake backend, over real loopback sockets."""

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from dbsync.agent.api import ApiServer, RateLimiter, require_key_for
from dbsync.errors import UsageError


class FakeBackend:
    def __init__(self) -> None:
        self.syncs = 0
        self.retried: list[int] = []

    def health(self):
        return {"ok": True}

    def status(self):
        return {"status": "HEALTHY", "reasons": []}

    def history(self, limit):
        return [{"operation": "export", "n": i} for i in range(limit)]

    def pending(self):
        return [{"id": 3, "source": "database_backup"}]

    def trigger_sync(self):
        self.syncs += 1
        return {"started": True}

    def retry_pending(self, pending_id):
        if pending_id != 3:
            return None
        self.retried.append(pending_id)
        return {"id": 3, "status": "merged"}

    def page(self):
        return "<!DOCTYPE html><title>dbsync</title>"

    def metrics(self):
        return b"# HELP dbsync_pending_merges x\n# TYPE dbsync_pending_merges gauge\n"


@pytest.fixture
def serve():
    servers = []

    def start(**kwargs):
        backend = kwargs.pop("backend", FakeBackend())
        server = ApiServer(("127.0.0.1", 0), backend, **kwargs)
        server.serve_in_thread()
        servers.append(server)
        return server, backend

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def call(server, method, path, *, key=None, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}", method=method, data=body
    )
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_every_route_answers_json(serve):
    server, backend = serve()
    assert call(server, "GET", "/health") == (200, {"ok": True})
    assert call(server, "GET", "/status")[1]["status"] == "HEALTHY"
    assert len(call(server, "GET", "/history?limit=3")[1]) == 3
    assert call(server, "GET", "/pending")[1][0]["id"] == 3
    assert call(server, "POST", "/sync") == (202, {"started": True})
    assert backend.syncs == 1
    assert call(server, "POST", "/pending/3/retry") == (200, {"id": 3, "status": "merged"})
    assert call(server, "POST", "/pending/9/retry")[0] == 404


def test_unknown_paths_bad_methods_and_bad_limits(serve):
    server, _ = serve()
    assert call(server, "GET", "/nope")[0] == 404
    assert call(server, "GET", "/sync")[0] == 405
    assert call(server, "POST", "/status")[0] == 405
    assert call(server, "DELETE", "/pending")[0] == 405
    assert call(server, "GET", "/history?limit=abc")[0] == 400
    assert call(server, "GET", "/history?limit=0")[0] == 400


def test_a_key_is_required_when_set_and_compared_exactly(serve):
    server, backend = serve(api_key="s3cret")
    assert call(server, "GET", "/status")[0] == 401
    assert call(server, "GET", "/status", key="wrong")[0] == 401
    assert call(server, "POST", "/sync", key="s3cret-and-more")[0] == 401
    assert backend.syncs == 0
    assert call(server, "GET", "/status", key="s3cret")[0] == 200


def test_binding_beyond_loopback_needs_a_key():
    with pytest.raises(UsageError, match="without an API key"):
        require_key_for("0.0.0.0", None)
    require_key_for("0.0.0.0", "key")
    require_key_for("127.0.0.1", None)
    require_key_for("::1", None)


def test_oversized_requests_are_refused(serve):
    server, backend = serve()
    status, _ = call(server, "POST", "/sync", body=b"x" * (65 * 1024))
    assert status == 413 and backend.syncs == 0


def test_each_client_is_rate_limited():
    clock = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3.0, clock=lambda: clock[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    clock[0] += 1.0
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]


def test_the_api_keeps_answering_while_a_slow_backend_call_runs(serve):
    started, release = threading.Event(), threading.Event()

    class SlowSync(FakeBackend):
        def trigger_sync(self):
            started.set()
            assert release.wait(30), "the test never released the slow call"
            return super().trigger_sync()

    server, backend = serve(backend=SlowSync())
    slow_answer = []
    slow = threading.Thread(target=lambda: slow_answer.append(call(server, "POST", "/sync")))
    slow.start()
    assert started.wait(30), "the slow call never reached the backend"
    answers = [call(server, "GET", "/health")[0] for _ in range(30)]
    still_running = slow.is_alive() and backend.syncs == 0
    release.set()
    slow.join(30)
    assert still_running, "the slow call ended before the other requests were answered"
    assert answers == [200] * 30
    assert slow_answer == [(202, {"started": True})] and backend.syncs == 1


def test_requests_past_a_client_s_burst_are_refused_at_once_not_queued(serve):
    """A frozen clock: the bucket never refills, so exactly ``burst`` requests pass, from any
    number of threads, and every other one is answered 429 at once."""
    limiter = RateLimiter(rate=2.0, burst=5.0, clock=lambda: 100.0)
    server, _ = serve(limiter=limiter)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: call(server, "GET", "/health")[0], range(40)))
    assert sorted(answers) == [200] * 5 + [429] * 35
    assert call(server, "GET", "/health") == (429, {"error": "too many requests; slow down"})


def fetch_text(server, path, key=None):
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def test_the_page_and_the_metrics_are_served_as_text(serve):
    server, _ = serve()
    status, headers, body = fetch_text(server, "/")
    assert status == 200 and body.startswith("<!DOCTYPE html>")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, headers, body = fetch_text(server, "/metrics")
    assert status == 200 and "dbsync_pending_merges" in body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert call(server, "POST", "/")[0] == 405
    assert call(server, "POST", "/metrics")[0] == 405


def test_the_page_and_the_metrics_need_the_key_when_one_is_set(serve):
    server, _ = serve(api_key="s3cret")
    assert fetch_text(server, "/")[0] == 401
    assert fetch_text(server, "/metrics")[0] == 401
    assert fetch_text(server, "/", key="s3cret")[0] == 200
    assert fetch_text(server, "/metrics", key="s3cret")[0] == 200


def test_a_failing_backend_answers_500_and_the_server_goes_on(serve):
    class Broken(FakeBackend):
        def page(self):
            raise RuntimeError("state store gone")

    server, _ = serve(backend=Broken())
    status, _, body = fetch_text(server, "/")
    assert status == 500 and "state store gone" in body
    assert call(server, "GET", "/health")[0] == 200
