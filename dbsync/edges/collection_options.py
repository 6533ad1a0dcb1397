"""The options a collection must be created with on another asset, beside its snapshot.

A capped collection is a fixed-size buffer: a copy created implicitly by a merge's first insert
would be a plain collection that grows without bound. Its export writes
``<collection>.collection.json`` (``{"capped": true, "size": N, "max": M}``) next to the
snapshot file; a merge into a database that lacks the collection creates it with those options
first. The file is committed with the snapshot (git carries it like any text file); it is not a
``.jsonl`` file, so no snapshot reader takes it, and a plain collection has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dbsync.edges.files import write_bytes_atomically
from dbsync.errors import InvalidInput

SUFFIX = ".collection.json"
CARRIED = {"capped": bool, "size": int, "max": int}


def options_file(folder: Path, collection: str) -> Path:
    return folder / f"{collection}{SUFFIX}"


def write_options(folder: Path, collection: str, options: dict[str, Any]) -> None:
    """Write the collection's options beside its snapshot, or remove a stale file."""
    path = options_file(folder, collection)
    if not options:
        path.unlink(missing_ok=True)
        return
    text = json.dumps(options, sort_keys=True) + "\n"
    if not path.exists() or path.read_text() != text:
        write_bytes_atomically(path, text.encode())


def read_options(folder: Path, collection: str) -> dict[str, Any]:
    """The options beside a snapshot (empty: none); a damaged file is invalid input."""
    path = options_file(folder, collection)
    if not path.is_file():
        return {}
    try:
        options = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidInput(f"{path}: cannot be read ({error})") from None
    wrong = [
        name
        for name, value in (options.items() if isinstance(options, dict) else [("", None)])
        if name not in CARRIED or type(value) is not CARRIED[name]
    ]
    if wrong or not options.get("capped") or options.get("size", 0) <= 0:
        raise InvalidInput(
            f"{path}: not a capped collection's options ({json.dumps(options)})",
            hint='it should read {"capped": true, "size": BYTES} (and maybe "max": DOCUMENTS)',
        )
    return dict(options)
