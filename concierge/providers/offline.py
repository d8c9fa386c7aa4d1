"""The ``offline`` provider: answers from the knowledge base, with no network and no key.

It leads with the one or two sentences that best answer the question, then says
where they come from; when nothing matches it says so and offers a person. It
never writes a fact of its own, which makes it the safe last resort of the
provider pool and the embedded default.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import trio

from concierge.domain import Hit, KnowledgeBase, Languages, OfflineText
from concierge.protocol import ProviderCall, ProviderReply, Role, ServiceType
from concierge.settings import ApiKey

CATECHESIS_SOURCES: tuple[str, ...] = ("foi-et-priere",)
_FENCE = re.compile(r"</?user_message>")


class OfflineAdapter:
    """An ``Adapter`` over a ``KnowledgeBase``; ``complete`` needs no key and never fails."""

    def __init__(
        self,
        knowledge: KnowledgeBase,
        languages: Languages,
        *,
        name: str = "offline",
        model: str = "knowledge-base",
        catechesis_sources: Collection[str] = CATECHESIS_SOURCES,
        min_coverage: float = 0.5,
        same_section_share: float = 0.6,
        other_section_share: float = 0.9,
    ) -> None:
        self._knowledge = knowledge
        self._languages = languages
        self._name = name
        self._model = model
        self._catechesis_sources = frozenset(catechesis_sources)
        self._min_coverage = min_coverage
        self._same_section_share = same_section_share
        self._other_section_share = other_section_share

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
        """The passages worth quoting: the best one, and a second one close to it.

        A second passage from the same section needs less (it is the same subject:
        "Deux rencontres…" after "Les parents prennent contact…") than one from
        another section.
        """
        hits: list[Hit] = []
        if self._catechesis_sources:
            # Faith questions look in the faith notes first, practical ones everywhere else first.
            sources = (
                self._catechesis_sources
                if service_type is ServiceType.CATECHESE
                else self._knowledge.sources - self._catechesis_sources
            )
            hits = self._knowledge.search(
                query, limit=4, sources=sources, min_coverage=self._min_coverage
            )
        if not hits:
            hits = self._knowledge.search(query, limit=4, min_coverage=self._min_coverage)
        if not hits:
            return []
        best = hits[0]
        for hit in hits[1:]:
            same = hit.section == best.section
            share = self._same_section_share if same else self._other_section_share
            if hit.score >= best.score * share:
                return [best, hit]
        return [best]

    def answer(self, query: str, *, language: str, service_type: ServiceType) -> str:
        languages = self._languages
        if service_type is ServiceType.CONTACT_HUMAIN:
            return languages.offline(OfflineText.HUMAN, language)
        hits = self.find(query, service_type)
        if not hits:
            return languages.offline(OfflineText.NOT_FOUND, language)
        quoted = "\n".join(h.passage.text for h in hits)
        refs = " ; ".join(dict.fromkeys(h.section.ref for h in hits))
        source = languages.offline(OfflineText.SOURCE, language, ref=refs)
        outro = languages.offline(OfflineText.OUTRO, language)
        return f"{quoted}\n{source}\n\n{outro}"

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
