"""The community's own configuration: languages, knowledge base, triage rules, prompts, synonyms,
the emergency numbers.

The daemon, ``concierge chat`` and ``concierge check`` load the same files the same
way, so a mistake in them is found by ``check`` before a deploy rather than by the
daemon at start. Each loader raises ``ConfigError`` naming the file. The defaults
ship inside the package; ``concierge init DIR`` writes an editable copy of them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from concierge.app.errors import CommandError
from concierge.domain import (
    PromptBook,
    load_community,
    load_knowledge,
    load_languages,
    load_triage,
)
from concierge.settings import DEFAULT_CONFIG_DIR


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
    yield f"distress: {languages.distress().rules} phrases"
    community = load_community(config_dir / "community.toml", languages)
    yield (
        f"community: {len(community.emergency)} emergency numbers, "
        f"priest on call {community.priest_on_call}"
    )
    PromptBook.load(config_dir / "prompts", languages)
    yield "prompts: every service type in every language"


def write_editable_copy(target: Path) -> list[Path]:
    """Copy the packaged defaults into ``target`` (new or empty); return the files written.

    Raises ``CommandError`` rather than overwrite anything: a community's edits are
    theirs.
    """
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CommandError(f"{target} already exists and is not an empty directory")
    shutil.copytree(
        DEFAULT_CONFIG_DIR,
        target,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return sorted(p for p in target.rglob("*") if p.is_file())
