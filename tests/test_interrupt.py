"""Ctrl-C exits 130, says so without a traceback, and leaves nothing half-written."""

import os
import signal
import subprocess

from project import clean_env


def open_for_writing(fifo, process) -> int:
    """Open the FIFO once dbsync has opened it for reading: dbsync is then inside the import,
    lock taken and run recorded. Gives up if dbsync exits first."""
    while process.poll() is None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            os.sched_yield()
    raise AssertionError(f"dbsync exited {process.returncode}: {process.communicate()}")


def interrupt(process, presses=20):
    """Ctrl-C, pressed again while the process runs, as a person would.

    One press can land between two steps of C code, after Python noted the signal and before
    the read that then blocks on the FIFO: Python acts on it only when that read returns, and
    nothing more comes. A second press interrupts the blocked read. (Seen under load only.)
    """
    for _ in range(presses):
        process.send_signal(signal.SIGINT)
        try:
            return process.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            continue
    process.kill()
    raise AssertionError(f"dbsync ignored {presses} Ctrl-C: {process.communicate()}")


def test_ctrl_c_during_an_import_exits_130_and_writes_nothing(pnl_project):
    fifo = pnl_project.root / "incoming.json"
    os.mkfifo(fifo)
    process = pnl_project.popen("import", str(fifo), "-c", "other", env=clean_env())
    writer = open_for_writing(fifo, process)
    try:
        os.write(writer, b'{"_id": 1, "half": "of a document')
        _, stderr = interrupt(process)
    finally:
        os.close(writer)
    assert process.returncode == 130, stderr
    assert "interrupted (Ctrl-C)" in stderr and "Traceback" not in stderr
    assert "other" not in pnl_project.json("stats")["collections"]
    last = pnl_project.history()[0]
    assert (last["operation"], last["status"]) == ("import", "cancelled")
    assert last["error"] == "interrupted (Ctrl-C)"
