"""System prompts per service type and language, with the user's text fenced off as data.

Templates live in ``prompts/<service>.<lang>.md`` (operators edit them); a
language whose file says ``prompts = "fr"`` gets the French templates and its own
``answer_in`` line (answer in Wolof). This module adds what must not be edited away: the rule that text inside
``<user_message>`` tags is data, never instructions, how to flag an emergency (the
language's ``urgent`` text with ``URGENT_MARKER``: a provider may raise an alarm the
rules missed), and a per-turn canary so a reply that echoes the prompt is caught
before it is sent. The prompt never asks
the model to keep or reveal anything secret: there is nothing secret in it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from concierge.domain.distress import URGENT_MARKER
from concierge.domain.errors import ConfigError
from concierge.domain.language import Languages
from concierge.domain.replies import PromptText
from concierge.domain.sections import Section
from concierge.protocol import Role, ServiceType, Turn

KNOWLEDGE_PLACEHOLDER = "{knowledge}"

_TAG = re.compile(r"<\s*/?\s*user_message", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_MIN_LEAK_LINE = 40


class PromptError(ConfigError):
    """A prompt template is missing or unusable; the message names the file."""


def fence(text: str) -> str:
    """Wrap user text in ``<user_message>`` tags, defusing any tag the text itself contains."""
    defused = _TAG.sub(lambda m: m.group(0).replace("<", "‹"), text)
    return f"<user_message>\n{defused}\n</user_message>"


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


@attrs.frozen(kw_only=True)
class Prompt:
    """What goes to the provider for one turn, and how to recognise a reply that leaks it."""

    system: str
    turns: tuple[Turn, ...]
    canary: str
    instruction_lines: tuple[str, ...] = attrs.field(repr=False)

    def leaked(self, reply: str) -> bool:
        """Whether ``reply`` repeats the canary or a whole instruction line of the prompt."""
        if self.canary.casefold() in reply.casefold():
            return True
        flat = _norm(reply)
        return any(line in flat for line in self.instruction_lines)


def render_knowledge(sections: Iterable[Section], nothing: str) -> str:
    """The sections as tagged blocks, or ``nothing`` (the language's "no information found")."""
    blocks = [f'<section source="{s.ref}">\n{s.body}\n</section>' for s in sections]
    return "\n".join(blocks) if blocks else nothing


def _template_languages(languages: Languages) -> list[str]:
    """The languages that have templates of their own (the others borrow one's)."""
    return list(dict.fromkeys(p.prompts for p in languages.packs))


class PromptBook:
    """One template per (service type, language); ``build`` assembles a turn's prompt."""

    def __init__(
        self, templates: Mapping[tuple[ServiceType, str], str], languages: Languages
    ) -> None:
        missing = [
            f"{t.value.lower()}.{lang}.md"
            for t in ServiceType
            for lang in _template_languages(languages)
            if (t, lang) not in templates
        ]
        if missing:
            raise PromptError(f"missing prompt templates: {', '.join(missing)}")
        self._languages = languages
        self._templates = dict(templates)
        self._leak_lines = {
            key: _leak_lines(text, _code_text(languages, key[1]))
            for key, text in self._templates.items()
        }

    @classmethod
    def load(cls, directory: Path, languages: Languages) -> PromptBook:
        """Read ``<service>.<lang>.md`` for every service type and language with templates."""
        templates: dict[tuple[ServiceType, str], str] = {}
        for service_type in ServiceType:
            for language in _template_languages(languages):
                path = directory / f"{service_type.value.lower()}.{language}.md"
                try:
                    text = path.read_text(encoding="utf-8").strip()
                except FileNotFoundError:
                    raise PromptError(
                        f"{path}: prompt template missing (CONCIERGE_CONFIG_DIR)"
                    ) from None
                except (OSError, UnicodeDecodeError) as exc:
                    raise PromptError(f"{path}: cannot read it: {exc}") from None
                if not text:
                    raise PromptError(f"{path}: the prompt template is empty")
                templates[(service_type, language)] = text
        return cls(templates, languages)

    def build(
        self,
        *,
        service_type: ServiceType,
        language: str,
        sections: Sequence[Section],
        history: Sequence[Turn],
        user_text: str,
        canary: str | None = None,
    ) -> Prompt:
        """The system prompt and fenced turns for one reply to ``user_text``."""
        languages = self._languages
        lang = languages.pack(language).prompts
        template = self._templates[(service_type, lang)]
        appended = _code_text(languages, language)
        canary = canary or f"ref-{secrets.token_hex(6)}"
        nothing = languages.prompt_text(PromptText.NO_KNOWLEDGE, language)
        knowledge = render_knowledge(sections, nothing)
        if KNOWLEDGE_PLACEHOLDER in template:
            body = template.replace(KNOWLEDGE_PLACEHOLDER, knowledge)
        else:
            body = f"{template}\n\n{knowledge}"
        answer_in = languages.prompt_text(PromptText.ANSWER_IN, language)
        if answer_in:
            body = f"{body}\n\n{answer_in}"
        system = f"{body}\n\n{appended}\n\n[{canary}]"
        fenced = [
            Turn(role=t.role, text=fence(t.text) if t.role is Role.USER else t.text)
            for t in history
        ]
        turns = (*fenced, Turn(role=Role.USER, text=fence(user_text)))
        return Prompt(
            system=system,
            turns=turns,
            canary=canary,
            instruction_lines=self._leak_lines[(service_type, lang)],
        )


def _code_text(languages: Languages, language: str) -> str:
    """What the code appends to every template: the data frame and how to flag an emergency."""
    urgent = languages.prompt_text(PromptText.URGENT, language).format(marker=URGENT_MARKER)
    return f"{languages.prompt_text(PromptText.FRAME, language)}\n\n{urgent}"


def _leak_lines(template: str, appended: str) -> tuple[str, ...]:
    """The instruction lines (and the code's sentences) a reply must not repeat, normalised."""
    instructions = template.replace(KNOWLEDGE_PLACEHOLDER, "")
    candidates = (*instructions.splitlines(), *_split_sentences(appended))
    normalised = (_norm(line.lstrip("-*• ")) for line in candidates)
    return tuple(n for n in normalised if len(n) >= _MIN_LEAK_LINE)


def _split_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.:;])\s+", text) if s]
