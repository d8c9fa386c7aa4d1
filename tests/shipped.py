"""The shipped configuration (the package's defaults), loaded once per test run.

Languages, knowledge base, triage rules, distress rules, the community's numbers and prompts as the daemon loads them from
``CONCIERGE_CONFIG_DIR``; tests that compare a reply with a fixed text take the
text from here rather than repeating it.
"""

from __future__ import annotations

import functools
from typing import Any

from concierge.domain import (
    Community,
    DistressRules,
    KnowledgeBase,
    Languages,
    PromptBook,
    Reply,
    TriageRules,
    load_community,
    load_knowledge,
    load_languages,
    load_triage,
)
from concierge.settings import DEFAULT_CONFIG_DIR

CONFIG_DIR = DEFAULT_CONFIG_DIR


@functools.cache
def languages() -> Languages:
    return load_languages(CONFIG_DIR / "languages")


@functools.cache
def knowledge() -> KnowledgeBase:
    return load_knowledge(CONFIG_DIR, languages().analyzer())


@functools.cache
def triage() -> TriageRules:
    return load_triage(CONFIG_DIR / "triage.toml", languages())


@functools.cache
def distress() -> DistressRules:
    return languages().distress()


@functools.cache
def community() -> Community:
    return load_community(CONFIG_DIR / "community.toml", languages())


@functools.cache
def prompts() -> PromptBook:
    return PromptBook.load(CONFIG_DIR / "prompts", languages())


def reply_text(reply: Reply, language: str, **params: Any) -> str:
    """The shipped text of ``reply`` in ``language``, filled in."""
    return languages().reply(reply, language, **params)
