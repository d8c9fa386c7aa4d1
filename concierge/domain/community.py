"""The community's own numbers for a person in distress: ``community.toml``.

They are data, not code: another community has other emergency services and another
priest on call. Read once at start; a missing or wrong file stops the start with one
line naming the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from concierge.domain.errors import ConfigError
from concierge.domain.language import Languages
from concierge.domain.replies import Reply
from concierge.domain.toml_files import read_toml

_NUMBER = re.compile(r"^\+?[0-9][0-9 .()-]{0,30}$")
_EVERY_LANGUAGE = ""


class CommunityError(ConfigError):
    """The community file is missing or wrong; the message names the file and the key."""


@attrs.frozen(kw_only=True)
class EmergencyNumber:
    number: str
    labels: Mapping[str, str]
    """By language code; ``""`` holds a label for every language."""

    def label(self, languages: Languages, language: str) -> str:
        """This language's label, else its fallback's, the default language's, or the common one."""
        pack = languages.pack(language)
        for code in (pack.code, pack.fallback, languages.default, _EVERY_LANGUAGE):
            if code is not None and code in self.labels:
                return self.labels[code]
        raise AssertionError("load_community checks that every language has a label")


@attrs.frozen(kw_only=True)
class Community:
    priest_on_call: str
    emergency: tuple[EmergencyNumber, ...]

    def distress_reply(self, languages: Languages, language: str) -> str:
        """``[texts] distress`` in ``language``, with the emergency numbers and the priest's."""
        numbers = "\n".join(
            languages.reply(
                Reply.DISTRESS_NUMBER,
                language,
                label=n.label(languages, language),
                number=n.number,
            )
            for n in self.emergency
        )
        return languages.reply(
            Reply.DISTRESS, language, numbers=numbers, priest=self.priest_on_call
        )


def _number(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or _NUMBER.match(value.strip()) is None:
        raise CommunityError(
            f"{path}: {where}: expected a phone number as a string (digits, spaces, "
            f"+ . - and brackets), got {value!r}"
        )
    return value.strip()


def _labels(path: Path, where: str, value: Any, languages: Languages) -> dict[str, str]:
    if isinstance(value, str) and value.strip():
        return {_EVERY_LANGUAGE: value.strip()}
    if not isinstance(value, dict) or not value:
        raise CommunityError(
            f"{path}: {where}: expected a text, or a table of texts by language code"
        )
    labels: dict[str, str] = {}
    for code, text in value.items():
        if code not in languages:
            raise CommunityError(
                f"{path}: {where}.{code}: no language file {code}.toml "
                f"(languages: {', '.join(languages.codes)})"
            )
        if not isinstance(text, str) or not text.strip():
            raise CommunityError(f"{path}: {where}.{code}: expected a text, got {text!r}")
        labels[code] = text.strip()
    if languages.default not in labels:
        raise CommunityError(
            f"{path}: {where}: no label in the default language ({languages.default}), "
            "which languages without their own take"
        )
    return labels


def load_community(path: Path, languages: Languages) -> Community:
    """Read and check ``community.toml`` (in the configuration directory)."""
    data = read_toml(
        path,
        CommunityError,
        what="the community file",
        missing="the community file does not exist (CONCIERGE_CONFIG_DIR): it gives the "
        "emergency numbers and the priest's on-call number sent to a person in distress",
    )
    unknown = sorted(set(data) - {"priest_on_call", "emergency"})
    if unknown:
        raise CommunityError(
            f"{path}: {unknown[0]}: unknown key, expected priest_on_call and [[emergency]]"
        )
    if "priest_on_call" not in data:
        raise CommunityError(f"{path}: priest_on_call: missing (the parish's emergency line)")
    entries = data.get("emergency")
    if not isinstance(entries, list) or not entries:
        raise CommunityError(
            f"{path}: emergency: expected at least one [[emergency]] table (number, label)"
        )
    emergency = []
    for i, entry in enumerate(entries, start=1):
        where = f"emergency[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"number", "label"}:
            raise CommunityError(f"{path}: {where}: expected exactly a number and a label")
        emergency.append(
            EmergencyNumber(
                number=_number(path, f"{where}.number", entry["number"]),
                labels=_labels(path, f"{where}.label", entry["label"], languages),
            )
        )
    return Community(
        priest_on_call=_number(path, "priest_on_call", data["priest_on_call"]),
        emergency=tuple(emergency),
    )
