"""The ``gemini`` adapter: Google's Gemini API (``v1beta`` generateContent) through ``google-genai``.

``google-genai`` is Google's maintained SDK (``google-generativeai`` reached its end of
life on 2025-11-30). Its default async client keeps connection pools per asyncio loop
and fails under trio, so the adapter hands it its own ``httpx2.AsyncClient``. The SDK
runs with one attempt (no tenacity retries): the pool owns the one retry loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx2
import pydantic
import trio
from google import genai
from google.genai import errors as genai_errors, types

from concierge.protocol import Outcome, ProviderCall, ProviderReply, Role
from concierge.providers.classify import (
    error_detail,
    outcome_for_status,
    parse_duration,
    seconds_until_pacific_midnight,
)
from concierge.providers.errors import ProviderError
from concierge.providers.network import ConfiguredAdapter, sdk_http_client
from concierge.providers.turns import chat_turns
from concierge.settings import ApiKey, ProviderSettings

__all__ = ["API_VERSION", "GeminiAdapter", "classify_gemini_error"]

API_VERSION = "v1beta"
"""generateContent with systemInstruction is documented on v1beta; the SDK's default is v1."""

_DEAD_KEY_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "CONSUMER_SUSPENDED",
        "SERVICE_DISABLED",
        "BILLING_DISABLED",
    }
)
_DEAD_KEY_STATUSES = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED", "FAILED_PRECONDITION"})
_RETRY_IN = re.compile(r"retry in (\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
# finish reasons that mean the content was refused, not that the provider failed
_BLOCKED_FINISH = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "LANGUAGE",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


def _details(body: object) -> Sequence[Mapping[str, Any]]:
    error = body.get("error") if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    if not isinstance(details, list):
        return ()
    return [d for d in details if isinstance(d, Mapping)]


def classify_gemini_error(
    code: int, status: str | None, message: str | None, body: object, *, now: float | None = None
) -> ProviderError:
    """Turn a google.rpc.Status error of the Gemini API into a classified ``ProviderError``.

    429 RESOURCE_EXHAUSTED is throttled until ``RetryInfo.retryDelay``; a per-day quota
    until midnight Pacific, when Google resets it.
    """
    details = _details(body)
    reasons = {
        str(d.get("reason")) for d in details if str(d.get("@type", "")).endswith("ErrorInfo")
    }
    quota_ids = [
        str(v.get("quotaId", ""))
        for d in details
        if str(d.get("@type", "")).endswith("QuotaFailure")
        for v in d.get("violations", ())
        if isinstance(v, Mapping)
    ]
    text = message or ""
    detail = error_detail(code, status, text)
    if code == 429 or status == "RESOURCE_EXHAUSTED":
        hint: float | None = None
        for d in details:
            if str(d.get("@type", "")).endswith("RetryInfo"):
                hint = parse_duration(d.get("retryDelay"))
        if hint is None and (match := _RETRY_IN.search(text)):
            hint = float(match.group(1))
        if any("perday" in q.lower() for q in quota_ids):
            hint = max(hint or 0.0, seconds_until_pacific_midnight(now=now))
            detail = f"{detail} (daily quota)"
        return ProviderError(Outcome.THROTTLED, detail, retry_after_s=hint)
    if reasons & _DEAD_KEY_REASONS or status in _DEAD_KEY_STATUSES or code in (401, 402, 403):
        return ProviderError(Outcome.DEAD_KEY, detail)
    if code >= 500:
        return ProviderError(Outcome.TRANSIENT, detail)
    return ProviderError(outcome_for_status(code), detail)


class GeminiAdapter(ConfiguredAdapter):
    """One configured Gemini-kind provider; one SDK client per key over one HTTP client."""

    KIND = "gemini"

    def __init__(
        self, settings: ProviderSettings, *, http_client: httpx2.AsyncClient | None = None
    ) -> None:
        super().__init__(settings)
        self._http = http_client or sdk_http_client(settings)
        self._clients: dict[str, genai.Client] = {}

    def _client(self, key: ApiKey) -> genai.Client:
        client = self._clients.get(key.secret)
        if client is None:
            options = types.HttpOptions(
                api_version=API_VERSION,
                httpx_async_client=self._http,
                retry_options=types.HttpRetryOptions(attempts=1),
                timeout=_ms(self._settings.timeout_s),
            )
            if self._settings.base_url:
                options.base_url = self._settings.base_url.rstrip("/") + "/"
            client = genai.Client(vertexai=False, api_key=key.secret, http_options=options)
            self._clients[key.secret] = client
        return client

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        """One generateContent call with ``key``; any failure is a classified ``ProviderError``.

        Failures are logged once, by the pool, which knows what they led to.
        """
        contents = [
            types.Content(
                role="model" if t.role is Role.ASSISTANT else "user",
                parts=[types.Part(text=t.text)],
            )
            for t in chat_turns(call)
        ]
        config = types.GenerateContentConfig(
            system_instruction=call.system or None,
            max_output_tokens=call.max_tokens,
            http_options=types.HttpOptions(timeout=_ms(call.timeout_s)),
        )
        client = self._client(key)
        try:
            with trio.fail_after(max(0.0, call.timeout_s)):
                response = await client.aio.models.generate_content(
                    model=self._settings.model,
                    contents=contents,
                    config=config,
                )
        except (trio.TooSlowError, httpx2.TimeoutException):
            raise ProviderError.no_answer(call.timeout_s) from None
        except genai_errors.APIError as exc:
            raise classify_gemini_error(exc.code, exc.status, exc.message, exc.details) from exc
        except httpx2.HTTPError as exc:
            raise ProviderError(Outcome.TRANSIENT, f"connection failed: {exc!r}") from exc
        except (pydantic.ValidationError, ValueError) as exc:
            raise ProviderError(Outcome.TRANSIENT, f"unusable response: {exc}") from exc
        return self._reply(response)

    def _reply(self, response: types.GenerateContentResponse) -> ProviderReply:
        feedback = response.prompt_feedback
        if not response.candidates:
            if feedback is not None and feedback.block_reason is not None:
                raise ProviderError(
                    Outcome.REQUEST_ERROR, f"prompt blocked ({_enum_name(feedback.block_reason)})"
                )
            raise ProviderError(Outcome.TRANSIENT, "no candidates in the reply")
        candidate = response.candidates[0]
        finish = _enum_name(candidate.finish_reason) if candidate.finish_reason is not None else ""
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(p.text for p in parts if p.text and not p.thought).strip()
        if finish in _BLOCKED_FINISH:
            raise ProviderError(Outcome.REQUEST_ERROR, f"reply blocked (finishReason {finish})")
        if not text:
            raise ProviderError(Outcome.TRANSIENT, f"empty reply (finishReason {finish or 'none'})")
        usage = response.usage_metadata
        return ProviderReply(
            text=text,
            model=response.model_version or self._settings.model,
            tokens_in=(usage.prompt_token_count or 0) if usage else 0,
            tokens_out=(usage.candidates_token_count or 0) if usage else 0,
        )

    async def aclose(self) -> None:
        """Close the shared HTTP client (the SDK leaves a client it was given open)."""
        self._clients.clear()
        await self._http.aclose()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _enum_name(value: object) -> str:
    return str(getattr(value, "value", value))
