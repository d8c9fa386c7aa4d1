"""Reading one of the community's TOML files, with every failure naming the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from concierge.domain.errors import ConfigError


def read_toml(
    path: Path, error: type[ConfigError], *, what: str, missing: str | None = None
) -> dict[str, Any]:
    """The parsed file; ``error`` says "{path}: cannot read {what}: …", or ``missing`` if absent."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        if missing is not None and isinstance(exc, FileNotFoundError):
            raise error(f"{path}: {missing}") from None
        raise error(f"{path}: cannot read {what}: {exc}") from None
