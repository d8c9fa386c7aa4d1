"""What the image is built from: locked and hash-checked dependencies, pinned bases, a
clean build context, a Dockerfile hadolint accepts, a compose file a reviewer accepts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
COMPOSE = "docker-compose.yml"


def test_the_lock_matches_pyproject_and_pins_every_file_by_hash() -> None:
    checked = subprocess.run(
        [BIN / "uv", "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    lock = (ROOT / "uv.lock").read_text()
    for name in ("trio", "hypercorn", "asyncpg", "coredis", "anthropic", "hatchling"):
        assert f'name = "{name}"' in lock
    assert 'hash = "sha256:' in lock
    tool = (ROOT / "requirements" / "uv.txt").read_text()
    assert re.search(r"^uv==[\d.]+ \\\n\s+--hash=sha256:[0-9a-f]{64}", tool, flags=re.M)


def test_install_and_image_take_the_locked_set_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "uv sync --frozen" in makefile
    assert "--require-hashes" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "uv export --frozen" in dockerfile
    assert dockerfile.count("--require-hashes") >= 3
    assert "pip wheel --no-deps --no-build-isolation" in dockerfile


def test_base_images_are_pinned_to_exact_versions() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert bases
    for image in bases:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", image), image
    for name, service in compose()["services"].items():
        if "image" in service and "${" not in service["image"]:
            # postgres numbers its releases major.minor; the others major.minor.patch
            assert re.search(r":\d+\.\d+(\.\d+)?(-\w+)?$", service["image"]), name


def test_the_build_context_leaves_out_secrets_state_and_history() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", ".venv/", "var/", ".git/"):
        assert entry in ignored


def test_hadolint_accepts_the_dockerfile() -> None:
    result = subprocess.run(
        [BIN / "hadolint", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load(ROOT / "docker-compose.yml")
    return loaded


def test_compose_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


REPLICAS = ("concierge-1", "concierge-2")


def test_compose_wires_waha_to_the_daemon_with_the_same_keys() -> None:
    services = compose()["services"]
    waha = services["waha"]["environment"]
    # Through Caddy's internal port: whichever replica is up takes the webhook.
    assert waha["WHATSAPP_HOOK_URL"] == "http://caddy:8081/webhooks/waha"
    assert waha["WHATSAPP_HOOK_EVENTS"] == "message"
    assert waha["WHATSAPP_HOOK_HMAC_KEY"].startswith("${WAHA_WEBHOOK_HMAC_KEY:?")
    assert waha["WAHA_API_KEY"].startswith("${WAHA_API_KEY:?")
    for replica in REPLICAS:
        daemon = services[replica]["environment"]
        assert daemon["WAHA_URL"] == "http://waha:3000"
        assert daemon["WAHA_WEBHOOK_HMAC_KEY"].startswith("${WAHA_WEBHOOK_HMAC_KEY:?")
        assert daemon["WAHA_API_KEY"].startswith("${WAHA_API_KEY:?")
    assert "ports" not in services["waha"]  # WAHA's API is never published


def test_compose_runs_two_identical_replicas_behind_caddy() -> None:
    services = compose()["services"]
    first, second = (services[name] for name in REPLICAS)
    assert first == second  # the same image, settings, checks and limits
    assert "ports" not in first  # reached through Caddy only
    assert first["environment"]["DATABASE_URL"].startswith("postgres://")
    assert first["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    # Caddy stops routing (health_interval 1 s) before a draining replica's listener closes.
    assert float(first["environment"]["CONCIERGE_DRAIN_NOTICE_S"]) > 1
    assert services["caddy"]["environment"]["CONCIERGE_UPSTREAMS"] == (
        "concierge-1:8000 concierge-2:8000"
    )


def test_compose_orders_and_hardens_every_service() -> None:
    services = compose()["services"]
    for replica in REPLICAS:
        assert services["caddy"]["depends_on"][replica]["condition"] == "service_healthy"
        assert services[replica]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in (*REPLICAS, "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        assert service["logging"]["options"]["max-size"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    for name in (*REPLICAS, "postgres", "redis", "caddy"):
        assert services[name]["read_only"] is True, name
