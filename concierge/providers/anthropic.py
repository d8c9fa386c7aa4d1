"""The ``anthropic`` adapter: Claude's Messages API (and GLM's Anthropic-compatible endpoint).

Built on the official SDK, which runs natively under trio once it is handed an
``httpx2.AsyncClient`` (the SDK's HTTP library; plain httpx is refused). The SDK
never retries (``max_retries=0``): the pool owns the one retry loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic
import httpx2
import trio

from concierge.protocol import Outcome, ProviderCall, ProviderReply
from concierge.providers.classify import (
    error_detail,
    glm_outcome,
    is_spend_limit_message,
    outcome_for_status,
    retry_after_from_headers,
)
from concierge.providers.errors import ProviderError
from concierge.providers.network import ConfiguredAdapter, sdk_http_client
from concierge.providers.turns import chat_turns
from concierge.settings import ApiKey, ProviderSettings

__all__ = ["AnthropicAdapter", "classify_anthropic_error"]

_DEAD_KEY_TYPES = frozenset({"authentication_error", "permission_error", "billing_error"})


def classify_anthropic_error(
    status: int, body: object, headers: Mapping[str, str]
) -> ProviderError:
    """Turn an error response of the Messages API into a classified ``ProviderError``.

    GLM's Anthropic-compatible endpoint sends its own business codes
    (``{"error": {"code": "1113"}}``), which win over the HTTP status.
    """
    error: Mapping[str, Any] = {}
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
    error_type = error.get("type")
    message = str(error.get("message") or (body if isinstance(body, str) else ""))
    code = error.get("code")
    outcome = glm_outcome(code)
    if outcome is None:
        if status == 429:
            outcome = Outcome.THROTTLED
        elif status >= 500:  # 500 api_error, 504 timeout_error, 529 overloaded_error
            outcome = Outcome.TRANSIENT
        elif (
            status in (401, 402, 403)
            or error_type in _DEAD_KEY_TYPES
            or (status == 400 and is_spend_limit_message(message))
        ):
            outcome = Outcome.DEAD_KEY
        else:
            outcome = outcome_for_status(status)
    hint = retry_after_from_headers(headers) if outcome is Outcome.THROTTLED else None
    return ProviderError(
        outcome, error_detail(status, code or error_type, message), retry_after_s=hint
    )


class AnthropicAdapter(ConfiguredAdapter):
    """One configured Anthropic-kind provider; one SDK client per key over one HTTP client."""

    KIND = "anthropic"

    def __init__(
        self, settings: ProviderSettings, *, http_client: httpx2.AsyncClient | None = None
    ) -> None:
        super().__init__(settings)
        self._http = http_client or sdk_http_client(settings)
        self._clients: dict[str, anthropic.AsyncAnthropic] = {}

    def _client(self, key: ApiKey) -> anthropic.AsyncAnthropic:
        client = self._clients.get(key.secret)
        if client is None:
            # The SDK sends the key as a Bearer token; x-api-key as well keeps endpoints
            # that only read the documented header (GLM's, older proxies) working.
            client = anthropic.AsyncAnthropic(
                api_key=key.secret,
                base_url=self._settings.base_url,
                max_retries=0,
                timeout=self._settings.timeout_s,
                http_client=self._http,
                default_headers={"x-api-key": key.secret},
            )
            self._clients[key.secret] = client
        return client

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        """One Messages API call with ``key``; any failure is a classified ``ProviderError``.

        Failures are logged once, by the pool, which knows what they led to.
        """
        messages: list[Any] = [{"role": t.role.value, "content": t.text} for t in chat_turns(call)]
        extra: dict[str, Any] = {"system": call.system} if call.system else {}
        client = self._client(key)
        try:
            with trio.fail_after(max(0.0, call.timeout_s)):
                message = await client.messages.create(
                    model=self._settings.model,
                    max_tokens=call.max_tokens,
                    messages=messages,
                    timeout=call.timeout_s,
                    **extra,
                )
        except (trio.TooSlowError, anthropic.APITimeoutError):
            raise ProviderError.no_answer(call.timeout_s) from None
        except anthropic.APIStatusError as exc:
            raise classify_anthropic_error(exc.status_code, exc.body, exc.response.headers) from exc
        except anthropic.APIConnectionError as exc:
            raise ProviderError(Outcome.TRANSIENT, f"connection failed: {exc}") from exc
        except anthropic.AnthropicError as exc:
            raise ProviderError(Outcome.TRANSIENT, f"unusable response: {exc}") from exc
        text = "".join(block.text for block in message.content if block.type == "text").strip()
        if message.stop_reason == "refusal":
            raise ProviderError(
                Outcome.REQUEST_ERROR, "the model refused to answer (stop_reason refusal)"
            )
        if not text:
            raise ProviderError(
                Outcome.TRANSIENT, f"empty reply (stop_reason {message.stop_reason})"
            )
        return ProviderReply(
            text=text,
            model=message.model or self._settings.model,
            tokens_in=message.usage.input_tokens,
            tokens_out=message.usage.output_tokens,
        )

    async def aclose(self) -> None:
        """Close the shared HTTP client (the per-key SDK clients only borrow it)."""
        self._clients.clear()
        await self._http.aclose()
