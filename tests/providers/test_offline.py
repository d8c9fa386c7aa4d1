from __future__ import annotations

import pytest

from actors.provider_pool import ask
from concierge.domain import KnowledgeBase
from concierge.protocol import Completion, ProviderCall, ServiceType
from concierge.providers import OfflineAdapter
from concierge.settings import ApiKey
from tests.providers.pool_helpers import running_pool
from tests.providers.scripted import pool_settings

NO_KEY = ApiKey(alias="kb", secret="")


@pytest.fixture
def offline(knowledge: KnowledgeBase) -> OfflineAdapter:
    return OfflineAdapter(knowledge)


def _call(
    query: str, *, language: str = "fr", service_type: ServiceType = ServiceType.RENSEIGNEMENT
) -> ProviderCall:
    return ProviderCall(
        correlation_id="c1",
        system="",
        turns=(),
        max_tokens=100,
        timeout_s=5.0,
        query=query,
        language=language,
        service_type=service_type,
    )


def test_adapter_identity(offline: OfflineAdapter) -> None:
    assert (offline.name, offline.kind, offline.model) == ("offline", "offline", "knowledge-base")


@pytest.mark.anyio
async def test_sunday_mass_question_is_answered_with_the_mass_times(
    offline: OfflineAdapter,
) -> None:
    reply = await offline.complete(_call("A quelle heure est la messe dimanche ?"), NO_KEY)
    for fact in ("8h00", "10h30", "18h30", "Dimanche"):
        assert fact in reply.text
    assert "Horaires des messes" in reply.text
    assert reply.text.startswith("Voici ce que je trouve")


@pytest.mark.anyio
async def test_english_question_gets_an_english_frame_around_the_french_facts(
    offline: OfflineAdapter,
) -> None:
    reply = await offline.complete(_call("What time is Mass on Sunday?", language="en"), NO_KEY)
    assert reply.text.startswith("Here is what I found")
    assert "10h30" in reply.text
    assert "/human" in reply.text


@pytest.mark.anyio
@pytest.mark.parametrize(("language", "marker"), [("fr", "/humain"), ("en", "/human")])
async def test_unknown_question_is_declined_honestly_with_a_person_offered(
    offline: OfflineAdapter, language: str, marker: str
) -> None:
    reply = await offline.complete(
        _call("Qui a gagné le match de football hier soir ?", language=language), NO_KEY
    )
    assert marker in reply.text
    assert "Source" not in reply.text
    assert not any(ch.isdigit() for ch in reply.text)  # no invented time, price or number


@pytest.mark.anyio
async def test_catechesis_answers_come_from_the_faith_notes(offline: OfflineAdapter) -> None:
    reply = await offline.complete(
        _call("Comment se confesser ?", service_type=ServiceType.CATECHESE), NO_KEY
    )
    assert "foi-et-priere › Se confesser" in reply.text
    assert "paroisse › Confessions" not in reply.text


@pytest.mark.anyio
async def test_every_quoted_fact_is_verbatim_from_the_knowledge_base(
    offline: OfflineAdapter, knowledge: KnowledgeBase
) -> None:
    corpus = "\n".join(s.body for s in knowledge.sections)
    reply = await offline.complete(
        _call("Inscription au catéchisme : frais et documents ?"), NO_KEY
    )
    quoted = [line for line in reply.text.splitlines() if line.startswith("- ")]
    assert quoted
    assert all(line in corpus for line in quoted)


@pytest.mark.anyio
async def test_the_pool_answers_from_the_knowledge_base_without_any_key(
    offline: OfflineAdapter,
) -> None:
    async with running_pool([offline], pool_settings()) as (_pool, inbox):
        result = await ask(
            inbox,
            ProviderCall(
                correlation_id="c2",
                system="s",
                turns=(),
                max_tokens=100,
                timeout_s=5.0,
                query="Quels sont les horaires du secrétariat ?",
                language="fr",
            ),
        )
    assert isinstance(result, Completion)
    assert result.provider == "offline"
    assert "9h00 à 12h30" in result.text
