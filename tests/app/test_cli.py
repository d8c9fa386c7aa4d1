"""The ``concierge`` command as an operator runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.waiting import eventually

ROOT = Path(__file__).parents[2]
CONCIERGE = [sys.executable, "-m", "concierge"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONCIERGE_", "TELEGRAM_", "WAHA_"))
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(
        CONCIERGE_DATA_DIR=str(tmp_path / "var"),
        CONCIERGE_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def run_cli(
    tmp_path: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONCIERGE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(tmp_path, **env),
        cwd=tmp_path,
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = subprocess.Popen(
        [*CONCIERGE, "run"],
        env=env_for(tmp_path, CONCIERGE_HTTP_PORT=str(port), CONCIERGE_DRAIN_TIMEOUT_S="10"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def ready(
    client: httpx.AsyncClient, process: subprocess.Popen[str]
) -> Callable[[], Awaitable[bool]]:
    """A condition: the daemon answers ``/readyz`` with 200 (an exit fails at once)."""

    async def check() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else "exited"
        try:
            return (await client.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    return check


@pytest.mark.anyio
async def test_run_serves_probes_and_stops_cleanly_on_sigterm(
    daemon: tuple[subprocess.Popen[str], str],
) -> None:
    process, base = daemon
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await eventually(ready(client, process), "the daemon to be ready", step_s=0.05)
        assert (await client.get("/livez")).status_code == 200
        health = await client.get("/health")
        assert health.status_code == 200
        assert health.headers["content-type"] == "application/health+json"
        report = health.json()
        assert report["status"] == "pass"
        assert "sqlite:responseTime" in report["checks"]
        assert "supervisor.root:restarts" in report["checks"]
        metrics = (await client.get("/metrics")).text
    assert 'concierge_supervisor_restarts_total{child="http",supervisor="root"} 0.0' in metrics
    assert "concierge_http_requests_total" in metrics
    assert "process_resident_memory_bytes" in metrics
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert all({"timestamp", "level", "event"} <= e.keys() for e in events)
    started = {e["child"] for e in events if e["event"] == "supervisor.child_started"}
    assert {"stores", "provider_pool", "conversations", "http"} <= started
    names = [e["event"] for e in events]
    assert names.index("daemon.stopping") < names.index("daemon.stopped")
    assert events[-1]["event"] in {"daemon.stopped", "store.closed"}


def test_a_bad_setting_stops_the_daemon_with_one_line_naming_it(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "run", CONCIERGE_TURN_TIMEOUT_S="-1")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "concierge: invalid setting CONCIERGE_TURN_TIMEOUT_S: must be greater than 0, got '-1'"
    )


def test_check_prints_settings_with_secrets_masked(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path,
        "check",
        CONCIERGE_PROVIDERS="anthropic,offline",
        ANTHROPIC_API_KEYS="main=sk-ant-secretsecretsecret",
        TELEGRAM_BOT_TOKEN="123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
    )
    assert result.returncode == 0, result.stderr
    assert "secretsecret" not in result.stdout
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in result.stdout
    assert "CONCIERGE_PROVIDERS=anthropic,offline" in result.stdout
    assert "ANTHROPIC_API_KEYS=main (secrets hidden)" in result.stdout


def test_check_loads_the_configuration_and_says_what_it_found(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "check")
    assert result.returncode == 0, result.stderr
    assert "languages: en, fr, wo (falls back to fr); default fr" in result.stdout
    assert "knowledge: 24 sections, 62 passages from 3 files" in result.stdout
    assert "prompts: every service type in every language" in result.stdout
    assert "community: 3 emergency numbers, priest on call +221 77 000 00 00" in result.stdout


def test_a_broken_language_file_is_one_line_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "config"
    assert run_cli(tmp_path, "init", str(config)).returncode == 0
    (config / "languages" / "wo.toml").write_text('stemmer = "wolof"\n', encoding="utf-8")
    result = run_cli(tmp_path, "check", CONCIERGE_CONFIG_DIR=str(config))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"concierge: invalid configuration: {config / 'languages' / 'wo.toml'}: stemmer: "
    )


@pytest.mark.parametrize("command", ["check", "chat", "run"])
def test_a_broken_configuration_is_one_line_naming_the_file(tmp_path: Path, command: str) -> None:
    config = tmp_path / "config"
    assert run_cli(tmp_path, "init", str(config)).returncode == 0
    (config / "triage.toml").write_text("[rules\nbroken", encoding="utf-8")
    result = run_cli(tmp_path, command, stdin="Bonjour\n", CONCIERGE_CONFIG_DIR=str(config))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"concierge: invalid configuration: {config / 'triage.toml'}: ")


@pytest.mark.parametrize("command", ["check", "chat", "run"])
def test_a_missing_community_file_is_one_line_naming_it(tmp_path: Path, command: str) -> None:
    config = tmp_path / "config"
    assert run_cli(tmp_path, "init", str(config)).returncode == 0
    (config / "community.toml").unlink()
    result = run_cli(tmp_path, command, stdin="Bonjour\n", CONCIERGE_CONFIG_DIR=str(config))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"concierge: invalid configuration: {config / 'community.toml'}: the community file "
        "does not exist"
    )


def test_version_prints_the_version(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "version")
    assert result.returncode == 0
    assert result.stdout.startswith("concierge ")


def test_chat_answers_each_service_type_from_the_sample_knowledge(tmp_path: Path) -> None:
    questions = [
        "A quelle heure est la messe dimanche ?",
        "Qu'est-ce que la Trinité ?",
        "Je voudrais parler à un prêtre",
    ]
    result = run_cli(tmp_path, "chat", "--json", stdin="\n".join(questions) + "\n")
    assert result.returncode == 0, result.stderr
    replies = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["service_type"] for r in replies] == ["RENSEIGNEMENT", "CATECHESE", "CONTACT_HUMAIN"]
    assert replies[0]["provider"] == "offline"
    assert "10h30" in replies[0]["reply"]
    assert "trois personnes" in replies[1]["reply"]
    assert all(
        {"reply", "service_type", "provider", "correlation_id", "latency_ms"} <= r.keys()
        for r in replies
    )
    assert len({r["correlation_id"] for r in replies}) == 3


def test_chat_in_english_answers_in_english(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "chat", "--json", stdin="What time is mass on Sunday?\n")
    assert result.returncode == 0, result.stderr
    (reply,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert reply["service_type"] == "RENSEIGNEMENT"
    assert "10h30" in reply["reply"]
    assert "Voici" not in reply["reply"]


def test_run_refuses_an_unreachable_database_with_a_clear_message(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli(
        tmp_path,
        "run",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/nowhere",
        CONCIERGE_HTTP_PORT=str(free_port()),
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("concierge: ")
    assert str(port) in last or "connect" in last.lower()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = f"concierge_cli_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


def test_migrate_is_idempotent_and_run_refuses_an_unmigrated_schema(
    tmp_path: Path, fresh_database: str
) -> None:
    refused = run_cli(
        tmp_path, "run", DATABASE_URL=fresh_database, CONCIERGE_HTTP_PORT=str(free_port())
    )
    assert refused.returncode == 1
    assert "concierge migrate" in refused.stderr.strip().splitlines()[-1]
    first = run_cli(tmp_path, "migrate", DATABASE_URL=fresh_database)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied migrations: 1")
    second = run_cli(tmp_path, "migrate", DATABASE_URL=fresh_database)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "schema up to date: nothing to apply"


def test_forget_erases_a_user_and_says_so(tmp_path: Path, fresh_database: str) -> None:
    assert run_cli(tmp_path, "migrate", DATABASE_URL=fresh_database).returncode == 0
    chat = run_cli(
        tmp_path, "chat", "--user", "marie", stdin="Bonjour\n", DATABASE_URL=fresh_database
    )
    assert chat.returncode == 0, chat.stderr
    forgotten = run_cli(tmp_path, "forget", "--user", "console:marie", DATABASE_URL=fresh_database)
    assert forgotten.returncode == 0, forgotten.stderr
    assert forgotten.stdout.startswith("forgot user ")
    again = run_cli(tmp_path, "forget", "--user", "console:marie", DATABASE_URL=fresh_database)
    assert again.returncode == 1
    assert "console:marie" in again.stderr
    bad = run_cli(tmp_path, "forget", "--user", "nobody", DATABASE_URL=fresh_database)
    assert bad.returncode == 1
    assert "expected an internal user id" in bad.stderr


def test_handoff_list_and_close_from_the_command_line(tmp_path: Path) -> None:
    chat = run_cli(tmp_path, "chat", "--user", "paul", stdin="/humain\n")
    assert chat.returncode == 0, chat.stderr
    listed = run_cli(tmp_path, "handoff", "list")
    assert "console:paul" in listed.stdout
    closed = run_cli(tmp_path, "handoff", "close", "--user", "console:paul", "--by", "abbe.paul")
    assert closed.returncode == 0, closed.stderr
    assert "closed handoff" in closed.stdout
    assert run_cli(tmp_path, "handoff", "list").stdout.strip() == "no open handoffs"
    again = run_cli(tmp_path, "handoff", "close", "--user", "console:paul")
    assert again.returncode == 1
    assert "no open handoff" in again.stderr


def test_run_on_a_port_in_use_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(tmp_path, "run", CONCIERGE_HTTP_PORT=str(port))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"concierge: cannot listen on 127.0.0.1:{port}: address already in use"
    ]
    assert "supervisor.child_restarted" not in result.stdout


def test_init_writes_an_editable_copy_that_check_loads_and_never_overwrites(
    tmp_path: Path,
) -> None:
    target = tmp_path / "community"
    made = run_cli(tmp_path, "init", str(target))
    assert made.returncode == 0, made.stderr
    assert (target / "knowledge" / "paroisse.md").is_file()
    assert (target / "prompts" / "renseignement.fr.md").is_file()
    assert (target / "triage.toml").is_file()
    assert (target / "synonyms.toml").is_file()
    (target / "knowledge" / "extra.md").write_text("# Kermesse\n\nLe 14 juin.\n", encoding="utf-8")
    checked = run_cli(tmp_path, "check", CONCIERGE_CONFIG_DIR=str(target))
    assert checked.returncode == 0, checked.stderr
    assert "from 4 files" in checked.stdout
    again = run_cli(tmp_path, "init", str(target))
    assert again.returncode == 1
    assert (
        again.stderr.strip() == f"concierge: {target} already exists and is not an empty directory"
    )
