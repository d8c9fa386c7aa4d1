"""The ``offline`` provider: answers from the knowledge base, with no network and no key.

It quotes the sections that best match the user's question and says where they
come from; when nothing matches it says so and offers a person. It never writes
a fact of its own, which makes it the safe last resort of the provider pool and
the embedded default.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import trio

from concierge.domain import ENGLISH, FRENCH, Hit, KnowledgeBase, excerpt
from concierge.protocol import ProviderCall, ProviderReply, Role, ServiceType
from concierge.settings import ApiKey

CATECHESIS_SOURCES: tuple[str, ...] = ("foi-et-priere",)
_FENCE = re.compile(r"</?user_message>")

_INTRO = {
    FRENCH: "Voici ce que je trouve dans les informations de la paroisse :",
    ENGLISH: "Here is what I found in the parish information (written in French):",
}
_INTRO_FAITH = {
    FRENCH: "Voici ce que disent les repères de la paroisse :",
    ENGLISH: "Here is what the parish's notes say (written in French):",
}
_SOURCE = {FRENCH: "Source : ", ENGLISH: "Source: "}
_OUTRO = {
    FRENCH: "Pour une autre question ou pour parler à une personne, écrivez /humain.",
    ENGLISH: "For anything else, or to talk to a person, type /human.",
}
_NOT_FOUND = {
    FRENCH: (
        "Je ne trouve pas cette information dans ce que je sais de la paroisse, et je préfère "
        "ne pas vous répondre au hasard. Écrivez /humain pour qu'une personne de la paroisse vous "
        "réponde, ou contactez le secrétariat paroissial."
    ),
    ENGLISH: (
        "I cannot find this in what I know about the parish, and I would rather not guess. "
        "Type /human so that a person from the parish answers you, or contact the parish office."
    ),
}
_HUMAN = {
    FRENCH: "Une personne de la paroisse va vous répondre ici dès que possible.",
    ENGLISH: "A person from the parish will answer you here as soon as possible.",
}


class OfflineAdapter:
    """An ``Adapter`` over a ``KnowledgeBase``; ``complete`` needs no key and never fails."""

    def __init__(
        self,
        knowledge: KnowledgeBase,
        *,
        name: str = "offline",
        model: str = "knowledge-base",
        catechesis_sources: Collection[str] = CATECHESIS_SOURCES,
        max_sections: int = 2,
        min_coverage: float = 0.51,
        runner_up_share: float = 0.7,
    ) -> None:
        self._knowledge = knowledge
        self._name = name
        self._model = model
        self._catechesis_sources = frozenset(catechesis_sources)
        self._max_sections = max_sections
        self._min_coverage = min_coverage
        self._runner_up_share = runner_up_share

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return "offline"

    @property
    def model(self) -> str:
        return self._model

    def find(self, query: str, service_type: ServiceType) -> list[Hit]:
        """The sections worth quoting: the best one and runners-up close to it."""
        hits: list[Hit] = []
        if self._catechesis_sources:
            # Faith questions look in the faith notes first, practical ones everywhere else first.
            sources = (
                self._catechesis_sources
                if service_type is ServiceType.CATECHESE
                else self._knowledge.sources - self._catechesis_sources
            )
            hits = self._knowledge.search(query, sources=sources, min_coverage=self._min_coverage)
        if not hits:
            hits = self._knowledge.search(query, min_coverage=self._min_coverage)
        if not hits:
            return []
        best = hits[0].score
        return [h for h in hits[: self._max_sections] if h.score >= best * self._runner_up_share]

    def answer(self, query: str, *, language: str, service_type: ServiceType) -> str:
        lang = language if language in (FRENCH, ENGLISH) else FRENCH
        if service_type is ServiceType.CONTACT_HUMAIN:
            return _HUMAN[lang]
        hits = self.find(query, service_type)
        if not hits:
            return _NOT_FOUND[lang]
        qterms = self._knowledge.query_terms(query)
        intro = _INTRO_FAITH[lang] if service_type is ServiceType.CATECHESE else _INTRO[lang]
        parts = [intro]
        for hit in hits:
            section = hit.section
            parts.append(
                f"{section.title}\n{excerpt(section, qterms)}\n({_SOURCE[lang]}{section.ref})"
            )
        parts.append(_OUTRO[lang])
        return "\n\n".join(parts)

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        await trio.lowlevel.checkpoint()
        text = self.answer(
            call.query or _last_user_text(call),
            language=call.language,
            service_type=call.service_type,
        )
        return ProviderReply(text=text, model=self._model, tokens_in=0, tokens_out=0)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _last_user_text(call: ProviderCall) -> str:
    for turn in reversed(call.turns):
        if turn.role is Role.USER:
            return _FENCE.sub(" ", turn.text)
    return ""
