"""A signal sent by dbsync at a chosen point, to itself or to its MongoDB server: how the tests
stop a real dbsync process (started by git as a hook, or by the test), or the server under it,
at an exact moment.

``at(folder, spec, signal)`` gives the environment that does it: ``PYTHONPATH`` holds a
``sitecustomize`` that wraps one internal function (``module:attribute[.method]:n``) so that its
(n+1)-th call sends the signal to its own process — SIGKILL, which nothing intercepts, or SIGINT,
a Ctrl-C. With ``server``, the signal goes to that server's process instead, and the call goes
on once the server's port refuses connections (it is down). Nothing in dbsync knows about it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.mongo_servers import MongoServer

SITECUSTOMIZE = """
import importlib, os, signal, socket, time

spec = os.environ.get("DBSYNC_TEST_KILL")
if spec:
    module_name, attribute, calls = spec.split(":")
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    function, seen = getattr(owner, name), []
    sent = getattr(signal, os.environ.get("DBSYNC_TEST_SIGNAL", "SIGKILL"))
    server = os.environ.get("DBSYNC_TEST_SERVER")  # PID:PORT, the server to signal instead

    def down(port):
        for _ in range(1000):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return
            time.sleep(0.01)
        raise RuntimeError(f"the server on port {port} still answers")

    def signalling(*args, **kwargs):
        seen.append(1)
        if len(seen) == int(calls) + 1:
            if server:
                pid, port = map(int, server.split(":"))
                os.kill(pid, sent)
                down(port)
            else:
                os.kill(os.getpid(), sent)
        return function(*args, **kwargs)

    setattr(owner, name, signalling)
"""


def at(
    folder: Path, spec: str, signal: str = "SIGKILL", server: MongoServer | None = None
) -> dict[str, str]:
    """The environment variables that make dbsync send ``signal`` to itself at ``spec``, or to
    ``server`` (a SecantusDB process the tests started)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # the folder first, then the path the tests run with: the signalled dbsync is the tested one
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "DBSYNC_TEST_KILL": spec, "DBSYNC_TEST_SIGNAL": signal}
    if server is not None:
        assert server.process is not None, "only a server the tests started can be signalled"
        env["DBSYNC_TEST_SERVER"] = f"{server.process.pid}:{server.port}"
    return env
