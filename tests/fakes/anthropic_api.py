"""A loopback fake of Anthropic's Messages API (``POST /v1/messages``), errors included.

Usage::

    async with FakeAnthropic.serve() as fake:
        fake.push(FakeAnthropic.rate_limited(retry_after_s=7))
        adapter = AnthropicAdapter(settings_with(base_url=fake.url))

The key is read from ``x-api-key`` or ``Authorization: Bearer`` (the SDK sends the
latter); error bodies are ``{"type":"error","error":{"type","message"},"request_id"}``
and every response carries a ``request-id`` header.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from tests.fakes.llm_common import Received, Route, Scripted, ScriptedServer

__all__ = ["FakeAnthropic"]

_ids = itertools.count(1)


class FakeAnthropic(ScriptedServer):
    main_endpoint = "messages"

    def route(self, method: str, path: str) -> Route | None:
        if method == "POST" and path.rstrip("/").endswith("/v1/messages"):
            return Route(endpoint="messages")
        return None

    def key_of(self, headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
        if "x-api-key" in headers:
            return headers["x-api-key"]
        auth = headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    def not_found_body(self, path: str) -> Any:
        return _error_body("not_found_error", f"Not found: {path}")

    def success_headers(self, request: Received) -> Mapping[str, str]:
        return {"request-id": f"req_fake{next(_ids):06d}"}

    def success_body(self, reply: Scripted, request: Received) -> Any:
        model = (request.json or {}).get("model", "claude-fake")
        body: dict[str, Any] = {
            "id": f"msg_fake{next(_ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": reply.text}] if reply.text else [],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": reply.tokens_in, "output_tokens": reply.tokens_out},
        }
        body.update(reply.extra)
        return body

    # -- realistic answers -------------------------------------------------------------
    @staticmethod
    def error(
        status: int,
        error_type: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> Scripted:
        """An error the way the API sends it (``error_type`` as in its error docs)."""
        return Scripted(
            status=status,
            body=_error_body(error_type, message),
            key=key,
            headers={"request-id": f"req_fake{next(_ids):06d}", **(headers or {})},
        )

    @classmethod
    def overloaded(cls, *, key: str | None = None) -> Scripted:
        return cls.error(529, "overloaded_error", "Overloaded", key=key)

    @classmethod
    def rate_limited(
        cls,
        *,
        retry_after_s: float | None = None,
        retry_after_ms: float | None = None,
        reset_headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> Scripted:
        """429 ``rate_limit_error`` with any of the hints the API sends."""
        headers: dict[str, str] = dict(reset_headers or {})
        if retry_after_s is not None:
            headers["retry-after"] = f"{retry_after_s:g}"
        if retry_after_ms is not None:
            headers["retry-after-ms"] = f"{retry_after_ms:g}"
        return cls.error(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute.",
            headers=headers,
            key=key,
        )

    @classmethod
    def invalid_key(cls, *, key: str | None = None) -> Scripted:
        return cls.error(401, "authentication_error", "invalid x-api-key", key=key)

    @classmethod
    def low_credit(cls, *, key: str | None = None) -> Scripted:
        """The 400 Anthropic sends when the organisation's credit balance is spent."""
        return cls.error(
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            key=key,
        )

    @classmethod
    def invalid_request(
        cls, message: str = "messages: field required", *, key: str | None = None
    ) -> Scripted:
        return cls.error(400, "invalid_request_error", message, key=key)

    @staticmethod
    def refusal() -> Scripted:
        return Scripted(text="", extra={"stop_reason": "refusal"})


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": f"req_fake{next(_ids):06d}",
    }
