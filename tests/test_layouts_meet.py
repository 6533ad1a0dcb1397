"""Two part layouts of one collection meet in a snapshot folder (git merged the snapshot of an
asset that kept the collection in one file with one that had split it): a key found in both is
one record, the conflict rule keeps one version, and the other is reported and kept like every
losing version — never dropped in silence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from project import Project, write_json_lines

from dbsync.core.ordering import part_of
from dbsync.core.rules import Rules
from dbsync.core.snapshot import Header, encode_record, header_filename
from dbsync.edges.snapshot_files import write_snapshot

RULES = Rules(("_id",), "ts", ())


def record(number: int, name: str, ts: str) -> dict[str, Any]:
    return {"_id": number, "name": name, "ts": ts}


def write_layout(folder: Path, documents: list[dict[str, Any]], parts: int) -> None:
    """The collection ``items`` as ``dbsync export`` would write it in ``parts`` files."""
    keyed = sorted(encode_record(document, RULES.key) for document in documents)
    for index in range(parts):
        header = Header("items", RULES, None if parts == 1 else (index, parts))
        lines = [line for key, line in keyed if parts == 1 or part_of(key, parts) == index]
        write_snapshot(folder / header_filename(header), header, lines)


def test_the_version_a_layout_fold_drops_is_a_reported_losing_version(tmp_path):
    project = Project(tmp_path / "project")
    project.root.mkdir()
    project.run("init", "--asset", "a")
    with (project.root / "dbsync.toml").open("a") as config:
        config.write('[collections.items]\ntimestamp = "ts"\n')
    mine = [record(n, f"item {n}", "2024-01-01") for n in range(10)]
    project.run("import", str(write_json_lines(project.root / "mine.json", mine)), "-c", "items")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    older = record(3, "edited in one file", "2024-02-01")
    newer = record(3, "edited in parts", "2024-03-01")
    write_layout(incoming, [*mine[:3], older, *mine[4:]], parts=1)
    write_layout(incoming, [*mine[:3], newer, *mine[4:]], parts=2)

    report = json.loads(project.run("merge", str(incoming), "--json").stdout)

    stored = json.loads(project.run("dump", "items").stdout.splitlines()[3])
    assert stored["name"] == "edited in parts"
    conflicts = report["collections"]["items"]["conflicts"]
    losers = sorted((c["loser"]["name"], c["rule"]) for c in conflicts)
    # the layouts' fold, then the merge of the database's version with the fold's winner
    assert losers == [("edited in one file", "newer timestamp"), ("item 3", "newer timestamp")]
    losing = json.loads(project.run("conflicts", "--json").stdout)
    assert sorted(entry["loser"]["name"] for entry in losing) == ["edited in one file", "item 3"]
