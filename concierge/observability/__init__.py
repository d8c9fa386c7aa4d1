"""What operators see: health checks, the ``/health`` board, and the JSON logs."""

from __future__ import annotations

from .checks import (
    Check as Check,
    LatencyHistogram as LatencyHistogram,
    Status as Status,
)
from .health import HealthBoard as HealthBoard
from .logs import configure_logging as configure_logging
