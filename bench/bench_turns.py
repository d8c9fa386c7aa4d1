"""End to end: turns per second of the daemon and of two FastAPI peers, side by side.

Every external call goes over real loopback HTTP, to fakes served by this process:

* a provider (``tests/fakes/openai_api.py``, OpenAI-compatible) answering after
  ``--provider-latency`` seconds with a reply that quotes the reference of the
  message it answers (``ref-000123``), so each reply is matched to its update;
* a Telegram Bot API (``tests/fakes/telegram_api.py``) answering every method after
  ``--telegram-latency`` seconds and counting ``sendMessage`` and ``sendChatAction``;
* webhooks delivered the way Telegram does (``turn_delivery.py``): up to 40
  connections, each update POSTed with the secret token header, a user's updates one
  at a time and in order.

The systems run one after the other, each as its own process, on the same fakes:

* ``daemon``: ``concierge run`` from the installed entry point, in webhook mode,
  configured by environment variables (SQLite in a fresh directory, or a fresh
  PostgreSQL database migrated with ``concierge migrate``);
* ``sync``: ``peers/fastapi_peer.py`` (``PEER_MODE=sync``), a FastAPI bot answering
  inside the webhook handler;
* ``background``: the same bot (``PEER_MODE=background``) answering in a
  ``BackgroundTask`` after it acknowledged.

Per system it prints turns/s (first update POSTed to last reply accepted), the server
process's CPU (user + system, from ``/proc``) per turn, the webhook ack p50/p99,
``sendChatAction`` calls per turn, duplicate and missing replies, then each daemon's
ratios to each peer. Asserts nothing: the test in ``tests/bench/`` checks correctness.

    python bench/bench_turns.py                                 # 2,000 updates, 500 users, 2 s
    python bench/bench_turns.py --telegram-latency 0.1 --backend both --pacing lifted
    python bench/bench_turns.py --quick --json                  # a small smoke run
    python bench/bench_turns.py --systems daemon --profile prof.txt
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from turn_delivery import Delivery, deliver  # this folder: run as a script

from concierge.store.postgres import execute_admin
from tests.fakes.llm_common import Received, Scripted
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram

BENCH = Path(__file__).resolve().parent
ADMIN_DSN = os.environ.get(
    "CONCIERGE_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench_turns_" + "s" * 32
API_KEY = "sk-bench-1"
MARKER = re.compile(r"ref-\d{6}")
FIRST_USER = 810_000_000
SYSTEMS = ("daemon", "sync", "background")
PEER_SCRIPT = BENCH / "peers" / "fastapi_peer.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class EchoProvider(FakeOpenAI):
    """Answers each chat completion quoting the reference in the latest user message."""

    def success_body(self, reply: Scripted, request: Received) -> Any:
        messages = (request.json or {}).get("messages", [])
        latest = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        found = MARKER.findall(str(latest))
        text = f"Bien reçu {found[-1] if found else 'ref-none'}. La messe est à 10 h."
        return super().success_body(attrs.evolve(reply, text=text), request)


@attrs.frozen(kw_only=True)
class Options:
    updates: int
    users: int
    provider_latency_s: float
    telegram_latency_s: float
    pacing: str  # "default" or "lifted"
    backends: tuple[str, ...]
    systems: tuple[str, ...]
    connections: int
    profile: Path | None
    stall_s: float


@attrs.frozen(kw_only=True)
class System:
    kind: str  # "daemon", "sync", "background"
    backend: str | None = None

    @property
    def name(self) -> str:
        return f"daemon ({self.backend})" if self.kind == "daemon" else f"{self.kind} peer"


@attrs.frozen(kw_only=True)
class Outcome:
    system: str
    turns: int
    seconds: float
    cpu_s: float
    ack_p50_ms: float
    ack_p99_ms: float
    ack_max_ms: float
    send_message_calls: int
    typing_calls: int
    replies_matched: int
    duplicates: int
    missing: int
    unmatched_replies: int
    webhook_retries: int
    exit_code: int | None

    @property
    def turns_per_s(self) -> float:
        return self.replies_matched / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_turn(self) -> float:
        return 1000 * self.cpu_s / self.turns if self.turns else 0.0

    @property
    def typing_per_turn(self) -> float:
        return self.typing_calls / self.turns if self.turns else 0.0

    def as_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data.update(
            turns_per_s=round(self.turns_per_s, 2),
            cpu_ms_per_turn=round(self.cpu_ms_per_turn, 2),
            typing_per_turn=round(self.typing_per_turn, 3),
        )
        return data


# -- the load --------------------------------------------------------------------------------
def make_updates(telegram: FakeTelegram, count: int, users: int) -> list[dict[str, Any]]:
    """``count`` text messages spread over ``users`` chats, round after round."""
    return [
        telegram.text_message(
            user_id=FIRST_USER + index % users,
            text=f"Bonjour, à quelle heure est la messe dimanche ? ref-{index:06d}",
        )
        for index in range(count)
    ]


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[rank]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONCIERGE_", "TELEGRAM_", "WAHA_", "DATABASE_URL", "REDIS_URL"))
    }


def daemon_launcher(options: Options, work: Path) -> list[str]:
    """The command before ``run``: under the profiler or not."""
    if options.profile is not None:
        return [sys.executable, str(BENCH / "daemon_profiled.py"), str(work / "profile")]
    return concierge_command()


def concierge_command() -> list[str]:
    """The installed entry point, as an operator runs it."""
    entry = Path(sys.executable).parent / "concierge"
    return [str(entry)] if entry.exists() else [sys.executable, "-m", "concierge"]


# -- starting a system -----------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class Started:
    process: subprocess.Popen[bytes]
    port: int
    path: str
    ready_path: str


def daemon_env(
    options: Options, work: Path, port: int, telegram: FakeTelegram, llm: EchoProvider
) -> dict[str, str]:
    per_user = math.ceil(options.updates / options.users)
    env = _base_env()
    env.update(
        CONCIERGE_DATA_DIR=str(work / "var"),
        CONCIERGE_HTTP_HOST="127.0.0.1",
        CONCIERGE_HTTP_PORT=str(port),
        CONCIERGE_LOG_FORMAT="json",
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_MODE="webhook",
        TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/telegram",
        TELEGRAM_WEBHOOK_SECRET=SECRET,
        TELEGRAM_API_BASE_URL=telegram.url,
        TELEGRAM_MAX_CONNECTIONS=str(options.connections),
        CONCIERGE_PROVIDERS="bench",
        BENCH_KIND="openai",
        BENCH_BASE_URL=f"{llm.url}/v1",
        BENCH_API_KEYS=f"k1={API_KEY}",
        BENCH_MODEL="bench-1",
        # Every update must reach the model, as it does in the peers: no user may hit the
        # per-user limits or the "one moment" reply with the load's messages per user.
        CONCIERGE_USER_RATE_PER_MIN=str(max(6, per_user * 2)),
        CONCIERGE_USER_BURST=str(max(5, per_user + 1)),
        CONCIERGE_CONVERSATION_QUEUE=str(min(64, max(4, per_user + 1))),
    )
    if options.pacing == "lifted":
        # Telegram's figure for bots with paid broadcasts, and no per-chat interval.
        env.update(TELEGRAM_SEND_RATE_PER_S="1000", TELEGRAM_CHAT_INTERVAL_S="0")
    return env


async def start_daemon(
    options: Options,
    work: Path,
    backend: str,
    telegram: FakeTelegram,
    llm: EchoProvider,
    log: Any,
) -> Started:
    port = free_port()
    env = daemon_env(options, work, port, telegram, llm)
    if backend == "postgres":
        name = work.name.replace("-", "_").lower()
        base, _, _ = ADMIN_DSN.rpartition("/")
        env["DATABASE_URL"] = f"{base}/{name}"
        done = await trio.run_process(
            [*concierge_command(), "migrate"],
            env=env,
            cwd=work,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"concierge migrate failed: {done.stderr.decode()[-2000:]}")
    launcher = daemon_launcher(options, work)
    process = subprocess.Popen(  # noqa: ASYNC220 (started, never waited on here)
        [*launcher, "run"], env=env, cwd=work, stdout=log, stderr=log
    )
    return Started(process=process, port=port, path="/webhooks/telegram", ready_path="/readyz")


def start_peer(
    kind: str, work: Path, telegram: FakeTelegram, llm: EchoProvider, log: Any
) -> Started:
    port = free_port()
    env = _base_env()
    env.update(
        PORT=str(port),
        BOT_TOKEN=telegram.token,
        WEBHOOK_SECRET=SECRET,
        TELEGRAM_API_BASE_URL=telegram.url,
        LLM_BASE_URL=f"{llm.url}/v1",
        LLM_API_KEY=API_KEY,
        LLM_MODEL="bench-1",
        PEER_MODE=kind,  # sync or background
    )
    process = subprocess.Popen(
        [sys.executable, str(PEER_SCRIPT)], env=env, cwd=work, stdout=log, stderr=log
    )
    return Started(process=process, port=port, path="/webhook", ready_path="/healthz")


async def wait_ready(started: Started, telegram: FakeTelegram, *, daemon: bool) -> None:
    url = f"http://127.0.0.1:{started.port}{started.ready_path}"
    async with httpx.AsyncClient(timeout=2.0) as client:
        with trio.fail_after(60):
            while True:
                if started.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {started.process.returncode}")
                try:
                    if (await client.get(url)).status_code == 200 and (
                        not daemon or telegram.webhook is not None
                    ):
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)


async def stop(process: subprocess.Popen[bytes]) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    with trio.move_on_after(60):
        while process.poll() is None:
            await trio.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()
    return process.returncode


@asynccontextmanager
async def postgres_database(work: Path) -> AsyncIterator[None]:
    name = work.name.replace("-", "_").lower()
    await execute_admin(ADMIN_DSN, f'CREATE DATABASE "{name}"')
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            try:
                await execute_admin(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:
                print(f"could not drop the bench database {name}: {exc!r}", file=sys.stderr)


# -- one run -----------------------------------------------------------------------------------
def tally(telegram: FakeTelegram, updates: int) -> tuple[int, int, int, int]:
    """(matched, duplicates, missing, unmatched) over the replies Telegram accepted."""
    seen: Counter[str] = Counter()
    unmatched = 0
    for message in telegram.sent:
        found = MARKER.findall(message.text)
        if not found:
            unmatched += 1
        seen.update(found)
    expected = {f"ref-{i:06d}" for i in range(updates)}
    matched = sum(1 for ref in expected if seen[ref] > 0)
    duplicates = sum(count - 1 for ref, count in seen.items() if ref in expected and count > 1)
    unmatched += sum(count for ref, count in seen.items() if ref not in expected)
    return matched, duplicates, len(expected) - matched, unmatched


async def run_system(system: System, options: Options, out: Path) -> Outcome:
    telegram = FakeTelegram()
    telegram.latency_s = options.telegram_latency_s
    work = Path(tempfile.mkdtemp(prefix=f"bench_turns_{system.kind}_", dir=out))
    log_path = work / "server.log"
    async with telegram.serve(), EchoProvider.serve() as llm:
        llm.default = Scripted(delay_s=options.provider_latency_s)
        updates = make_updates(telegram, options.updates, options.users)
        with log_path.open("wb") as log:
            async with _database(system, work):
                if system.kind == "daemon":
                    assert system.backend is not None
                    started = await start_daemon(options, work, system.backend, telegram, llm, log)
                else:
                    started = start_peer(system.kind, work, telegram, llm, log)
                exit_code: int | None = None
                try:
                    await wait_ready(started, telegram, daemon=system.kind == "daemon")
                    profiling = options.profile is not None and system.kind == "daemon"
                    calls_before = len(telegram.calls)
                    threads_before = thread_cpu(started.process.pid)
                    if profiling:
                        started.process.send_signal(signal.SIGUSR1)
                    cpu_before = cpu_seconds(started.process.pid)
                    delivery, finished_at = await drive(started, updates, telegram, options)
                    cpu_after = cpu_seconds(started.process.pid)
                    if profiling:
                        assert options.profile is not None
                        await collect_profile(
                            started.process,
                            work,
                            options.profile,
                            system,
                            threads_before,
                            options.updates,
                        )
                    # Anything sent late (a duplicate) still counts: a short quiet spell.
                    await settle(telegram)
                finally:
                    exit_code = await stop(started.process)
    matched, duplicates, missing, unmatched = tally(telegram, options.updates)
    new_calls = telegram.calls[calls_before:]
    typing = sum(1 for c in new_calls if c.method == "sendChatAction")
    sends = sum(1 for c in new_calls if c.method == "sendMessage")
    start = delivery.first_sent_at or finished_at
    acks = delivery.acks_s
    if missing == 0 and exit_code in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"{system.name}: kept {work} (server log there)", file=sys.stderr)
    return Outcome(
        system=system.name,
        turns=options.updates,
        seconds=finished_at - start,
        cpu_s=cpu_after - cpu_before,
        ack_p50_ms=1000 * percentile(acks, 0.50),
        ack_p99_ms=1000 * percentile(acks, 0.99),
        ack_max_ms=1000 * max(acks, default=math.nan),
        send_message_calls=sends,
        typing_calls=typing,
        replies_matched=matched,
        duplicates=duplicates,
        missing=missing,
        unmatched_replies=unmatched,
        webhook_retries=delivery.retries,
        exit_code=exit_code,
    )


@asynccontextmanager
async def _database(system: System, work: Path) -> AsyncIterator[None]:
    if system.backend == "postgres":
        async with postgres_database(work):
            yield
    else:
        yield


async def drive(
    started: Started, updates: list[dict[str, Any]], telegram: FakeTelegram, options: Options
) -> tuple[Delivery, float]:
    """Deliver every update; return once every one is answered, or nothing moved for a while."""
    expected = {f"ref-{i:06d}" for i in range(options.updates)}
    answered: set[str] = set()
    last_reply_at = trio.current_time()
    delivery = Delivery()

    async def push() -> None:
        await deliver(
            updates,
            host="127.0.0.1",
            port=started.port,
            path=started.path,
            secret=SECRET,
            connections=options.connections,
            result=delivery,
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(push)
        seen = 0
        quiet_since = trio.current_time()
        while True:
            await trio.sleep(0.05)
            sent = telegram.sent
            for message in sent[seen:]:
                for ref in MARKER.findall(message.text):
                    if ref in expected and ref not in answered:
                        answered.add(ref)
                        last_reply_at = message.at
            if len(sent) > seen:
                quiet_since = trio.current_time()
            seen = len(sent)
            if len(answered) == len(expected):
                break
            if started.process.poll() is not None:
                print(f"the server exited with {started.process.returncode}", file=sys.stderr)
                break
            if trio.current_time() - quiet_since > options.stall_s:
                print(
                    f"no reply for {options.stall_s:g} s: {len(expected) - len(answered)} "
                    "updates unanswered",
                    file=sys.stderr,
                )
                break
        nursery.cancel_scope.cancel()
    return delivery, last_reply_at


async def settle(telegram: FakeTelegram, quiet_s: float = 1.0) -> None:
    count = -1
    while count != len(telegram.sent):
        count = len(telegram.sent)
        await trio.sleep(quiet_s)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of a live process, by thread name and id."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{name} ({task.name})"] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


async def collect_profile(
    process: subprocess.Popen[bytes],
    work: Path,
    target: Path,
    system: System,
    threads_before: dict[str, float],
    turns: int,
) -> None:
    """Stop the profiler in the daemon and append what it wrote to ``target``."""
    threads_after = thread_cpu(process.pid)
    process.send_signal(signal.SIGUSR2)
    done = work / "profile.done"
    with trio.move_on_after(120):
        while not done.exists():
            await trio.sleep(0.1)
    lines = [f"######## {system.name}: CPU ms per turn by thread over the load"]
    for name, seconds in sorted(threads_after.items(), key=lambda kv: -kv[1]):
        spent = seconds - threads_before.get(name, 0.0)
        if spent > 0:
            lines.append(f"  {1000 * spent / turns:8.2f}  {name}")
    if done.exists():
        lines.append((work / "profile.txt").read_text())
        shutil.copy(work / "profile.pstats", target.with_suffix(f".{system.backend}.pstats"))
    else:
        lines.append("(the daemon wrote no profile)")
    with target.open("a") as out:
        out.write("\n".join(lines) + "\n")
    print(f"profile of {system.name}: {target}", file=sys.stderr)


# -- the report --------------------------------------------------------------------------------
COLUMNS = (
    ("system", "{:<18}"),
    ("turns/s", "{:>8.1f}"),
    ("CPU ms/turn", "{:>11.2f}"),
    ("ack p50 ms", "{:>10.1f}"),
    ("ack p99 ms", "{:>10.1f}"),
    ("typing/turn", "{:>11.2f}"),
    ("duplicates", "{:>10d}"),
    ("missing", "{:>7d}"),
)


def table(outcomes: Sequence[Outcome]) -> str:
    head = "  ".join(
        f"{name:<18}"
        if i == 0
        else f"{name:>{len(fmt.format(0) if 'd' in fmt else fmt.format(0.0))}}"
        for i, (name, fmt) in enumerate(COLUMNS)
    )
    lines = [head]
    for o in outcomes:
        values = (
            o.system,
            o.turns_per_s,
            o.cpu_ms_per_turn,
            o.ack_p50_ms,
            o.ack_p99_ms,
            o.typing_per_turn,
            o.duplicates,
            o.missing,
        )
        lines.append("  ".join(fmt.format(v) for (_, fmt), v in zip(COLUMNS, values, strict=True)))
    daemons = [o for o in outcomes if o.system.startswith("daemon")]
    peers = [o for o in outcomes if not o.system.startswith("daemon")]
    if daemons and peers:
        lines.append("")
        lines.append("ratios (daemon / peer): turns/s, CPU per turn, ack p99")
        for d in daemons:
            for p in peers:
                lines.append(
                    f"  {d.system} / {p.system}: {ratio(d.turns_per_s, p.turns_per_s)} turns/s, "
                    f"{ratio(d.cpu_ms_per_turn, p.cpu_ms_per_turn)} CPU/turn, "
                    f"{ratio(d.ack_p99_ms, p.ack_p99_ms)} ack p99"
                )
    return "\n".join(lines)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 and not math.isnan(a) and not math.isnan(b) else "n/a"


def ratios_json(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    out = []
    for d in (o for o in outcomes if o.system.startswith("daemon")):
        for p in (o for o in outcomes if not o.system.startswith("daemon")):
            out.append(
                {
                    "daemon": d.system,
                    "peer": p.system,
                    "turns_per_s": d.turns_per_s / p.turns_per_s if p.turns_per_s else None,
                    "cpu_ms_per_turn": (
                        d.cpu_ms_per_turn / p.cpu_ms_per_turn if p.cpu_ms_per_turn else None
                    ),
                }
            )
    return out


# -- command line ----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--updates", type=int, default=2000, help="updates to deliver (2,000)")
    parser.add_argument("--users", type=int, default=500, help="distinct chats (500)")
    parser.add_argument("--provider-latency", type=float, default=2.0, help="seconds (2)")
    parser.add_argument("--telegram-latency", type=float, default=0.0, help="seconds (0)")
    parser.add_argument(
        "--pacing",
        choices=("default", "lifted"),
        default="default",
        help="the daemon's Telegram pacing as shipped, or lifted (TELEGRAM_SEND_RATE_PER_S=1000, "
        "TELEGRAM_CHAT_INTERVAL_S=0)",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated, among daemon,sync,background (all three)",
    )
    parser.add_argument("--connections", type=int, default=40, help="webhook connections (40)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the daemon under pyinstrument and write its top functions to this file",
    )
    parser.add_argument(
        "--stall", type=float, default=60.0, help="give up after this long without a reply (60 s)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 40 updates, 10 users, 0.05 s provider"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="print JSON instead of the table, or with a PATH write it there too",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.updates, args.users, args.provider_latency = 40, 10, 0.05
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        parser.error(f"--systems: unknown {unknown}; choose among {','.join(SYSTEMS)}")
    if args.updates < 1 or args.users < 1 or args.users > args.updates:
        parser.error("--updates and --users must be positive, with at most one user per update")
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    options = Options(
        updates=args.updates,
        users=args.users,
        provider_latency_s=args.provider_latency,
        telegram_latency_s=args.telegram_latency,
        pacing=args.pacing,
        backends=backends,
        systems=systems,
        connections=args.connections,
        profile=args.profile.resolve() if args.profile else None,
        stall_s=args.stall,
    )
    return options, args.json


def systems_of(options: Options) -> list[System]:
    systems: list[System] = []
    for kind in options.systems:
        if kind == "daemon":
            systems.extend(System(kind="daemon", backend=b) for b in options.backends)
        else:
            systems.append(System(kind=kind))
    return systems


async def run_all(options: Options) -> list[Outcome]:
    if options.profile is not None:
        options.profile.write_text("")
    outcomes = []
    out = Path(tempfile.mkdtemp(prefix="bench_turns_"))
    for system in systems_of(options):
        print(f"running {system.name} ...", file=sys.stderr)
        outcomes.append(await run_system(system, options, out))
    if not any(out.iterdir()):  # noqa: ASYNC240 (between runs)
        out.rmdir()  # noqa: ASYNC240
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    options, json_to = parse_args(argv)
    started = time.monotonic()
    outcomes = trio.run(run_all, options)
    if json_to is not None:
        report = json.dumps(
            {
                "options": {
                    k: (str(v) if isinstance(v, Path) else v)
                    for k, v in attrs.asdict(options).items()
                },
                "cpus": os.cpu_count(),
                "systems": [o.as_json() for o in outcomes],
                "ratios": ratios_json(outcomes),
            },
            indent=2,
        )
        if json_to == "-":
            print(report)
        else:
            Path(json_to).write_text(report + "\n")
    if json_to != "-":
        print(
            f"{options.updates} updates from {options.users} users, provider "
            f"{options.provider_latency_s:g} s, Telegram {options.telegram_latency_s:g} s, "
            f"pacing {options.pacing}, {options.connections} webhook connections, "
            f"{os.cpu_count()} CPUs"
        )
        print(table(outcomes))
        print(f"(whole run {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
