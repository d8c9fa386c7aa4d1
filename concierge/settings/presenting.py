"""Presenting the settings: masked values for ``concierge check`` and the example ``.env``."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from concierge.settings.models import Settings
from concierge.settings.options import OPTIONS
from concierge.settings.parsers import parse_api_keys


def mask(value: str | None, *, secret: bool) -> str:
    """Show enough of a secret to recognise it, never enough to use it."""
    if value is None:
        return "(unset)"
    if not secret:
        return value
    if "://" in value:
        parts = urlsplit(value)
        if parts.password:
            return value.replace(f":{parts.password}@", ":***@")
        return value
    return "***" if len(value) < 12 else f"{value[:3]}***{value[-2:]}"


def describe(settings: Settings) -> Iterable[str]:
    """``NAME=value`` lines with secrets masked, for ``concierge check``."""
    for name, value, secret in sorted(settings.effective):
        if secret and name.endswith("_API_KEYS") and value:
            shown = ",".join(k.alias for k in parse_api_keys(value)) + " (secrets hidden)"
        else:
            shown = mask(value, secret=secret)
        yield f"{name}={shown}"


def env_example() -> str:
    """The text of ``config/concierge.env.example``, generated from ``OPTIONS``."""
    lines = [
        "# concierge settings: every option with its default.",
        "# Copy to .env (or set in the environment); real environment variables win.",
        "# Generated from concierge/settings/options.py: `concierge check --example` prints it.",
        "",
    ]
    group = None
    for option in OPTIONS.values():
        if option.group != group:
            group = option.group
            lines += [f"# --- {group} ---"]
        lines.append(f"# {option.doc}")
        lines.append(
            f"{'' if option.default is not None else '# '}{option.name}={option.default or ''}"
        )
    lines += [
        "",
        "# --- per provider: <NAME>_KIND, <NAME>_API_KEYS, <NAME>_MODEL, <NAME>_BASE_URL, <NAME>_TIMEOUT_S, <NAME>_DAILY_TOKENS ---",
        "# Names with defaults: anthropic, gemini, openrouter (kind openai), glm (kind openai), offline.",
        "# Any other name needs <NAME>_KIND (anthropic, gemini, openai or offline).",
        "# Keys: comma-separated, optionally alias=key so logs show the alias.",
        "# ANTHROPIC_API_KEYS=main=sk-ant-...,backup=sk-ant-...",
        "# ANTHROPIC_MODEL=claude-sonnet-4-5",
        "# GEMINI_API_KEYS=AIza...",
        "# GEMINI_MODEL=gemini-2.5-flash",
        "# OPENROUTER_API_KEYS=sk-or-v1-...",
        "# OPENROUTER_MODEL=openrouter/auto",
        "# OPENROUTER_APP_URL=https://example.org   (HTTP-Referer attribution, optional)",
        "# OPENROUTER_APP_TITLE=Paroisse            (X-Title attribution, optional)",
        "# GLM_API_KEYS=...",
        "# GLM_BASE_URL=https://api.z.ai/api/paas/v4",
        "# <NAME>_TIMEOUT_S defaults to CONCIERGE_ATTEMPT_TIMEOUT_S",
        "# <NAME>_DAILY_TOKENS defaults to CONCIERGE_PROVIDER_DAILY_TOKENS (0: no budget)",
        "",
    ]
    return "\n".join(lines)
