"""What the commands print for people and for scripts: --json documents, piped tables, the
empty export's line, and shell completion — through the real console script."""

from __future__ import annotations

import json
import subprocess

from tests.project import Project, clean_env, write_json_lines


def complete(project: Project, *words: str) -> list[str]:
    """What bash completion offers after ``dbsync words...`` (typer's completion protocol)."""
    line = " ".join(("dbsync", *words, ""))
    env = clean_env(
        _DBSYNC_COMPLETE="complete_bash", COMP_WORDS=line, COMP_CWORD=str(len(words) + 1)
    )
    return project.run(env=env).stdout.split()


def test_export_json_is_one_document_with_every_collection(pnl_project: Project) -> None:
    exported = pnl_project.json("export")
    assert [entry["collection"] for entry in exported] == ["pnl"]
    assert exported[0]["records"] == 190
    assert exported[0]["changed"] is False


def test_an_empty_export_says_so(empty_project: Project) -> None:
    result = empty_project.run("export")
    assert "nothing exported" in result.stderr
    assert "--database" in result.stderr
    assert empty_project.json("export") == []


def test_import_json_counts_the_documents(empty_project: Project) -> None:
    source = write_json_lines(empty_project.root / "two.json", [{"_id": 1}, {"_id": 2}])
    imported = empty_project.json("import", str(source), "-c", "pnl")
    assert imported["documents"] == 2
    assert (imported["inserted"], imported["replaced"]) == (2, 0)


def test_restore_json_names_both_backups(pnl_project: Project) -> None:
    source = write_json_lines(pnl_project.root / "one.json", [{"_id": 1}])
    pnl_project.run("import", str(source), "-c", "other")
    pnl_project.run("export")
    pnl_project.run("merge", "database_backup")  # a merge backs up first
    backup = pnl_project.json("backups")[0]["id"]
    restored = pnl_project.json("restore", backup)
    assert restored["backup"] == backup
    assert restored["safety_backup"] != backup
    assert set(restored["restored"]) == set(restored["records"])


def test_stats_piped_is_tab_separated_and_whole(pnl_project: Project) -> None:
    lines = pnl_project.run("stats", env=clean_env(COLUMNS="40")).stdout.splitlines()
    header = lines[0].split("\t")
    assert header[:2] == ["collection", "documents"]
    row = lines[1].split("\t")
    assert len(row) == len(header)
    assert row[:2] == ["pnl", "190"]
    assert "…" not in "".join(lines)


def test_completion_offers_collections_from_the_snapshot_and_the_config(
    pnl_project: Project,
) -> None:
    with (pnl_project.root / "dbsync.toml").open("a") as config:
        config.write('\n[collections.orders]\nkey = ["_id"]\n')
    assert complete(pnl_project, "export", "-c") == ["orders", "pnl"]
    assert complete(pnl_project, "dump") == ["orders", "pnl"]


def test_completion_offers_backup_ids(pnl_project: Project) -> None:
    pnl_project.run("merge", "database_backup")
    ids = [backup["id"] for backup in pnl_project.json("backups")]
    assert ids
    assert complete(pnl_project, "restore") == ids


def test_hooks_install_and_uninstall_json(empty_project: Project) -> None:
    subprocess.run(["git", "init", "-q"], cwd=empty_project.root, check=True)
    installed = empty_project.json("hooks", "install")
    assert {(h["hook"], h["action"]) for h in installed} == {
        ("pre-push", "installed"),
        ("post-merge", "installed"),
        ("post-rewrite", "installed"),
        ("post-commit", "installed"),
    }
    removed = empty_project.json("hooks", "uninstall")
    assert {h["action"] for h in removed} == {"removed"}


def test_completion_scripts_for_bash_zsh_and_fish(empty_project: Project) -> None:
    # typer picks the shell the command runs from; this variable lets a test name it instead
    env = clean_env(_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    scripts = {
        shell: empty_project.run("--show-completion", shell, env=env).stdout
        for shell in ("bash", "zsh", "fish")
    }
    assert "complete -o default -F _dbsync_completion dbsync" in scripts["bash"]
    assert "#compdef dbsync" in scripts["zsh"]
    assert "complete --command dbsync" in scripts["fish"]


def test_init_json_and_sync_json(tmp_path) -> None:
    project = Project(tmp_path)
    created = project.json("init", "--database", "shop")
    assert "dbsync.toml" in created["created"] and created["kept"] == []
    again = project.json("init")
    assert again["created"] == [] and "dbsync.toml" in again["kept"]
    refused = project.run("sync", "--json", expect=None)
    assert refused.returncode != 0 and refused.stdout == ""  # an error is never half a document


def test_sync_json_lists_the_steps(pair) -> None:
    a, _ = pair
    document = json.loads(a.dbsync("sync", "--json").out)
    assert any(step.startswith("pull") for step in document["steps"])
    assert isinstance(document["pushed"], bool)
