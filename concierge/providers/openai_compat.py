"""The ``openai`` adapter: OpenAI-compatible chat completions over httpx2 (OpenRouter, GLM, local servers).

No SDK: one ``POST {base_url}/chat/completions`` per attempt is all it takes, httpx2
runs natively under trio, and the error semantics that matter (OpenRouter's 402 and
moderation 403, GLM's business codes inside a 429, errors inside a 200) live in the
body, which an SDK would hide. ``OpenRouterAdapter`` adds the key-credit query.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx2
import trio

from concierge.protocol import Outcome, ProviderCall, ProviderReply
from concierge.providers.classify import (
    error_detail,
    glm_outcome,
    outcome_for_status,
    retry_after_from_headers,
)
from concierge.providers.errors import ProviderError
from concierge.providers.network import ConfiguredAdapter, http_client as http_client_for
from concierge.providers.turns import chat_turns
from concierge.settings import ApiKey, ProviderSettings

__all__ = [
    "KeyCredit",
    "OpenAICompatAdapter",
    "OpenRouterAdapter",
    "classify_openai_error",
    "is_openrouter",
]

KEY_INFO_TIMEOUT_S = 10.0
_DEAD_KEY_CODES = frozenset({"insufficient_quota", "invalid_api_key", "account_deactivated"})
_MODERATION_WORDS = ("moderation", "flagged", "guardrail")


@attrs.frozen(kw_only=True)
class KeyCredit:
    """OpenRouter's view of one key (USD credits); ``None`` limit/remaining means unlimited."""

    limit: float | None
    remaining: float | None
    usage: float
    label: str = ""
    is_free_tier: bool | None = None


def _is_moderation(error: Mapping[str, Any]) -> bool:
    metadata = error.get("metadata")
    if isinstance(metadata, Mapping) and ("reasons" in metadata or "flagged_input" in metadata):
        return True
    message = str(error.get("message") or "").lower()
    return any(word in message for word in _MODERATION_WORDS)


def _embedded_status(code: object) -> int | None:
    """An HTTP-like status carried in ``error.code`` (OpenRouter puts 402, 429, 502 there)."""
    if isinstance(code, bool):
        return None
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, int) and 400 <= code < 600:
        return code
    return None


def classify_openai_error(
    status: int, body: object, headers: Mapping[str, str], *, now: float | None = None
) -> ProviderError:
    """Classify an error answer of an OpenAI-compatible API, including errors inside a 200.

    A GLM business code (``"1113"``) wins over the HTTP status; inside a 200 the
    embedded code stands in for the status; a 403 for moderation is the request's
    fault, any other 403 the key's.
    """
    error: Mapping[str, Any] = {}
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
    code = error.get("code")
    kind = error.get("type")
    message = error.get("message") or (body if isinstance(body, str) else "")
    outcome = glm_outcome(code)
    if outcome is None:
        effective = status
        if 200 <= status < 300:
            effective = _embedded_status(code) or 502  # a failed generation: the provider's
        if code in _DEAD_KEY_CODES or kind in _DEAD_KEY_CODES:
            outcome = Outcome.DEAD_KEY
        elif effective == 403 and _is_moderation(error):
            outcome = Outcome.REQUEST_ERROR
        else:
            outcome = outcome_for_status(effective)
    hint = retry_after_from_headers(headers, now=now) if outcome is Outcome.THROTTLED else None
    return ProviderError(outcome, error_detail(status, code or kind, message), retry_after_s=hint)


def is_openrouter(settings: ProviderSettings) -> bool:
    """OpenRouter is recognised by name or host; only it has the key-credit endpoint."""
    host = urlsplit(settings.base_url or "").hostname or ""
    return (
        settings.name == "openrouter" or host == "openrouter.ai" or host.endswith(".openrouter.ai")
    )


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type", "text") == "text"
        )
    return ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class OpenAICompatAdapter(ConfiguredAdapter):
    """One configured OpenAI-compatible provider over one httpx2 client."""

    KIND = "openai"

    def __init__(
        self, settings: ProviderSettings, *, http_client: httpx2.AsyncClient | None = None
    ) -> None:
        if not settings.base_url:
            raise ValueError(f"provider {settings.name!r} of kind openai needs a base URL")
        super().__init__(settings)
        self._base_url = settings.base_url.rstrip("/")
        self._http = http_client or http_client_for(settings)
        self._attribution: dict[str, str] = {}
        if settings.app_url:
            self._attribution["HTTP-Referer"] = settings.app_url
        if settings.app_title:
            self._attribution["X-Title"] = settings.app_title

    def _headers(self, key: ApiKey) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.secret}", **self._attribution}

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        """One chat completion with ``key``; any failure is a classified ``ProviderError``.

        Failures are logged once, by the pool, which knows what they led to.
        """
        messages: list[dict[str, str]] = []
        if call.system:
            messages.append({"role": "system", "content": call.system})
        messages.extend({"role": t.role.value, "content": t.text} for t in chat_turns(call))
        payload = {
            "model": self._settings.model,
            "messages": messages,
            "max_tokens": call.max_tokens,
            "stream": False,
        }
        timeout = httpx2.Timeout(call.timeout_s, connect=min(5.0, call.timeout_s))
        try:
            with trio.fail_after(max(0.0, call.timeout_s)):
                response = await self._http.post(
                    f"{self._base_url}/chat/completions",
                    json=payload,
                    headers=self._headers(key),
                    timeout=timeout,
                )
        except (trio.TooSlowError, httpx2.TimeoutException):
            raise ProviderError.no_answer(call.timeout_s) from None
        except httpx2.HTTPError as exc:
            raise ProviderError(Outcome.TRANSIENT, f"connection failed: {exc!r}") from exc
        body = _body(response)
        if not response.is_success:
            raise classify_openai_error(response.status_code, body, response.headers)
        if not isinstance(body, Mapping):
            raise ProviderError(Outcome.TRANSIENT, f"unusable response: {str(body)[:120]!r}")
        if body.get("error"):
            raise classify_openai_error(response.status_code, body, response.headers)
        return self._reply(body, response.headers)

    def _reply(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> ProviderReply:
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise ProviderError(Outcome.TRANSIENT, "no choices in the reply")
        choice = choices[0]
        finish = choice.get("finish_reason")
        if finish == "error":
            embedded = choice.get("error")
            raise classify_openai_error(
                200, {"error": embedded if isinstance(embedded, Mapping) else {}}, headers
            )
        message = choice.get("message")
        text = _text_of(message.get("content") if isinstance(message, Mapping) else None).strip()
        if not text:
            if finish in ("content_filter", "length"):
                raise ProviderError(Outcome.REQUEST_ERROR, f"empty reply (finish_reason {finish})")
            raise ProviderError(Outcome.TRANSIENT, f"empty reply (finish_reason {finish})")
        raw_usage = body.get("usage")
        usage: Mapping[str, Any] = raw_usage if isinstance(raw_usage, Mapping) else {}
        model = body.get("model")
        return ProviderReply(
            text=text,
            model=model if isinstance(model, str) and model else self._settings.model,
            tokens_in=_int(usage.get("prompt_tokens")),
            tokens_out=_int(usage.get("completion_tokens")),
        )

    async def aclose(self) -> None:
        await self._http.aclose()


class OpenRouterAdapter(OpenAICompatAdapter):
    """OpenRouter: chat completions plus ``GET /key``, which the pool's credit monitor polls."""

    async def fetch_key_info(
        self, key: ApiKey, *, timeout_s: float = KEY_INFO_TIMEOUT_S
    ) -> KeyCredit:
        """What ``GET {base_url}/key`` says about ``key``; failures raise ``ProviderError``."""
        try:
            with trio.fail_after(timeout_s):
                response = await self._http.get(
                    f"{self._base_url}/key", headers=self._headers(key), timeout=timeout_s
                )
        except (trio.TooSlowError, httpx2.TimeoutException):
            raise ProviderError.no_answer(timeout_s, what="key info: ") from None
        except httpx2.HTTPError as exc:
            raise ProviderError(Outcome.TRANSIENT, f"key info: connection failed: {exc!r}") from exc
        body = _body(response)
        if not response.is_success:
            raise classify_openai_error(response.status_code, body, response.headers)
        data = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(data, Mapping):
            raise ProviderError(Outcome.TRANSIENT, "key info: no data object in the reply")
        try:
            return KeyCredit(
                limit=_money(data.get("limit")),
                remaining=_money(data.get("limit_remaining")),
                usage=_money(data.get("usage")) or 0.0,
                label=str(data.get("label") or ""),
                is_free_tier=data["is_free_tier"]
                if isinstance(data.get("is_free_tier"), bool)
                else None,
            )
        except (TypeError, ValueError) as exc:
            raise ProviderError(Outcome.TRANSIENT, f"key info: unusable figures: {exc}") from exc


def _money(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _body(response: httpx2.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text
