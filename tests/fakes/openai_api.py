"""A loopback fake of OpenAI-compatible chat completions (OpenRouter, GLM) and OpenRouter's key endpoint.

Usage::

    async with FakeOpenAI.serve() as fake:
        base_url = fake.url + "/api/v1"                    # OpenRouter layout
        fake.push(FakeOpenAI.no_credit())                   # 402
        fake.push(FakeOpenAI.glm_error("1113", "Insufficient balance ..."))   # GLM, HTTP 429
        fake.set_credit("sk-or-1", limit=10.0, remaining=0.5, usage=9.5)
        fake.push(FakeOpenAI.invalid_key(), endpoint="key")  # script the key endpoint too

Serves ``POST .../chat/completions`` (endpoint ``chat``) under any prefix
(``/v1``, ``/api/v1``, ``/api/paas/v4``) and ``GET .../key`` (endpoint ``key``,
``{"data": {...}}``, unlimited unless ``set_credit`` said otherwise). The key is
the ``Authorization: Bearer`` token.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

from tests.fakes.llm_common import Received, Route, Scripted, ScriptedServer

__all__ = ["FakeOpenAI"]

_ids = itertools.count(1)


class FakeOpenAI(ScriptedServer):
    main_endpoint = "chat"

    def __init__(self) -> None:
        super().__init__()
        self.key_info: dict[str, dict[str, Any]] = {}

    def route(self, method: str, path: str) -> Route | None:
        path = path.rstrip("/")
        if method == "POST" and path.endswith("/chat/completions"):
            return Route(endpoint="chat")
        if method == "GET" and path.endswith("/key"):
            return Route(endpoint="key")
        return None

    def key_of(self, headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    def not_found_body(self, path: str) -> Any:
        return {"error": {"code": 404, "message": f"Not Found: {path}"}}

    def success_body(self, reply: Scripted, request: Received) -> Any:
        model = (request.json or {}).get("model", "fake-model")
        body: dict[str, Any] = {
            "id": f"gen-fake-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "provider": "Fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": "stop",
                    "native_finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": reply.tokens_in,
                "completion_tokens": reply.tokens_out,
                "total_tokens": reply.tokens_in + reply.tokens_out,
            },
        }
        body.update(reply.extra)
        return body

    def answer_other(self, request: Received) -> tuple[int, Any, Mapping[str, str]] | None:
        if request.endpoint != "key":
            return None
        if request.key is None:
            return 401, {"error": {"code": 401, "message": "No auth credentials found"}}, {}
        data = {
            "label": f"{request.key[:8]}...{request.key[-3:]}",
            "limit": None,
            "limit_reset": None,
            "limit_remaining": None,
            "include_byok_in_limit": False,
            "usage": 0.0,
            "usage_daily": 0.0,
            "usage_weekly": 0.0,
            "usage_monthly": 0.0,
            "is_free_tier": False,
        }
        data.update(self.key_info.get(request.key, {}))
        return 200, {"data": data}, {}

    def set_credit(
        self,
        key: str,
        *,
        limit: float | None,
        remaining: float | None,
        usage: float = 0.0,
        label: str | None = None,
    ) -> None:
        """What ``GET /key`` reports for ``key`` (``None`` limit/remaining: unlimited)."""
        info: dict[str, Any] = {"limit": limit, "limit_remaining": remaining, "usage": usage}
        if label is not None:
            info["label"] = label
        self.key_info[key] = info

    # -- realistic answers -------------------------------------------------------------
    @staticmethod
    def error(
        status: int,
        message: str,
        *,
        code: int | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> Scripted:
        """OpenRouter's shape: ``{"error": {"code", "message", "metadata"?}}`` (code = status)."""
        error: dict[str, Any] = {"code": status if code is None else code, "message": message}
        if metadata is not None:
            error["metadata"] = dict(metadata)
        return Scripted(status=status, body={"error": error}, headers=dict(headers or {}), key=key)

    @classmethod
    def no_credit(cls, *, key: str | None = None) -> Scripted:
        return cls.error(
            402,
            "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
            key=key,
        )

    @classmethod
    def invalid_key(cls, *, key: str | None = None) -> Scripted:
        return cls.error(401, "User not found.", key=key)

    @classmethod
    def moderation(cls) -> Scripted:
        """OpenRouter's 403 for flagged input: the request's fault, not the key's."""
        return cls.error(
            403,
            "Input was flagged by moderation",
            metadata={
                "reasons": ["harassment"],
                "flagged_input": "...",
                "provider_name": "OpenAI",
                "model_slug": "openai/gpt-4o",
            },
        )

    @classmethod
    def rate_limited(
        cls,
        *,
        retry_after_s: float | None = None,
        reset_epoch_ms: int | None = None,
        key: str | None = None,
    ) -> Scripted:
        """429 with ``Retry-After`` and/or ``X-RateLimit-Reset`` (epoch milliseconds)."""
        headers: dict[str, str] = {}
        if retry_after_s is not None:
            headers["retry-after"] = f"{retry_after_s:g}"
        if reset_epoch_ms is not None:
            headers.update(
                {
                    "x-ratelimit-limit": "20",
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(reset_epoch_ms),
                }
            )
        return cls.error(
            429,
            "Rate limit exceeded: free-models-per-min.",
            metadata={"error_type": "rate_limit_exceeded"},
            headers=headers,
            key=key,
        )

    @classmethod
    def upstream_down(cls) -> Scripted:
        return cls.error(502, "Provider returned error", metadata={"provider_name": "Fake"})

    @classmethod
    def unavailable(cls) -> Scripted:
        return cls.error(503, "No endpoints found that can handle the requested parameters.")

    @staticmethod
    def glm_error(
        code: str, message: str, *, status: int = 429, key: str | None = None
    ) -> Scripted:
        """z.ai / bigmodel: ``{"error": {"code": "1113", "message": ...}}`` with an HTTP status."""
        return Scripted(status=status, body={"error": {"code": code, "message": message}}, key=key)

    @staticmethod
    def error_in_200(code: int | str, message: str) -> Scripted:
        """An error that arrives in a 200 body (the generation failed after routing)."""
        return Scripted(status=200, body={"error": {"code": code, "message": message}})

    @staticmethod
    def finish_error(code: int | str, message: str) -> Scripted:
        """A 200 whose only choice ended with ``finish_reason: "error"``."""
        return Scripted(
            status=200,
            body={
                "id": f"gen-fake-{next(_ids)}",
                "object": "chat.completion",
                "model": "fake-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ""},
                        "finish_reason": "error",
                        "error": {"code": code, "message": message},
                    }
                ],
            },
        )
