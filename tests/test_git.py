"""``dbsync.edges.git``: what a git command keeps of the environment, and how its failure reads."""

import subprocess

from dbsync.edges.git import failed, no_git_env
from dbsync.errors import GitFailed

CREDENTIALS = {
    "GIT_ASKPASS": "/usr/bin/askpass",
    "SSH_ASKPASS": "/usr/bin/ssh-askpass",
    "GIT_SSH": "/usr/bin/ssh",
    "GIT_SSH_COMMAND": "ssh -i key",
    "SSH_AUTH_SOCK": "/run/agent.sock",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "credential.helper",
    "GIT_CONFIG_VALUE_0": "store",
    "GIT_AUTHOR_NAME": "someone",
}
A_HOOKS_REPOSITORY = {"GIT_DIR": "/elsewhere/.git", "GIT_INDEX_FILE": "/elsewhere/index"}


def test_a_hooks_repository_is_dropped_and_credential_helpers_kept():
    assert no_git_env({**CREDENTIALS, **A_HOOKS_REPOSITORY, "PATH": "/bin"}) == {
        **CREDENTIALS,
        "PATH": "/bin",
    }


def test_a_failed_git_command_exits_6_in_gits_words_without_the_password():
    result = subprocess.CompletedProcess(
        ["git", "pull"],
        128,
        "",
        "fatal: unable to access 'https://sync:s3cr3t-pw@example.invalid/r.git/': refused\n",
    )
    error = failed("git pull", result, hint="check the remote")
    assert isinstance(error, GitFailed) and error.exit_code == 6
    assert error.message.startswith("git pull failed: fatal: unable to access")
    assert "s3cr3t-pw" not in error.message and error.hint == "check the remote"
