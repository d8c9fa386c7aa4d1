"""``concierge run``: the daemon proper, from the tree's start to its exit code.

It runs the tree built by ``concierge.app.tree`` over a ``concierge.app.runtime``
until SIGTERM or SIGINT, then drains (``concierge.app.drain``: readiness fails at
once, the turns in flight and the outbox finish within ``CONCIERGE_DRAIN_TIMEOUT_S``,
then the tree stops with the listener; a second signal cuts it short).
Exit codes: 0 after a drain, 1 when the root supervisor gave up.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from typing import Any

import structlog
import trio

from concierge import __version__
from concierge.app.drain import drain
from concierge.app.gc_policy import tune_gc
from concierge.app.http import check_can_listen
from concierge.app.runtime import Runtime, enabled_channels, open_runtime
from concierge.app.single_process import data_dir_lock
from concierge.app.tree import build_messenger_tree
from concierge.observability import configure_logging
from concierge.settings import Settings, secrets_of
from supervisors import RestartIntensityExceeded, Supervisor

log = structlog.get_logger(__name__)


async def run_daemon(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT (exit 0 after a drain) or until the root gives up (exit 1)."""
    with ExitStack() as stack:
        if settings.store.database_url is None:  # SQLite: this process alone
            stack.enter_context(data_dir_lock(settings.store.data_dir))
        check_can_listen(settings.http)
        channels = enabled_channels(settings, console=False)
        async with open_runtime(settings, channels=channels, messengers=True) as rt:
            return await supervise_until_signalled(rt, build_messenger_tree(rt))


async def supervise_until_signalled(rt: Runtime, root: Supervisor) -> int:
    log.info(
        "daemon.starting",
        version=__version__,
        store=rt.store.backend,
        cache=rt.cache.backend,
        providers=[a.name for a in rt.adapters],
    )
    exit_code = 0
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, rt, root, nursery.cancel_scope)
            await root.run()
            nursery.cancel_scope.cancel()
    except* RestartIntensityExceeded as group:
        log.error("daemon.gave_up", caused_by=repr(group.exceptions[0]), exc_info=group)
        exit_code = 1
    log.info("daemon.stopped", exit_code=exit_code)
    return exit_code


async def _stop_on_signal(rt: Runtime, root: Supervisor, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info(
                "daemon.stopping",
                signal=signal.Signals(signum).name,
                drain_timeout_s=rt.settings.drain_timeout_s,
            )
            break
        async with trio.open_nursery() as nursery:

            async def drain_then_stop_listening() -> None:
                await drain(
                    timeout_s=rt.settings.drain_timeout_s,
                    notice_s=rt.settings.drain_notice_s,
                    set_draining=partial(setattr, rt.board, "draining", True),
                    gate=rt.gate,
                    release=rt.release,
                    outbox=rt.store,
                    channels=[sender.channel for sender in rt.parts.senders],
                    stop_tree=root.shutdown,
                    sending=rt.sending,
                    release_claims=rt.release_claims,
                )
                nursery.cancel_scope.cancel()

            nursery.start_soon(drain_then_stop_listening)
            async for signum in signals:
                log.warning("daemon.stopping_now", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
        scope.cancel()


def main(settings: Settings, *, run: Callable[[Settings], Any] = run_daemon) -> int:
    configure_logging(
        level=settings.log.level,
        fmt=settings.log.format,
        secrets=secrets_of(settings),
        cache_loggers=True,
    )
    tune_gc()
    code: int = trio.run(run, settings)
    return code
