from __future__ import annotations

import pytest

from actors.provider_pool import ask
from concierge.domain import KnowledgeBase, Languages
from concierge.protocol import Completion, ProviderCall, ServiceType
from concierge.providers import OfflineAdapter
from concierge.settings import ApiKey
from tests.providers.pool_helpers import running_pool
from tests.providers.scripted import pool_settings

NO_KEY = ApiKey(alias="kb", secret="")


@pytest.fixture
def offline(knowledge: KnowledgeBase, languages: Languages) -> OfflineAdapter:
    return OfflineAdapter(knowledge, languages)


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
async def test_the_answer_leads_with_the_sentence_that_holds_the_fact(
    offline: OfflineAdapter,
) -> None:
    reply = await offline.complete(_call("A quelle heure est la messe dimanche ?"), NO_KEY)
    first = reply.text.splitlines()[0]
    assert first.startswith("Dimanche : 8h00")
    assert "10h30" in first
    assert "(Source : paroisse › Horaires des messes)" in reply.text
    assert "Secrétariat" not in reply.text  # one or two sentences, not whole sections


@pytest.mark.anyio
async def test_the_issue_examples_are_answered_with_their_fact(offline: OfflineAdapter) -> None:
    for question, fact in [
        ("Quel est le numéro du secrétariat ?", "+221 33 800 00 00"),
        ("Quel jour répète la chorale ?", "répétition le jeudi"),
        ("Qui coordonne la catéchèse ?", "Madame Awa Faye"),
        ("Combien de temps avant faut-il prévenir pour un baptême ?", "trois mois avant"),
        ("Combien de temps avant faut-il prévenir pour un mariage ?", "un an avant"),
    ]:
        reply = await offline.complete(_call(question), NO_KEY)
        assert fact in reply.text.splitlines()[0], question


@pytest.mark.anyio
async def test_english_question_gets_an_english_frame_around_the_french_facts(
    offline: OfflineAdapter,
) -> None:
    reply = await offline.complete(_call("What time is Mass on Sunday?", language="en"), NO_KEY)
    assert "10h30" in reply.text.splitlines()[0]
    assert "(Source, in French: paroisse › Horaires des messes)" in reply.text
    assert "/human" in reply.text


@pytest.mark.anyio
async def test_wolof_question_gets_a_wolof_frame(offline: OfflineAdapter) -> None:
    reply = await offline.complete(_call("Ban waxtu la misa dibéer ?", language="wo"), NO_KEY)
    assert "10h30" in reply.text.splitlines()[0]
    assert "Fi laa ko jële" in reply.text


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
    passages = {p.text for p in knowledge.passages}
    reply = await offline.complete(
        _call("Inscription au catéchisme : frais et documents ?"), NO_KEY
    )
    quoted = reply.text.split("\n(Source")[0].splitlines()
    assert 1 <= len(quoted) <= 2
    assert all(line in passages for line in quoted)
    assert "5 000 FCFA" in reply.text


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
