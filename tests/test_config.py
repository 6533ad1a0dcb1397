from pathlib import Path

import pytest

from dbsync.config import load_config
from dbsync.core.rules import Rules
from dbsync.errors import InvalidInput, UsageError

SHARED = """
database = "telegram"
uri = "mongodb://shared:27017"
[collections.pnl_data]
key = ["user_id", "username", "timestamp", "ticker"]
timestamp = "timestamp"
preserve = ["user_id", "profit_usd"]
[collections.sessions]
exclude = true
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "dbsync.toml").write_text(SHARED)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    return tmp_path


def test_shared_file_is_found_from_a_subdirectory(project):
    config = load_config(cwd=project / "sub" / "deeper", environ={})
    assert config.root == project
    assert config.database == "telegram"
    assert config.snapshot_dir == project / "database_backup"
    assert config.rules("pnl_data") == Rules(
        ("user_id", "username", "timestamp", "ticker"), "timestamp", ("user_id", "profit_usd")
    )
    assert config.rules("other") == Rules()
    assert config.excluded("sessions") and not config.excluded("pnl_data")


def test_precedence_is_flag_then_environment_then_local_then_shared(project):
    (project / "dbsync.local.toml").write_text('uri = "mongodb://local:1"\nasset = "laptop"\n')
    assert load_config(cwd=project, environ={}).uri == "mongodb://local:1"
    environ = {"DBSYNC_URI": "mongodb://env:2", "DBSYNC_ASSET": "server"}
    config = load_config(cwd=project, environ=environ)
    assert (config.uri, config.asset) == ("mongodb://env:2", "server")
    flagged = load_config(cwd=project, environ=environ, flags={"uri": "mongodb://flag:3"})
    assert flagged.uri == "mongodb://flag:3"
    assert flagged.database == "telegram"


def test_local_collection_rules_override_shared_ones(project):
    # sessions is in the shared file too (excluded there): the local table replaces it
    (project / "dbsync.local.toml").write_text('[collections.sessions]\nkey = ["code"]\n')
    config = load_config(cwd=project, environ={})
    assert config.rules("sessions").key == ("code",)
    assert not config.excluded("sessions")
    assert config.rules("pnl_data").timestamp == "timestamp"


def test_embedded_paths_are_relative_to_the_project_root(project):
    (project / "dbsync.local.toml").write_text('uri = "embedded://./db"\n')
    config = load_config(cwd=project / "sub", environ={})
    assert config.require_database() == (f"embedded://{project / 'db'}", "telegram")


def test_without_a_database_commands_say_how_to_set_one(tmp_path):
    config = load_config(cwd=tmp_path, environ={})
    with pytest.raises(UsageError) as caught:
        config.require_database()
    assert "dbsync init" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('databse = "x"\n', "unknown key 'databse'"),
        ("database = 5\n", "'database' must be a str"),
        ('retry_seconds = "soon"\n', "'retry_seconds' must be a number"),
        ('[collections.a]\nkey = "user"\n', "'collections.a.key' must be a list"),
        ('[collections.a]\nkeys = ["user"]\n', "unknown key 'collections.a.keys'"),
        ("[collections.a]\nkey = [1]\n", "collections.a.key must list field names"),
        ("[collections.a]\nkey = []\n", "must name at least one field"),
        ('[collections.a]\nexclude = "yes"\n', "'collections.a.exclude' must be a bool"),
        ("database = \n", "not valid TOML"),
    ],
)
def test_unknown_keys_and_wrong_types_name_the_file_and_the_key(tmp_path, text, named):
    (tmp_path / "dbsync.toml").write_text(text)
    with pytest.raises(InvalidInput) as caught:
        load_config(cwd=tmp_path, environ={})
    assert caught.value.exit_code == 4
    assert str(tmp_path / "dbsync.toml") in caught.value.message
    assert named in caught.value.message


def test_the_local_file_is_checked_too(project):
    (project / "dbsync.local.toml").write_text("colour = 1\n")
    with pytest.raises(InvalidInput, match="dbsync.local.toml: unknown key 'colour'"):
        load_config(cwd=project, environ={})


def test_an_explicit_config_file_sets_the_root(project, tmp_path):
    config = load_config(cwd=Path("/"), config_file=project / "dbsync.toml", environ={})
    assert config.root == project
    with pytest.raises(UsageError):
        load_config(config_file=tmp_path / "missing.toml", environ={})
