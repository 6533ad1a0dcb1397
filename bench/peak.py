"""``python -m bench.peak ARGS...``: runs ``dbsync ARGS...`` and, as it exits, writes its peak
resident memory (VmHWM, in KiB) to the file ``DBSYNC_BENCH_PEAK`` names.

``ru_maxrss`` from ``wait4`` cannot be used for this: Linux counts in it the memory of the
process that started the command (the bench's driver) before ``exec``. ``VmHWM`` is the
command's own. Everything else is what the ``dbsync`` console script does.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

PEAK_FILE = "DBSYNC_BENCH_PEAK"


def peak_kib() -> int:
    """This process's peak resident memory so far (VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _write_peak() -> None:
    Path(os.environ[PEAK_FILE]).write_text(str(peak_kib()))


if __name__ == "__main__":
    atexit.register(_write_peak)
    from dbsync.launch import main

    sys.argv = ["dbsync", *sys.argv[1:]]
    main()
