"""The README's first command: the demo converges, and says each step."""

import re
import subprocess
import sys
from pathlib import Path

STEPS = 12  # setup, first sync (3), concurrent work (3), the exchange (5)


def test_the_demo_converges_and_prints_each_step(tmp_path):
    dbsync = str(Path(sys.executable).with_name("dbsync"))
    done = subprocess.run(
        [dbsync, "demo", "--keep", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    numbered = [int(n) for n in re.findall(r"^\s*(\d+)\. ", done.stdout, re.MULTILINE)]
    assert numbered == list(range(1, STEPS + 1)), done.stdout  # every step, once, in order
    for expected in (
        "post-merge hook merged: 190 records",
        "the merge driver merged both snapshots",
        "databases identical: yes",
        "snapshots identical: yes",
        "records: pnls 195 (190 + 3 + 2), trades 1",
        "the newer edit won on both: yes",
    ):
        assert expected in done.stdout
    laptop = tmp_path / "demo" / "laptop" / "database_backup" / "pnls.jsonl"
    server = tmp_path / "demo" / "server" / "database_backup" / "pnls.jsonl"
    assert laptop.read_bytes() == server.read_bytes()
