"""The OpenAPI 3.1 document, generated from the routes, and what else the API mounts."""

from __future__ import annotations

import re

import pytest

from concierge.app.console import CONTENT_SECURITY_POLICY
from tests.app.api.conftest import Api

pytestmark = pytest.mark.anyio

OPERATIONS = {
    ("get", "/api/v1/me"),
    ("get", "/api/v1/handoffs"),
    ("get", "/api/v1/handoffs/{handoff_id}"),
    ("get", "/api/v1/handoffs/{handoff_id}/messages"),
    ("post", "/api/v1/handoffs/{handoff_id}/claim"),
    ("post", "/api/v1/handoffs/{handoff_id}/reply"),
    ("post", "/api/v1/handoffs/{handoff_id}/close"),
    ("get", "/api/v1/users"),
    ("get", "/api/v1/users/{user_id}"),
    ("get", "/api/v1/users/{user_id}/messages"),
    ("delete", "/api/v1/users/{user_id}"),
    ("post", "/api/v1/users/{user_id}/link"),
    ("post", "/api/v1/users/{user_id}/unlink"),
    ("get", "/api/v1/providers"),
    ("post", "/api/v1/providers/{provider}/keys/{alias}/disable"),
    ("post", "/api/v1/providers/{provider}/keys/{alias}/enable"),
    ("get", "/api/v1/audit"),
}
ADMIN_ONLY = {
    path
    for _, path in OPERATIONS
    if path.startswith(("/api/v1/users", "/api/v1/providers", "/api/v1/audit"))
}


async def test_the_document_is_openapi_3_1_and_lists_every_operation_and_only_those(
    api: Api,
) -> None:
    response = await api.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert (
        response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    )
    document = await response.get_json()
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    found = {(method, path) for path, item in document["paths"].items() for method in item}
    assert found == OPERATIONS
    for method, path in OPERATIONS:
        operation = document["paths"][path][method]
        answers = set(operation["responses"])
        assert operation["security"] == [{"bearer": []}]
        assert {"401"} <= {str(a) for a in answers}, (method, path)
        assert ("403" in {str(a) for a in answers}) == (path in ADMIN_ONLY), (method, path)
        problem = operation["responses"]["401"]["content"]["application/problem+json"]
        assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
    handoff_id = document["paths"]["/api/v1/handoffs/{handoff_id}"]["get"]["parameters"][0]
    assert handoff_id["schema"] == {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}
    reply = document["paths"]["/api/v1/handoffs/{handoff_id}/reply"]["post"]
    assert {"202", "400", "404", "409"} <= {str(a) for a in reply["responses"]}
    assert set(document["components"]["schemas"]["Problem"]["required"]) == {
        "type",
        "title",
        "status",
    }


async def test_health_says_the_api_is_on_and_the_console_has_a_strict_policy(api: Api) -> None:
    health = await (await api.client.get("/health")).get_json()
    (check,) = health["checks"]["operatorApi:enabled"]
    assert (check["observedValue"], check["status"]) == (True, "pass")
    page = await api.client.get("/console")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    html = (await page.get_data()).decode()
    assert '<script src="/console/console.js" defer></script>' in html
    assert "<style" not in html
    assert " style=" not in html
    assert re.search(r"\son[a-z]+\s*=", html) is None  # no inline event handlers
    for asset, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        served = await api.client.get(f"/console/{asset}")
        assert served.headers["Content-Type"].startswith(kind)
        assert served.headers["X-Content-Type-Options"] == "nosniff"
