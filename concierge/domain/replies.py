"""The fixed texts the concierge sends itself, in French and English.

Kept in code rather than in ``config/``: they carry placeholders the code fills
and tests check, and they must exist for every language the concierge speaks.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Any

from concierge.domain.language import ENGLISH, FRENCH


class Reply(enum.StrEnum):
    WELCOME = "welcome"
    HELP = "help"
    RESET_DONE = "reset_done"
    BUSY = "busy"
    RATE_LIMITED = "rate_limited"
    TOO_LONG = "too_long"
    MEDIA_UNSUPPORTED = "media_unsupported"
    HANDOFF_OPENED = "handoff_opened"
    HANDOFF_CLOSED = "handoff_closed"
    HANDOFF_TIMEOUT = "handoff_timeout"
    PROVIDER_FAILED = "provider_failed"
    STAFF_HANDOFF = "staff_handoff"


_TEXTS: dict[str, dict[Reply, str]] = {
    FRENCH: {
        Reply.WELCOME: (
            "Bonjour et bienvenue ! Je suis l'assistant de la paroisse. Je peux vous renseigner "
            "sur les horaires des messes, les confessions, le catéchisme, les sacrements et la vie "
            "de la paroisse, et répondre à vos questions sur la foi.\n"
            "Pour parler à une personne, écrivez /humain. Pour l'aide, écrivez /help."
        ),
        Reply.HELP: (
            "Posez votre question en quelques mots, par exemple : « À quelle heure est la messe "
            "dimanche ? » ou « Qu'est-ce que le Carême ? ».\n"
            "Commandes :\n"
            "/humain : parler à une personne de la paroisse\n"
            "/reset : recommencer la conversation à zéro\n"
            "/help : afficher cette aide"
        ),
        Reply.RESET_DONE: "C'est noté : nous repartons de zéro. Quelle est votre question ?",
        Reply.BUSY: (
            "Un instant, je réponds encore à votre message précédent. Je n'ai pas pu prendre "
            "celui-ci en compte : renvoyez-le dans un moment, s'il vous plaît."
        ),
        Reply.RATE_LIMITED: (
            "Vous m'envoyez beaucoup de messages à la suite. Je ne peux pas tous les traiter : "
            "patientez une minute puis renvoyez votre question, s'il vous plaît."
        ),
        Reply.TOO_LONG: (
            "Votre message est trop long ({length} caractères) : je peux lire au plus {limit} "
            "caractères. Pouvez-vous le raccourcir ou le découper ?"
        ),
        Reply.MEDIA_UNSUPPORTED: (
            "Je ne peux lire que du texte pour le moment. Pouvez-vous écrire votre question ?"
        ),
        Reply.HANDOFF_OPENED: (
            "Je transmets votre demande à une personne de la paroisse, qui vous répondra ici dès "
            "que possible. En attendant, je ne répondrai plus moi-même dans cette conversation. "
            "En cas d'urgence, appelez le secrétariat paroissial."
        ),
        Reply.HANDOFF_CLOSED: (
            "L'échange avec la paroisse est terminé. Je reprends la conversation : vous pouvez "
            "à nouveau me poser vos questions."
        ),
        Reply.HANDOFF_TIMEOUT: (
            "Personne n'a encore pu vous répondre, pardon. Je reprends la conversation ; "
            "écrivez /humain pour renouveler votre demande ou contactez le secrétariat paroissial."
        ),
        Reply.PROVIDER_FAILED: (
            "Pardon, je ne parviens pas à répondre pour le moment. Réessayez dans quelques "
            "minutes, ou écrivez /humain pour qu'une personne de la paroisse vous réponde."
        ),
        Reply.STAFF_HANDOFF: (
            "Demande de contact n°{handoff_id} ({reason}) de {who} sur {channel}.\n"
            "Dernier message : {excerpt}"
        ),
    },
    ENGLISH: {
        Reply.WELCOME: (
            "Hello and welcome! I am the parish assistant. I can tell you about Mass times, "
            "confessions, catechism classes, the sacraments and parish life, and answer your "
            "questions about the faith.\n"
            "To talk to a person, type /human. For help, type /help."
        ),
        Reply.HELP: (
            'Ask your question in a few words, for example: "What time is Mass on Sunday?" '
            'or "What is Lent?".\n'
            "Commands:\n"
            "/human: talk to a person from the parish\n"
            "/reset: start the conversation afresh\n"
            "/help: show this help"
        ),
        Reply.RESET_DONE: "Done: we are starting afresh. What is your question?",
        Reply.BUSY: (
            "One moment, I am still answering your previous message. I could not take this one: "
            "please send it again in a moment."
        ),
        Reply.RATE_LIMITED: (
            "You are sending many messages in a row and I cannot handle them all: please wait a "
            "minute, then send your question again."
        ),
        Reply.TOO_LONG: (
            "Your message is too long ({length} characters): I can read at most {limit} "
            "characters. Could you shorten it or split it?"
        ),
        Reply.MEDIA_UNSUPPORTED: "I can only read text for now. Could you type your question?",
        Reply.HANDOFF_OPENED: (
            "I am passing your request to a person from the parish, who will answer you here as "
            "soon as possible. Until then I will not answer in this conversation myself. "
            "In an emergency, call the parish office."
        ),
        Reply.HANDOFF_CLOSED: (
            "The conversation with the parish team has ended. I am back: you can ask me your "
            "questions again."
        ),
        Reply.HANDOFF_TIMEOUT: (
            "Sorry, nobody has been able to answer you yet. I am back in the conversation; type "
            "/human to ask again or contact the parish office."
        ),
        Reply.PROVIDER_FAILED: (
            "Sorry, I cannot answer right now. Please try again in a few minutes, or type /human "
            "so that a person from the parish answers you."
        ),
        Reply.STAFF_HANDOFF: (
            "Contact request #{handoff_id} ({reason}) from {who} on {channel}.\n"
            "Last message: {excerpt}"
        ),
    },
}

TEXTS = MappingProxyType({lang: MappingProxyType(texts) for lang, texts in _TEXTS.items()})


def reply_text(reply: Reply, language: str, **params: Any) -> str:
    """The text of ``reply`` in ``language`` (French for anything unsupported), filled in."""
    texts = TEXTS.get(language, TEXTS[FRENCH])
    return texts[reply].format(**params) if params else texts[reply]


def bilingual(reply: Reply, **params: Any) -> str:
    """French then English: for messages sent when the user's language is not known."""
    return "\n\n".join(reply_text(reply, lang, **params) for lang in (FRENCH, ENGLISH))
