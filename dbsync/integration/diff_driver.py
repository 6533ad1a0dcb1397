"""``dbsync diff-driver``: snapshot files in ``git diff`` and ``git log -p``, record by record.

Two entry points, because git has two kinds of diff driver (see ``hooks.driver_settings``):

* as ``diff.dbsync.command`` git runs ``diff-driver PATH OLD-FILE OLD-HEX OLD-MODE NEW-FILE
  NEW-HEX NEW-MODE`` and prints what it prints: the record-level changes of ``dbsync diff``;
* as ``diff.dbsync.textconv`` (``git log -p``, ``git show``) git runs ``diff-driver --textconv
  FILE`` and line-diffs the output: one line per record, its key first.

A diff must never stop git: a file that is not a valid snapshot (a conflicted one, say) is
shown as plain text instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path

import orjson

from dbsync.core.ordering import describe_key
from dbsync.core.snapshot import line_body, line_document
from dbsync.edges.files import scratch_folder
from dbsync.edges.snapshot_files import read_sections
from dbsync.errors import DbsyncError
from dbsync.runs.diff import RecordChange, change_text, diff_paths

NO_FILE = "/dev/null"


def external_diff(arguments: list[str]) -> Iterator[str]:
    """The lines ``git diff`` shows for one snapshot file (git's external diff arguments)."""
    if len(arguments) == 1:
        yield f"* Unmerged path {arguments[0]}"
        return
    path, old, new = arguments[0], arguments[1], arguments[4]
    yield f"diff --dbsync a/{path} b/{path}"
    try:
        changes = [change_text(change) for change in _record_changes(old, new)]
    except DbsyncError as error:
        yield f"(not a valid snapshot on one side, {error.message}: showing the text diff)"
        yield from _text_diff(path, old, new)
        return
    yield from changes
    yield f"{len(changes)} record(s) differ"


def _record_changes(old: str, new: str) -> Iterator[RecordChange]:
    with scratch_folder("diff") as empty:
        before = Path(empty if old == NO_FILE else old)
        after = Path(empty if new == NO_FILE else new)
        yield from diff_paths(before, after)


def _text_diff(path: str, old: str, new: str) -> Iterator[str]:
    before, after = (_text_lines(name) for name in (old, new))
    for line in difflib.unified_diff(before, after, f"a/{path}", f"b/{path}", lineterm=""):
        yield line.rstrip("\n")


def _text_lines(name: str) -> list[str]:
    return [] if name == NO_FILE else Path(name).read_text(errors="replace").splitlines()


def textconv(path: Path) -> Iterator[bytes]:
    """A snapshot as git should line-diff it: a comment per collection, then per record
    ``<collection> <key>: <document>``. Anything else passes through unchanged."""
    try:
        lines = list(_readable_lines(path))
    except DbsyncError:
        yield path.read_bytes()
        return
    yield from lines


def _readable_lines(path: Path) -> Iterator[bytes]:
    for section in read_sections(path):
        name, rules = section.header.collection, section.header.rules
        rule_text = orjson.dumps(
            {"key": rules.key, "timestamp": rules.timestamp, "preserve": rules.preserve}
        )
        yield f"# dbsync snapshot of {name}: ".encode() + rule_text + b"\n"
        for line in section.records:
            key = describe_key(line_document(line), rules.key)
            yield f"{name} {key}: ".encode() + line_body(line) + b"\n"
