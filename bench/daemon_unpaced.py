"""``concierge run`` with Telegram's send pacing lifted (``bench_turns.py --pacing lifted``).

The daemon paces Telegram to about one message per second per chat and 30 per second
overall, and has no setting to change that; this launcher swaps the pacing the
supervision tree picks for Telegram (no per-chat interval, 1,000 per second, Telegram's
figure for bots with paid broadcasts) and then runs the usual command line. Everything
else (concurrency, messages in doubt, retries) stays as shipped.
"""

from __future__ import annotations

import sys

import attrs

import concierge.app.tree as tree
from actors import Pacing, default_pacing
from concierge.app.cli import main
from concierge.protocol import Channel


def lifted_pacing(channel: Channel) -> Pacing:
    shipped = default_pacing(channel)
    if channel is not Channel.TELEGRAM:
        return shipped
    return attrs.evolve(
        shipped, per_chat_interval_s=0.0, global_rate_per_s=1000.0, global_burst=1000
    )


if __name__ == "__main__":
    tree.default_pacing = lifted_pacing  # type: ignore[attr-defined]
    sys.exit(main())
