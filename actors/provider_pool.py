"""The provider pool actor: answers ``CompletionRequest``s through the configured providers.

Each request runs in its own task under one deadline (its call's ``timeout_s``) that
covers every attempt; ``ask`` is the caller's side of the exchange. Decisions:

- Providers are tried in configured order, untried ones before any that already
  failed this turn; keys rotate round-robin per provider. A throttled or dead key
  moves on to the provider's next key at once; a transient failure moves on to the
  next provider. Each attempt gets ``min(provider timeout, time left)``.
- The pool sleeps only when nothing is eligible and a cooling key's hint ends
  before the deadline; otherwise it fails over (or gives up) at once.
- At most ``max_attempts`` network attempts per turn. The offline provider is not
  one of them: it is local and free, answers last wherever it is listed, and gets a
  small reserve at the end of the turn so it can still answer when every network
  provider hangs.
- A request error (400, blocked content) is not retried on another network
  provider, as the provider reference advises: the same request would most likely
  be refused again, and each try is billed. The offline provider still answers.
- An attempt cut short by the turn's deadline (not by the provider's own timeout)
  is not held against the provider's breaker.
- If every provider with a usable key has an open breaker, one request at a time
  goes to the least recently opened one as its half-open probe.
- A provider that has used its day's tokens (``<NAME>_DAILY_TOKENS``, counted from
  the usage its replies report) is skipped until the next UTC day, like one whose
  keys are all cooling; a request with ``network`` false (a person past their own
  budget) goes to the offline provider alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date

import attrs
import structlog
import trio
from prometheus_client.core import Metric

from concierge.domain import DailyTokens, utc_today
from concierge.observability import Check
from concierge.protocol import (
    AttemptFailure,
    Completion,
    CompletionFailed,
    CompletionRequest,
    CompletionResult,
    DailyUsage,
    Outcome,
    ProviderCall,
    ProviderPoolMsg,
    ProviderReply,
    utcnow,
)
from concierge.providers import (
    Adapter,
    BreakerState,
    CircuitBreaker,
    CreditFetch,
    CreditMonitor,
    KeyRing,
    KeySlot,
    KeyStatistics,
    PoolStatistics,
    ProviderCounters,
    ProviderError,
    ProviderStatistics,
    Ticket,
    pool_health_checks,
    pool_metrics,
)
from concierge.settings import ApiKey, PoolSettings, ProviderSettings

log = structlog.get_logger(__name__)

ASK_MARGIN_S = 2.0
"""How much longer than the turn's budget ``ask`` waits: the pool answers by the deadline."""
OFFLINE_RESERVE_S = 0.5
OFFLINE_RESERVE_SHARE = 0.1
"""Network attempts stop this much (at most this share of the budget) before the turn's
deadline so the offline provider still has time to answer from the knowledge base."""


async def ask(
    pool_inbox: trio.MemorySendChannel[ProviderPoolMsg],
    call: ProviderCall,
    *,
    network: bool = True,
    margin_s: float = ASK_MARGIN_S,
) -> CompletionResult:
    """Ask the pool to answer ``call``; never raises for a pool that is slow, stopped or crashed.

    ``network`` false lets only the offline provider answer (a person past their budget).

    Sending and waiting share one bound (``call.timeout_s + margin_s``); anything that
    prevents an answer comes back as ``CompletionFailed``.
    """
    correlation_id = call.correlation_id
    reply_to, replies = trio.open_memory_channel[CompletionResult](1)
    request = CompletionRequest(call=call, reply_to=reply_to, network=network)
    with replies, trio.move_on_after(call.timeout_s + margin_s):
        try:
            await pool_inbox.send(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            reply_to.close()
            return CompletionFailed(
                correlation_id=correlation_id, reason="the provider pool is not running"
            )
        try:
            return await replies.receive()
        except trio.EndOfChannel:
            return CompletionFailed(
                correlation_id=correlation_id, reason="the provider pool stopped before answering"
            )
    # The request may never have been delivered: closing our clone is harmless either way.
    return CompletionFailed(
        correlation_id=correlation_id,
        reason=f"no answer from the provider pool within {call.timeout_s + margin_s:g} s",
    )


@attrs.define(kw_only=True, eq=False)
class _Provider:
    adapter: Adapter
    settings: ProviderSettings
    ring: KeyRing
    breaker: CircuitBreaker
    counters: ProviderCounters = attrs.field(factory=ProviderCounters)

    @property
    def name(self) -> str:
        return self.adapter.name


class ProviderPool:
    """Provider state (keys, breakers, credits, statistics) and the turn loop that uses it.

    ``adapters`` come in configured order; each is matched by name to its entry in
    ``settings.providers`` (keys, attempt timeout). The offline adapter (kind
    ``offline``) answers last wherever it is listed. ``credit_fetchers`` maps a
    provider name to its key-info call; by default any adapter with a
    ``fetch_key_info(key)`` method is polled. The state outlives ``run``: a
    supervisor restarting the actor keeps breakers and key states. The pool
    does not close the adapters: whoever built them does.
    """

    def __init__(
        self,
        *,
        adapters: Sequence[Adapter],
        settings: PoolSettings,
        rng: random.Random | None = None,
        clock: Callable[[], float] = trio.current_time,
        credit_fetchers: Mapping[str, CreditFetch] | None = None,
        today: Callable[[], date] = utc_today,
    ) -> None:
        if not adapters:
            raise ValueError("the provider pool needs at least one adapter (CONCIERGE_PROVIDERS)")
        names = [a.name for a in adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"two adapters share a name: {', '.join(names)}")
        self._settings = settings
        self._rng = rng or random.Random()
        self._clock = clock
        configured = {p.name: p for p in settings.providers}
        network: list[_Provider] = []
        offline: list[_Provider] = []
        for adapter in adapters:
            provider_settings = configured.get(adapter.name)
            if provider_settings is None:
                if adapter.kind != "offline":
                    raise ValueError(
                        f"provider {adapter.name!r} has an adapter but no settings (CONCIERGE_PROVIDERS)"
                    )
                provider_settings = ProviderSettings(
                    name=adapter.name,
                    kind="offline",
                    model=adapter.model,
                    base_url=None,
                    keys=(ApiKey(alias="kb", secret=""),),
                    timeout_s=settings.attempt_timeout_s,
                )
            provider = _Provider(
                adapter=adapter,
                settings=provider_settings,
                ring=KeyRing(adapter.name, provider_settings.keys, clock=clock, rng=self._rng),
                breaker=CircuitBreaker(adapter.name, settings.breaker, clock=clock, rng=self._rng),
            )
            (offline if adapter.kind == "offline" else network).append(provider)
        if len(offline) > 1:
            raise ValueError("configure at most one offline provider")
        self._network = tuple(network)
        self._offline = offline[0] if offline else None
        self._keyed = {p.name: p for p in network}
        if credit_fetchers is None:
            credit_fetchers = {
                p.name: fetch
                for p in network
                if callable(fetch := getattr(p.adapter, "fetch_key_info", None))
            }
        self._credits = (
            CreditMonitor(
                rings={p.name: p.ring for p in network},
                fetchers=credit_fetchers,
                poll_s=settings.credit_poll_s,
            )
            if credit_fetchers
            else None
        )
        self._turns_completed = 0
        self._turns_failed = 0
        self._in_flight = 0
        self._tokens: DailyTokens[str] = DailyTokens(today=today)

    def restore_usage(self, usage: DailyUsage) -> None:
        """Take back the tokens each provider used today before a restart (from the store)."""
        self._tokens.restore(usage.day, usage.providers)

    def _spent(self, provider: _Provider) -> bool:
        """Whether ``provider`` has used its day's tokens."""
        budget = provider.settings.daily_tokens
        return 0 < budget <= self._tokens.used(provider.name)

    def _count_tokens(self, provider: _Provider, reply: ProviderReply, cid: str) -> None:
        budget = provider.settings.daily_tokens
        before = self._tokens.used(provider.name)
        after = self._tokens.add(provider.name, reply.tokens_in + reply.tokens_out)
        if budget > 0 and before < budget <= after:
            log.warning(
                "provider.budget_spent",
                correlation_id=cid,
                provider=provider.name,
                tokens=after,
                budget=budget,
            )

    # -- the actor ------------------------------------------------------------------------
    async def run(
        self,
        *,
        inbox: trio.MemoryReceiveChannel[ProviderPoolMsg],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``inbox`` until it closes, one task per request; then finish in-flight turns."""
        async with trio.open_nursery() as services:
            if self._credits is not None:
                await services.start(self._credits.run)
            async with trio.open_nursery() as turns:
                task_status.started()
                with inbox:
                    async for request in inbox:
                        turns.start_soon(self._serve, request)
            services.cancel_scope.cancel()

    async def _serve(self, request: CompletionRequest) -> None:
        self._in_flight += 1
        try:
            with request.reply_to:
                result = await self.complete(request.call, network=request.network)
                try:
                    request.reply_to.send_nowait(result)
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    log.info("provider.reply_dropped", correlation_id=request.call.correlation_id)
        finally:
            self._in_flight -= 1

    # -- one turn -------------------------------------------------------------------------
    async def complete(self, call: ProviderCall, *, network: bool = True) -> CompletionResult:
        """Answer ``call`` within its ``timeout_s``, trying providers and keys as needed.

        With ``network`` false, only the offline provider is asked.
        """
        result = await self._turn(call, network=network)
        if isinstance(result, Completion):
            self._turns_completed += 1
        else:
            self._turns_failed += 1
            log.warning(
                "provider.turn_failed",
                correlation_id=call.correlation_id,
                reason=result.reason,
                attempts=len(result.failures),
            )
        return result

    async def _turn(self, call: ProviderCall, *, network: bool) -> CompletionResult:
        cid = call.correlation_id
        if not call.timeout_s > 0:
            return CompletionFailed(
                correlation_id=cid, reason=f"timeout_s must be positive, got {call.timeout_s!r}"
            )
        start = self._clock()
        deadline = start + call.timeout_s
        offline = self._offline
        reserve = (
            min(OFFLINE_RESERVE_S, call.timeout_s * OFFLINE_RESERVE_SHARE)
            if offline and self._network
            else 0.0
        )
        network_deadline = deadline - reserve
        failures: list[AttemptFailure] = []
        failed_here: set[str] = set()
        last: _Provider | None = None
        attempts = 0
        while (
            network and attempts < self._settings.max_attempts and self._clock() < network_deadline
        ):
            if failures and failures[-1].outcome is Outcome.REQUEST_ERROR:
                break  # the request itself is at fault: do not spend other providers on it
            pick = self._pick(failed_here, cid)
            if pick is None:
                ready_at = self._next_ready_at()
                if ready_at is not None and ready_at < network_deadline:
                    await trio.sleep_until(ready_at)
                    continue
                break
            provider, slot, ticket = pick
            self._note_failover(last, provider, failures, cid)
            attempts += 1
            outcome = await self._attempt(provider, slot, ticket, call, until=network_deadline)
            if isinstance(outcome, ProviderReply):
                return self._completion(call, provider, slot, outcome, start, attempts)
            failures.append(outcome)
            last = provider
            if outcome.outcome is Outcome.TRANSIENT:
                failed_here.add(provider.name)
        if offline is not None and self._clock() < deadline:
            self._note_failover(last, offline, failures, cid)
            slot = offline.ring.take() or offline.ring.slots[0]
            attempts += 1
            outcome = await self._attempt(offline, slot, None, call, until=deadline)
            if isinstance(outcome, ProviderReply):
                return self._completion(call, offline, slot, outcome, start, attempts)
            failures.append(outcome)
        return CompletionFailed(
            correlation_id=cid,
            reason=self._failure_reason(failures, call, network=network),
            failures=tuple(failures),
        )

    def _pick(self, failed_here: set[str], cid: str) -> tuple[_Provider, KeySlot, Ticket] | None:
        """The first provider (untried ones before those that failed this turn) with a key and an admitting breaker."""
        network = [p for p in self._network if not self._spent(p)]
        fresh = [p for p in network if p.name not in failed_here]
        tried = [p for p in network if p.name in failed_here]
        for provider in (*fresh, *tried):
            if not provider.ring.has_usable():
                continue
            ticket = provider.breaker.acquire(correlation_id=cid)
            if ticket is None:
                continue
            slot = provider.ring.take()
            assert slot is not None  # has_usable() just said so, with no checkpoint since
            return provider, slot, ticket
        # Every provider that has a usable key is open: let one request through to the
        # least recently opened rather than failing everything.
        candidates = [p for p in network if p.ring.has_usable()]
        if candidates and all(p.breaker.state is BreakerState.OPEN for p in candidates):
            provider = min(candidates, key=lambda p: p.breaker.opened_at or 0.0)
            ticket = provider.breaker.force_probe(correlation_id=cid)
            if ticket is not None:
                slot = provider.ring.take()
                assert slot is not None  # a candidate has a usable key
                return provider, slot, ticket
        return None

    def _next_ready_at(self) -> float | None:
        """When a cooling key of a provider whose breaker admits becomes usable again."""
        times = [
            t
            for p in self._network
            if not self._spent(p)
            and p.breaker.would_admit()
            and (t := p.ring.next_ready_at()) is not None
        ]
        return min(times) if times else None

    async def _attempt(
        self,
        provider: _Provider,
        slot: KeySlot,
        ticket: Ticket | None,
        turn: ProviderCall,
        *,
        until: float,
    ) -> ProviderReply | AttemptFailure:
        """One call with one key, its result applied to the key, the breaker and the counters."""
        cid = turn.correlation_id
        started = self._clock()
        budget = max(0.0, min(provider.settings.timeout_s, until - started))
        settled = False
        try:
            answer = await self._call(provider, slot.key, attrs.evolve(turn, timeout_s=budget))
            elapsed = self._clock() - started
            settled = True
            if isinstance(answer, ProviderReply):
                if ticket is not None:
                    provider.breaker.succeeded(ticket, correlation_id=cid)
                provider.ring.succeeded(slot)
                provider.counters.record(Outcome.OK, elapsed)
                self._count_tokens(provider, answer, cid)
                return answer
            if answer is None:
                error = ProviderError(Outcome.TRANSIENT, f"no answer within {budget:.3g} s")
                # Cut short by the turn's deadline, not by the provider's own timeout.
                cut_short = budget < provider.settings.timeout_s
            else:
                error, cut_short = answer, False
            return self._failed(provider, slot, ticket, error, cut_short, cid, elapsed)
        finally:
            if not settled and ticket is not None:
                provider.breaker.released(ticket)

    async def _call(
        self, provider: _Provider, key: ApiKey, call: ProviderCall
    ) -> ProviderReply | ProviderError | None:
        """The adapter's reply or its classified error; ``None`` when ``call.timeout_s`` ran out."""
        with trio.move_on_after(call.timeout_s):
            try:
                return await provider.adapter.complete(call, key)
            except ProviderError as exc:
                return exc
            except Exception as exc:  # an adapter bug or an unclassified error: the provider's
                return ProviderError(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}")
        return None

    def _failed(
        self,
        provider: _Provider,
        slot: KeySlot,
        ticket: Ticket | None,
        error: ProviderError,
        cut_short: bool,
        cid: str,
        elapsed: float,
    ) -> AttemptFailure:
        """Apply a failed attempt to the breaker (unless cut short), the key and the counters."""
        outcome = error.outcome if error.outcome is not Outcome.OK else Outcome.TRANSIENT
        if ticket is not None:
            if outcome is Outcome.TRANSIENT and not cut_short:
                provider.breaker.failed(ticket, correlation_id=cid, reason=error.detail)
            else:
                provider.breaker.released(ticket)
        if outcome is Outcome.THROTTLED:
            provider.ring.cool(slot, error.retry_after_s, correlation_id=cid)
        elif outcome is Outcome.DEAD_KEY:
            provider.ring.disable(slot, error.detail, correlation_id=cid)
            if self._credits is not None:
                self._credits.poll_soon(provider.name)
        else:
            provider.ring.failed(slot, error.detail)
        counters = provider.counters
        counters.record(outcome, elapsed)
        counters.last_error = f"{outcome.value}: {error.detail}"
        counters.last_error_at = utcnow()
        log.info(
            "provider.attempt_failed",
            correlation_id=cid,
            provider=provider.name,
            key=slot.key.alias,
            outcome=outcome.value,
            detail=error.detail,
            retry_after_s=error.retry_after_s,
            latency_s=round(elapsed, 4),
        )
        return AttemptFailure(
            provider=provider.name,
            key_alias=slot.key.alias,
            outcome=outcome,
            detail=error.detail,
        )

    def _note_failover(
        self, last: _Provider | None, nxt: _Provider, failures: list[AttemptFailure], cid: str
    ) -> None:
        if last is None or last is nxt or not failures:
            return
        last.counters.failovers += 1
        log.info(
            "provider.failover",
            correlation_id=cid,
            from_provider=last.name,
            to_provider=nxt.name,
            reason=failures[-1].outcome.value,
            detail=failures[-1].detail,
        )

    def _completion(
        self,
        call: ProviderCall,
        provider: _Provider,
        slot: KeySlot,
        reply: ProviderReply,
        start: float,
        attempts: int,
    ) -> Completion:
        return Completion.answered(
            reply,
            correlation_id=call.correlation_id,
            provider=provider.name,
            key_alias=slot.key.alias,
            latency_s=self._clock() - start,
            attempts=attempts,
        )

    def _failure_reason(
        self, failures: list[AttemptFailure], call: ProviderCall, *, network: bool
    ) -> str:
        if not failures and not network:
            return "only the offline provider may answer this request, and none is configured"
        if not failures:
            return "no provider is available (breakers open, keys disabled, cooling or over budget)"
        if failures[-1].outcome is Outcome.REQUEST_ERROR:
            return f"the request was refused by {failures[-1].provider}: {failures[-1].detail}"
        tried = ", ".join(f"{f.provider}/{f.key_alias} {f.outcome.value}" for f in failures)
        return f"no provider answered within {call.timeout_s:g} s ({tried})"

    # -- observing --------------------------------------------------------------------------
    def statistics(self) -> PoolStatistics:
        providers = [*self._network, *([self._offline] if self._offline else [])]
        credits = self._credits
        return PoolStatistics(
            providers=tuple(
                ProviderStatistics.of(
                    name=p.name,
                    kind=p.adapter.kind,
                    model=p.adapter.model,
                    breaker=p.breaker.snapshot(),
                    keys=tuple(
                        KeyStatistics.of(k, credits.reading(p.name, k.alias) if credits else None)
                        for k in p.ring.snapshot()
                    ),
                    counters=p.counters,
                    tokens_today=self._tokens.used(p.name),
                    daily_tokens=p.settings.daily_tokens,
                )
                for p in providers
            ),
            turns_completed=self._turns_completed,
            turns_failed=self._turns_failed,
            turns_in_flight=self._in_flight,
        )

    def health_checks(self) -> Iterable[Check]:
        return pool_health_checks(self.statistics())

    def metrics(self) -> Iterable[Metric]:
        return pool_metrics(self.statistics())

    def set_key_enabled(
        self, provider: str, alias: str, *, enabled: bool, by: str, reason: str = ""
    ) -> KeyStatistics:
        """Take a key out of rotation or bring it back, now (an operator's decision).

        It lasts until changed again or the process restarts. Raises ``KeyError`` for an
        unknown provider or alias.
        """
        found = self._keyed.get(provider)
        if found is None:
            raise KeyError(f"no provider named {provider!r} with API keys")
        slot = found.ring.set_by_operator(alias, enabled=enabled, by=by, reason=reason)
        (snapshot,) = (k for k in found.ring.snapshot() if k.alias == slot.key.alias)
        credits = self._credits
        return KeyStatistics.of(snapshot, credits.reading(provider, alias) if credits else None)
