"""``python -m bench.counted ARGS...``: ``dbsync ARGS...``, counting what a MongoDB server sent.

A pymongo command listener, registered before dbsync makes its client, counts the documents of
``DBSYNC_BENCH_COLLECTION`` in every ``find`` and ``getMore`` reply (the documents read from the
server) and the events of every change stream read (``aggregate`` and its ``getMore``s); as the
command exits they go, with its peak resident memory (VmHWM, KiB), to the JSON file
``DBSYNC_BENCH_COUNTS`` names. The listener only adds up batch lengths: its cost is noise
beside decoding the documents.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

from pymongo import monitoring

from bench.peak import peak_kib

COUNTS_FILE = "DBSYNC_BENCH_COUNTS"
COLLECTION = "DBSYNC_BENCH_COLLECTION"


class Reads(monitoring.CommandListener):
    """Documents and change events of one collection the server sent, by the commands that
    asked for them: a ``find`` and the ``getMore``s of its cursor are documents; an
    ``aggregate`` opening a change stream and the ``getMore``s of its cursor are events."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.documents = self.events = 0
        self.commands: dict[str, int] = {}
        self._asked: dict[int, str] = {}  # request id -> what its reply holds
        self._cursors: dict[int, str] = {}  # cursor id -> what its batches hold

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name, command = event.command_name, event.command
        self.commands[name] = self.commands.get(name, 0) + 1
        if name == "find" and command.get("find") == self.collection:
            self._asked[event.request_id] = "documents"
        elif name == "aggregate" and command.get("aggregate") == self.collection:
            pipeline = command.get("pipeline") or [{}]
            if "$changeStream" in pipeline[0]:
                self._asked[event.request_id] = "events"
        elif name == "getMore" and (kind := self._cursors.get(int(command["getMore"]))):
            self._asked[event.request_id] = kind

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        kind = self._asked.pop(event.request_id, None)
        if kind is None:
            return
        cursor: dict[str, Any] = event.reply.get("cursor") or {}
        if cursor.get("id"):
            self._cursors[int(cursor["id"])] = kind
        batch = len(cursor.get("firstBatch", cursor.get("nextBatch", [])))
        if kind == "documents":
            self.documents += batch
        else:
            self.events += batch

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._asked.pop(event.request_id, None)


def main() -> None:
    reads = Reads(os.environ[COLLECTION])
    monitoring.register(reads)

    def write() -> None:
        found = {
            "documents": reads.documents,
            "events": reads.events,
            "commands": reads.commands,
            "peak_kib": peak_kib(),
        }
        Path(os.environ[COUNTS_FILE]).write_text(json.dumps(found))

    atexit.register(write)
    from dbsync.launch import main as dbsync

    sys.argv = ["dbsync", *sys.argv[1:]]
    dbsync()


if __name__ == "__main__":
    main()
