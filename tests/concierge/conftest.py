"""Fixtures for the domain modules: the shipped configuration (knowledge, triage, prompts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concierge.knowledge import KnowledgeBase, load_knowledge
from concierge.prompts import PromptBook
from concierge.triage import TriageRules, load_triage

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(scope="session")
def knowledge() -> KnowledgeBase:
    return load_knowledge(CONFIG_DIR)


@pytest.fixture(scope="session")
def triage_rules() -> TriageRules:
    return load_triage(CONFIG_DIR / "triage.toml")


@pytest.fixture(scope="session")
def prompt_book() -> PromptBook:
    return PromptBook.load(CONFIG_DIR / "prompts")
