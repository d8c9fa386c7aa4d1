"""Guess whether a message is French or English, French by default.

A stopword vote is enough for two languages and short chat messages, and needs
no model: ``lingua`` would add tens of megabytes to tell apart the two languages
the parish uses. Short or mixed messages keep the conversation's language.
"""

from __future__ import annotations

import re

from concierge.domain.knowledge import fold, words

FRENCH = "fr"
ENGLISH = "en"
SUPPORTED = (FRENCH, ENGLISH)
SAMPLE_CHARS = 1000
"""Only the start of a message is looked at: enough to tell, and cheap for huge inputs."""


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words frequent in one language and rare in the other (folded: no accents).
_FR = _wordset(
    """
    le la les un une des du de au aux et est sont je tu il elle nous vous ils elles mon ma mes
    ton ta tes son sa ses notre votre leur leurs ce cette ces qui que quoi quel quelle quels
    quelles ou quand comment pourquoi combien avec pour dans sur sans chez pas ne plus tres
    bonjour bonsoir salut merci svp stp oui non voudrais veux peux puis faire fait avez avoir
    etre suis sommes etes c ca cest j je l d qu n m s y aujourd hui demain heure heures messe
    dimanche samedi eglise paroisse pere priere enfant enfants aussi mais donc alors car
    """
)
_EN = _wordset(
    """
    the a an and is are was were i you he she we they my your his her our their this that these
    those what which who when where why how with for from to of in on at by not no yes please
    thanks thank hello hi hey good morning evening can could would should will do does did have
    has am be been there here it its me us time mass sunday saturday church parish priest pray
    prayer child children also but so because
    """
)
# Ambiguous when they appear alone ("a", "on" exist in both); they still count in longer text.
_SHARED = frozenset({"a", "on", "me", "son", "pour", "des", "est", "pas", "plus", "no", "can"})
_FRENCH_LETTERS = frozenset("éèêàâçîïôûùœë")
_FR_ELISION = re.compile(r"\b(?:qu|[ldjcnsmt])'[a-z]")
_EN_CONTRACTION = re.compile(r"[a-z]'(?:t|s|m|re|ll|ve|d)\b")


def normalise_hint(hint: str | None) -> str | None:
    """A platform's language code (``fr-FR``, ``en``) reduced to a supported language or ``None``."""
    if not hint:
        return None
    code = hint.strip().lower().replace("_", "-").split("-")[0]
    return code if code in SUPPORTED else None


def detect_language(text: str, *, previous: str | None = None, hint: str | None = None) -> str:
    """``fr`` or ``en`` for ``text``; a tie keeps ``previous``, then the platform ``hint``, then French."""
    text = text[:SAMPLE_CHARS]
    tokens = words(text)
    fr = en = 0.0
    for token in tokens:
        weight = 0.5 if token in _SHARED else 1.0
        if token in _FR:
            fr += weight
        if token in _EN:
            en += weight
    if any(c in _FRENCH_LETTERS for c in text.lower()):
        fr += 1.5
    folded = fold(text).replace("’", "'")
    fr += len(_FR_ELISION.findall(folded))
    en += len(_EN_CONTRACTION.findall(folded))
    if fr > en:
        return FRENCH
    if en > fr:
        return ENGLISH
    for fallback in (normalise_hint(previous), normalise_hint(hint)):
        if fallback is not None:
            return fallback
    return FRENCH
