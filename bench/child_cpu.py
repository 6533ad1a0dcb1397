"""``python child_cpu.py LOG NAME -- COMMAND...``: run COMMAND, append its CPU time to LOG.

What ``bench.pull`` puts around the merge driver and the post-merge hook of a ``git pull``, to
tell dbsync's share of the pull's CPU time from git's own: COMMAND's user + system time and
that of every process it waited for (``os.wait4``), as one JSON line ``{"name", "cpu_seconds",
"peak_rss_mb"}``; the exit code is COMMAND's. The standard library only, run by path: the hook
and the driver run with ``PYTHONSAFEPATH`` set, so this file imports nothing of the bench.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    log, name, separator, *command = argv
    assert separator == "--", "usage: child_cpu.py LOG NAME -- COMMAND..."
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    figures = {
        "name": name,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }
    with open(log, "a") as handle:
        handle.write(json.dumps(figures) + "\n")
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
