from __future__ import annotations

import pytest

from concierge.domain import Languages, SmallTalk


@pytest.mark.parametrize(
    ("text", "kind", "language"),
    [
        ("Bonjour", SmallTalk.GREETING, "fr"),
        ("Bonsoir mon père !", SmallTalk.GREETING, "fr"),
        ("salut", SmallTalk.GREETING, "fr"),
        ("Hello!", SmallTalk.GREETING, "en"),
        ("Good morning", SmallTalk.GREETING, "en"),
        ("Salaam aleekum", SmallTalk.GREETING, "wo"),
        ("Merci beaucoup !", SmallTalk.THANKS, "fr"),
        ("Bonjour, merci pour votre aide", SmallTalk.THANKS, "fr"),
        ("thank you so much", SmallTalk.THANKS, "en"),
        ("Jërëjëf", SmallTalk.THANKS, "wo"),
        ("Ça va ?", SmallTalk.WELLBEING, "fr"),
        ("how are you?", SmallTalk.WELLBEING, "en"),
        ("Na nga def ?", SmallTalk.WELLBEING, "wo"),
        ("Au revoir", SmallTalk.FAREWELL, "fr"),
        ("merci, au revoir", SmallTalk.FAREWELL, "fr"),
        ("Tu es un robot ?", SmallTalk.IDENTITY, "fr"),
        ("who are you", SmallTalk.IDENTITY, "en"),
        ("ok", SmallTalk.ACKNOWLEDGEMENT, "fr"),
        ("d'accord", SmallTalk.ACKNOWLEDGEMENT, "fr"),
    ],
)
def test_small_talk_is_recognised_in_its_language(
    languages: Languages, text: str, kind: SmallTalk, language: str
) -> None:
    assert languages.small_talk.classify(text) is kind
    assert languages.detect(text) == language


@pytest.mark.parametrize(
    "text",
    [
        "Bonjour, à quelle heure est la messe dimanche ?",
        "Hello, what time is Mass?",
        "Salaam aleekum, ban waxtu la misa bi ?",
        "merci de me dire le numéro du secrétariat",
        "oui",
        "",
        "bonjour " * 10,
    ],
)
def test_a_question_with_a_greeting_is_a_question(languages: Languages, text: str) -> None:
    assert languages.small_talk.classify(text) is None


def test_each_kind_has_its_own_reply_that_offers_help(languages: Languages) -> None:
    for code in languages.codes:
        texts = {languages.reply(kind.reply, code) for kind in SmallTalk}
        assert len(texts) == len(SmallTalk), code
    assert "paroisse" in languages.reply(SmallTalk.GREETING.reply, "fr")
    assert "parish" in languages.reply(SmallTalk.GREETING.reply, "en")
    assert "paroisse" in languages.reply(SmallTalk.GREETING.reply, "wo")
