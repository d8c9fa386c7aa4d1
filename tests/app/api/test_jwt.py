"""Bearer tokens by RFC 8725: everything but a valid token of the right role is refused.

Every refusal is the same 401 (the reason goes to the log only); a valid token of too
small a role is a 403. The matrix runs against the real app, on ``/api/v1/me``
(staff) and ``/api/v1/audit`` (admin).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from concierge.settings import JwtKey, SettingsError, load_settings
from tests.app.api.conftest import ADMIN, PREVIOUS, STAFF, Api, bearer, mint, now_s
from tests.app.test_cli import CONCIERGE, env_for

pytestmark = pytest.mark.anyio

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def with_header(token: str, **changes: object) -> str:
    """``token`` with its header changed and its signature kept (a forgery)."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    decoded.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{forged}.{payload}.{signature}"


def hs256_signed_with(token: str, key: bytes) -> str:
    """``token`` re-signed by hand with ``key`` (PyJWT refuses a PEM as an HMAC secret)."""
    signing_input = token.rsplit(".", 1)[0]
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


REFUSED: dict[str, Callable[[], str]] = {
    "alg none, no signature": lambda: with_header(mint(), alg="none").rsplit(".", 1)[0] + ".",
    "signed with another key": lambda: mint(key=JwtKey(kid="2026-a", secret=b"x" * 40)),
    "header alg changed to HS512": lambda: with_header(mint(), alg="HS512"),
    "header alg changed to none": lambda: with_header(mint(), alg="none"),
    "HS512 with the right key": lambda: mint(algorithm="HS512"),
    "RS256 under a configured kid": lambda: mint(algorithm="RS256", signing_key=RSA_KEY),
    "HS256 keyed with an RSA public key": lambda: hs256_signed_with(mint(), RSA_PUBLIC_PEM),
    "expired": lambda: mint(exp=now_s() - 120),
    "nbf in the future": lambda: mint(nbf=now_s() + 120),
    "iat in the future": lambda: mint(iat=now_s() + 120),
    "wrong aud": lambda: mint(aud="another-api"),
    "aud as a list": lambda: mint(aud=["concierge-api", "another-api"]),
    "missing aud": lambda: mint(drop=("aud",)),
    "wrong iss": lambda: mint(iss="someone-else"),
    "missing iss": lambda: mint(drop=("iss",)),
    "missing exp": lambda: mint(drop=("exp",)),
    "missing iat": lambda: mint(drop=("iat",)),
    "missing sub": lambda: mint(drop=("sub",)),
    "wrong typ": lambda: mint(headers={"typ": "JWT"}),
    "missing typ": lambda: with_header(mint(), typ=None),
    "unknown kid": lambda: mint(headers={"kid": "retired"}),
    "missing kid": lambda: with_header(mint(), kid=None),
    "no role": lambda: mint(role=None),
    "unknown role": lambda: mint(role="root"),
    "not a JWT": lambda: "not-a-token",
}


@pytest.mark.parametrize("name", list(REFUSED))
async def test_a_bad_token_is_refused_with_a_bare_401_and_the_reason_logged(
    api: Api, name: str
) -> None:
    token = REFUSED[name]()
    with capture_logs() as logs:
        response = await api.client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.get_json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
    }
    (failed,) = [e for e in logs if e["event"] == "api.auth_failed"]
    assert failed["reason"]
    assert token not in json.dumps(logs, default=str)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "Bearer "}],
    ids=["no header", "basic", "empty bearer"],
)
async def test_a_request_without_a_bearer_token_gets_the_same_401(
    api: Api, headers: dict[str, str]
) -> None:
    response = await api.client.get("/api/v1/handoffs", headers=headers)
    assert response.status_code == 401
    assert (
        await response.get_data()
        == await (
            await api.client.get("/api/v1/me", headers=bearer(REFUSED["expired"]()))
        ).get_data()
    )


VALID: dict[str, Callable[[], str]] = {
    "current key": lambda: mint(),
    "previous key": lambda: mint(key=PREVIOUS),
    "expired within the leeway": lambda: mint(exp=now_s() - 10),
    "early within the leeway": lambda: mint(iat=now_s() + 10, nbf=now_s() + 10),
}


@pytest.mark.parametrize("name", list(VALID))
async def test_a_valid_token_is_accepted(api: Api, name: str) -> None:
    response = await api.client.get("/api/v1/me", headers=bearer(VALID[name]()))
    assert response.status_code == 200
    assert (await response.get_json())["subject"] == "alice"


async def test_a_staff_token_on_an_admin_route_is_forbidden(api: Api) -> None:
    forbidden = await api.client.get("/api/v1/audit", headers=STAFF)
    assert forbidden.status_code == 403
    assert (await forbidden.get_json())["detail"] == "this needs the admin role"
    assert (await api.client.get("/api/v1/audit", headers=ADMIN)).status_code == 200
    assert (await api.client.get("/api/v1/handoffs", headers=ADMIN)).status_code == 200
    assert (api.status.refused, api.status.forbidden) == (0, 1)


def test_a_key_shorter_than_32_bytes_stops_the_settings_and_the_daemon(tmp_path: object) -> None:
    with pytest.raises(SettingsError, match="CONCIERGE_JWT_KEYS: key 'k1' is 16 bytes"):
        load_settings({"CONCIERGE_JWT_KEYS": "k1=" + "s" * 16})
    with pytest.raises(SettingsError, match="kid=secret"):
        load_settings({"CONCIERGE_JWT_KEYS": "s" * 40})
    with pytest.raises(SettingsError, match="share a kid"):
        load_settings({"CONCIERGE_JWT_KEYS": f"k1={'a' * 32},k1={'b' * 32}"})
    run = subprocess.run(
        [*CONCIERGE, "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(tmp_path, CONCIERGE_JWT_KEYS="k1=" + "s" * 16),  # type: ignore[arg-type]
        cwd=str(tmp_path),
    )
    assert run.returncode == 2
    assert "CONCIERGE_JWT_KEYS" in run.stderr
    assert "s" * 16 not in run.stderr
