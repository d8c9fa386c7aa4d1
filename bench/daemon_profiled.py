"""``concierge run`` under pyinstrument, sampling only between two signals.

``bench_turns.py --profile`` sends SIGUSR1 when the load starts and SIGUSR2 once every
update is answered, so start-up (imports, migrations) stays out of the profile. On
SIGUSR2 it writes ``PREFIX.txt`` (the call tree and the functions by own time) and
``PREFIX.pstats``, then renames a marker into place so the caller knows it is done.
Only the event-loop thread is sampled (SQLite's worker thread is not); idle time shows
as trio's ``get_events``.

    python bench/daemon_profiled.py PREFIX run
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer, PstatsRenderer

from concierge.app.cli import main

profiler = Profiler(interval=0.001, async_mode="disabled")


def start(signum: int, frame: FrameType | None) -> None:
    if not profiler.is_running:
        profiler.start()


def stop_and_write(prefix: Path) -> None:
    if not profiler.is_running:
        return
    session = profiler.stop()
    tree_text = ConsoleRenderer(time="percent_of_total", short_mode=False).render(session)
    flat_text = ConsoleRenderer(flat=True, time="percent_of_total").render(session)
    prefix.with_suffix(".txt").write_text(
        "== functions by own time (event-loop thread)\n"
        + flat_text
        + "\n== call tree (event-loop thread)\n"
        + tree_text
    )
    pstats = PstatsRenderer().render(session)  # marshal bytes carried in a str
    prefix.with_suffix(".pstats").write_bytes(pstats.encode("utf-8", errors="surrogateescape"))
    prefix.with_suffix(".done").write_text("ok\n")


if __name__ == "__main__":
    out = Path(sys.argv[1]).resolve()
    args = sys.argv[2:]
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, lambda signum, frame: stop_and_write(out))
    sys.exit(main(args))
