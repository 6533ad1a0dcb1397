"""A signal sent by dbsync to itself at a chosen point: how the tests stop a real dbsync process
(started by git as a hook, or by the test) at an exact moment.

``at(folder, spec, signal)`` gives the environment that does it: ``PYTHONPATH`` holds a
``sitecustomize`` that wraps one internal function (``module:attribute[.method]:n``) so that its
(n+1)-th call sends the signal to its own process — SIGKILL, which nothing intercepts, or SIGINT,
a Ctrl-C. Nothing in dbsync knows about it.
"""

from __future__ import annotations

from pathlib import Path

SITECUSTOMIZE = """
import importlib, os, signal

spec = os.environ.get("DBSYNC_TEST_KILL")
if spec:
    module_name, attribute, calls = spec.split(":")
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    function, seen = getattr(owner, name), []
    sent = getattr(signal, os.environ.get("DBSYNC_TEST_SIGNAL", "SIGKILL"))

    def signalling(*args, **kwargs):
        seen.append(1)
        if len(seen) == int(calls) + 1:
            os.kill(os.getpid(), sent)
        return function(*args, **kwargs)

    setattr(owner, name, signalling)
"""


def at(folder: Path, spec: str, signal: str = "SIGKILL") -> dict[str, str]:
    """The environment variables that make dbsync send ``signal`` to itself at ``spec``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": str(folder), "DBSYNC_TEST_KILL": spec, "DBSYNC_TEST_SIGNAL": signal}
