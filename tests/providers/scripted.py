"""An in-process ``Adapter`` that answers from a script, for pool tests without HTTP.

Steps are consumed one per call; with the script empty, ``by_key`` (per key alias)
and then ``default`` answer. A step can be a callable of ``(call, key)`` returning a
step, for behaviour that depends on the key or the call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import attrs
import trio
import trio.lowlevel

from concierge.protocol import Outcome, ProviderCall, ProviderReply
from concierge.providers import ProviderError
from concierge.settings import ApiKey, BreakerSettings, PoolSettings, ProviderSettings


@attrs.frozen(kw_only=True)
class Reply:
    text: str = "Bonjour"
    delay_s: float = 0.0


@attrs.frozen(kw_only=True)
class Fail:
    outcome: Outcome
    detail: str = "scripted failure"
    retry_after_s: float | None = None
    delay_s: float = 0.0


@attrs.frozen(kw_only=True)
class Hang:
    """Never answer: only the pool's timeout ends the call."""


@attrs.frozen(kw_only=True)
class Crash:
    """Raise an unclassified exception, as a buggy adapter would."""

    message: str = "boom"


Step = Reply | Fail | Hang | Crash | Callable[[ProviderCall, ApiKey], "Reply | Fail | Hang | Crash"]


@attrs.frozen(kw_only=True)
class Credit:
    limit: float | None = None
    remaining: float | None = None
    usage: float = 0.0


class ScriptedAdapter:
    def __init__(
        self,
        name: str,
        *,
        kind: str = "anthropic",
        model: str = "scripted-model",
        script: Iterable[Step] = (),
        default: Step = Reply(),
    ) -> None:
        self._name = name
        self._kind = kind
        self._model = model
        self.script: deque[Step] = deque(script)
        self.by_key: dict[str, Step] = {}
        self.default: Step = default
        self.calls: list[tuple[ProviderCall, ApiKey]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def model(self) -> str:
        return self._model

    @property
    def keys_used(self) -> list[str]:
        return [key.alias for _, key in self.calls]

    def push(self, *steps: Step) -> None:
        self.script.extend(steps)

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        self.calls.append((call, key))
        step = self.script.popleft() if self.script else self.by_key.get(key.alias, self.default)
        if callable(step):
            step = step(call, key)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            match step:
                case Reply(text=text, delay_s=delay):
                    await trio.sleep(delay)
                    return ProviderReply(text=text, model=self._model, tokens_in=3, tokens_out=5)
                case Fail(outcome=outcome, detail=detail, retry_after_s=hint, delay_s=delay):
                    await trio.sleep(delay)
                    raise ProviderError(outcome, detail, retry_after_s=hint)
                case Hang():
                    await trio.sleep_forever()
                case Crash(message=message):
                    raise RuntimeError(message)
            raise AssertionError(f"not a step: {step!r}")
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True


class ScriptedCreditAdapter(ScriptedAdapter):
    """A scripted OpenAI-compatible provider that also reports key credit."""

    def __init__(self, name: str) -> None:
        super().__init__(name, kind="openai")
        self.credits: dict[str, Credit] = {}
        self.credit_polls: list[str] = []

    async def fetch_key_info(self, key: ApiKey) -> Credit:
        self.credit_polls.append(key.alias)
        await trio.lowlevel.checkpoint()
        return self.credits.get(key.alias, Credit())


def provider_settings(
    name: str, *, kind: str = "anthropic", keys: Iterable[str] = ("k1",), timeout_s: float = 10.0
) -> ProviderSettings:
    return ProviderSettings(
        name=name,
        kind=kind,
        model="scripted-model",
        base_url=None,
        keys=tuple(ApiKey(alias=alias, secret=f"secret-{name}-{alias}") for alias in keys),
        timeout_s=timeout_s,
    )


def pool_settings(
    *providers: ProviderSettings,
    max_attempts: int = 3,
    turn_timeout_s: float = 30.0,
    consecutive: int = 5,
    window: int = 20,
    min_calls: int = 5,
    failure_rate: float = 0.5,
    open_s: float = 30.0,
    open_max_s: float = 300.0,
    credit_poll_s: float = 300.0,
) -> PoolSettings:
    return PoolSettings(
        providers=providers,
        turn_timeout_s=turn_timeout_s,
        attempt_timeout_s=10.0,
        max_attempts=max_attempts,
        max_tokens=100,
        breaker=BreakerSettings(
            window=window,
            min_calls=min_calls,
            failure_rate=failure_rate,
            consecutive=consecutive,
            open_s=open_s,
            open_max_s=open_max_s,
        ),
        credit_poll_s=credit_poll_s,
    )
