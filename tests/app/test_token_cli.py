"""``concierge token issue``: a token the API accepts, for whom and how long the operator says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from concierge.app.api import Role, TokenVerifier
from concierge.settings import load_settings
from tests.app.test_cli import run_cli

KEYS = "new=" + "n" * 40 + ",old=" + "o" * 32


def test_issue_prints_a_token_the_api_accepts_signed_with_the_first_key(tmp_path: Path) -> None:
    done = run_cli(
        tmp_path,
        "token",
        "issue",
        "--sub",
        "Père Jean",
        "--role",
        "admin",
        "--ttl",
        "30m",
        CONCIERGE_JWT_KEYS=KEYS,
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert "\n" not in token
    principal = TokenVerifier(load_settings({"CONCIERGE_JWT_KEYS": KEYS}).api).verify(token)
    assert (principal.subject, principal.role) == ("Père Jean", Role.ADMIN)
    assert "signed with key new" in done.stderr
    assert "n" * 40 not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--role", "staff"], {}, "CONCIERGE_JWT_KEYS is unset"),
        (
            ["--role", "staff", "--ttl", "12"],
            {"CONCIERGE_JWT_KEYS": KEYS},
            "'12' is not a duration",
        ),
        (
            ["--role", "staff", "--ttl", "90d"],
            {"CONCIERGE_JWT_KEYS": KEYS},
            "--ttl must be between 1 s and 31 days",
        ),
        (["--role", "root"], {"CONCIERGE_JWT_KEYS": KEYS}, "invalid choice: 'root'"),
        (
            ["--role", "staff"],
            {"CONCIERGE_JWT_KEYS": "k=short"},
            "CONCIERGE_JWT_KEYS: key 'k' is 5 bytes",
        ),
    ],
)
def test_issue_refuses_what_it_cannot_sign_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    done = run_cli(tmp_path, "token", "issue", "--sub", "alice", *args, **env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr


def test_the_token_command_is_listed_in_the_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "concierge", "token", "issue", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--ttl" in done.stdout
