"""What the commands print: JSON documents and one-line summaries, as pure functions.

The CLI chooses between them (``--json`` or not) and writes them; nothing here prints. The JSON
shapes are documented in docs/commands.md ("JSON output").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dbsync.core.notes import OnceNote
from dbsync.edges.installer import HookChange
from dbsync.runs.export import ExportedCollection
from dbsync.runs.import_file import ImportResult
from dbsync.runs.restore import RestoreResult


def export_notes(result: ExportedCollection) -> list[str]:
    """The notes an export says: a suggestion (``OnceNote``) on the collection's first export
    only, when no snapshot of it existed before."""
    first = result.previous_digest is None
    return [note for note in result.notes if first or not isinstance(note, OnceNote)]


def exported_json(result: ExportedCollection) -> dict[str, Any]:
    return {
        "collection": result.collection,
        "records": result.records,
        "path": str(result.path),
        "files": [str(path) for path in result.paths] or [str(result.path)],
        "changed": result.changed,
        "deleted": result.deleted,
        "digest": result.digest,
        "notes": export_notes(result),
        "read": result.read,
    }


def exported_line(result: ExportedCollection) -> str:
    """One line per collection: where its records went, every file named (a collection past
    50 MB is written in parts: naming one would hide the others)."""
    state = "changed" if result.changed else "unchanged"
    deleted = f", {result.deleted} deleted" if result.deleted else ""
    files = result.paths or [result.path]
    if len(files) == 1:
        where = str(files[0])
    else:
        names = ", ".join(path.name for path in files)
        where = f"{len(files)} parts in {files[0].parent}: {names}"
    return f"{result.collection}: {result.records} records → {where} ({state}{deleted})"


def nothing_exported(database: str | None) -> str:
    """An empty export is almost always a wrong --database or URI: say so instead of nothing."""
    return (
        f"nothing exported: the database {database or '(none configured)'} has no collections "
        "(check --database and --uri, or 'dbsync status')"
    )


def imported_json(result: ImportResult) -> dict[str, Any]:
    return {
        "collection": result.collection,
        "mode": result.mode.value,
        "documents": result.documents,
        "inserted": result.inserted,
        "replaced": result.replaced,
        "kept": result.counts.kept,
        "backup": result.backup,
    }


def imported_line(result: ImportResult) -> str:
    kept = result.counts.kept
    left = f", {kept} left as the application wrote them meanwhile" if kept else ""
    undo = f"; 'dbsync restore {result.backup}' undoes it" if result.backup else ""
    return (
        f"{result.collection}: {result.documents} documents imported ({result.mode.value}): "
        f"{result.inserted} inserted, {result.replaced} replaced{left}{undo}"
    )


def restored_json(result: RestoreResult) -> dict[str, Any]:
    return {
        "backup": result.backup,
        "restored": list(result.restored),
        "records": dict(result.records),
        "safety_backup": result.safety_backup,
        "kept": {name: counts.left for name, counts in result.kept.items()},
    }


def hook_changes_json(changes: Sequence[HookChange]) -> list[dict[str, Any]]:
    return [
        {
            "hook": change.name,
            "path": str(change.path),
            "action": change.action,
            "legacy": None if change.legacy is None else str(change.legacy),
        }
        for change in changes
    ]


def table_text(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Tab-separated lines, header first: what a table becomes when stdout is not a terminal,
    so that ``cut``, ``awk`` and spreadsheets get every cell whole."""
    lines = ["\t".join(columns), *("\t".join(row) for row in rows)]
    return "\n".join(lines)
