"""Loading the community's own configuration: languages, knowledge base, triage rules, prompts.

The daemon, ``concierge chat`` and ``concierge check`` load the same files the same
way, so a mistake in them is found by ``check`` before a deploy rather than by the
daemon at start. Each loader raises ``ConfigError`` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from concierge.domain import PromptBook, load_knowledge, load_languages, load_triage


def check_configuration(config_dir: Path) -> Iterator[str]:
    """Load every configuration file under ``config_dir``; one line per part that loaded."""
    languages = load_languages(config_dir / "languages")
    named = ", ".join(
        f"{p.code}" + (f" (falls back to {p.fallback})" if p.fallback else "")
        for p in languages.packs
    )
    yield f"languages: {named}; default {languages.default}"
    knowledge = load_knowledge(config_dir, languages.analyzer())
    yield (
        f"knowledge: {len(knowledge.sections)} sections, {len(knowledge.passages)} passages "
        f"from {len(knowledge.sources)} files"
    )
    triage = load_triage(config_dir / "triage.toml", languages)
    patterns = sum(len(p) for p in triage.patterns.values())
    yield f"triage: {patterns} patterns"
    PromptBook.load(config_dir / "prompts", languages)
    yield "prompts: every service type in every language"
