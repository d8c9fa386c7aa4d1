"""A loopback fake of the Gemini API's ``generateContent`` (``v1beta`` and ``v1``), errors included.

Usage::

    async with FakeGemini.serve() as fake:
        fake.push(FakeGemini.resource_exhausted(retry_delay_s=7))
        adapter = GeminiAdapter(settings_with(base_url=fake.url))
        ...
        assert fake.requests[0].path_args["model"] == "gemini-2.5-flash"

Serves ``POST /{v1beta|v1}/models/{model}:generateContent``; the key comes from the
``x-goog-api-key`` header or ``?key=``. Errors follow google.rpc.Status
(``{"error": {"code", "message", "status", "details": [...]}}``); Gemini sends no
``Retry-After``: the delay is only in ``RetryInfo.retryDelay``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tests.fakes.llm_common import Received, Route, Scripted, ScriptedServer, seconds_text

__all__ = ["FakeGemini"]

_PATH = re.compile(r"^.*?/(?P<version>v1beta|v1alpha|v1)/models/(?P<model>[^/:]+):generateContent$")
_ids = itertools.count(1)

_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


class FakeGemini(ScriptedServer):
    main_endpoint = "generateContent"

    def route(self, method: str, path: str) -> Route | None:
        match = _PATH.match(path)
        if method != "POST" or match is None:
            return None
        return Route(endpoint="generateContent", path_args=match.groupdict())

    def key_of(self, headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or params.get("key")

    def not_found_body(self, path: str) -> Any:
        return _status_body(404, "NOT_FOUND", f"Requested entity was not found: {path}")

    def success_body(self, reply: Scripted, request: Received) -> Any:
        body: dict[str, Any] = {
            "candidates": [
                {
                    "content": {"parts": [{"text": reply.text}], "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": reply.tokens_in,
                "candidatesTokenCount": reply.tokens_out,
                "totalTokenCount": reply.tokens_in + reply.tokens_out,
            },
            "modelVersion": request.path_args.get("model", "gemini-fake"),
            "responseId": f"fake-{next(_ids)}",
        }
        body.update(reply.extra)
        return body

    # -- realistic answers -------------------------------------------------------------
    @staticmethod
    def error(
        code: int,
        status: str,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        key: str | None = None,
    ) -> Scripted:
        """A google.rpc.Status error body with HTTP status ``code``."""
        return Scripted(status=code, body=_status_body(code, status, message, details), key=key)

    @classmethod
    def resource_exhausted(
        cls,
        *,
        retry_delay_s: float | None = 7.0,
        quota_id: str = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        key: str | None = None,
    ) -> Scripted:
        """429 RESOURCE_EXHAUSTED with QuotaFailure and (optionally) RetryInfo."""
        details: list[dict[str, Any]] = [
            {
                "@type": _QUOTA_FAILURE,
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": quota_id,
                        "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                        "quotaValue": "10",
                    }
                ],
            }
        ]
        message = "You exceeded your current quota, please check your plan and billing details."
        if retry_delay_s is not None:
            details.append({"@type": _RETRY_INFO, "retryDelay": seconds_text(retry_delay_s)})
            message += f" Please retry in {retry_delay_s:g}s."
        return cls.error(429, "RESOURCE_EXHAUSTED", message, details=details, key=key)

    @classmethod
    def per_day_quota(cls, *, retry_delay_s: float = 36.0, key: str | None = None) -> Scripted:
        return cls.resource_exhausted(
            retry_delay_s=retry_delay_s,
            quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            key=key,
        )

    @classmethod
    def invalid_key(cls, *, key: str | None = None) -> Scripted:
        return cls.error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            details=[
                {
                    "@type": _ERROR_INFO,
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ],
            key=key,
        )

    @classmethod
    def permission_denied(cls, *, key: str | None = None) -> Scripted:
        return cls.error(
            403,
            "PERMISSION_DENIED",
            "Your API key was reported as leaked. Please use another API key.",
            key=key,
        )

    @classmethod
    def failed_precondition(cls, *, key: str | None = None) -> Scripted:
        return cls.error(
            400,
            "FAILED_PRECONDITION",
            "User location is not supported for the API use without a billing account linked.",
            key=key,
        )

    @classmethod
    def invalid_argument(cls, message: str = "Invalid JSON payload received.") -> Scripted:
        return cls.error(400, "INVALID_ARGUMENT", message)

    @classmethod
    def unavailable(cls) -> Scripted:
        return cls.error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")

    @classmethod
    def internal(cls) -> Scripted:
        return cls.error(500, "INTERNAL", "An internal error has occurred.")

    @classmethod
    def deadline_exceeded(cls) -> Scripted:
        return cls.error(
            504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
        )

    @staticmethod
    def blocked_prompt(reason: str = "SAFETY") -> Scripted:
        """HTTP 200 without candidates: the prompt itself was blocked."""
        return Scripted(
            body={
                "promptFeedback": {
                    "blockReason": reason,
                    "safetyRatings": [
                        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}
                    ],
                },
                "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
                "modelVersion": "gemini-fake",
            }
        )

    @staticmethod
    def finished(reason: str, text: str | None = None) -> Scripted:
        """HTTP 200 with one candidate that stopped for ``reason`` (e.g. ``SAFETY``)."""
        candidate: dict[str, Any] = {"finishReason": reason, "index": 0}
        if text is not None:
            candidate["content"] = {"parts": [{"text": text}], "role": "model"}
        return Scripted(
            body={
                "candidates": [candidate],
                "usageMetadata": {
                    "promptTokenCount": 9,
                    "candidatesTokenCount": 0,
                    "totalTokenCount": 9,
                },
                "modelVersion": "gemini-fake",
            }
        )


def _status_body(
    code: int, status: str, message: str, details: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = [dict(d) for d in details]
    return {"error": error}
