from __future__ import annotations

from hypothesis import given, strategies as st

from concierge.domain.context import context_from_history, trim_context
from concierge.protocol import Role, Turn


def user(text: str) -> Turn:
    return Turn(role=Role.USER, text=text)


def bot(text: str) -> Turn:
    return Turn(role=Role.ASSISTANT, text=text)


def test_history_drops_commands_with_their_fixed_replies() -> None:
    history = [
        user("/start"),
        bot("Bienvenue"),
        user("messe ?"),
        bot("10h30"),
        user("/help"),
        bot("Aide"),
    ]
    assert context_from_history(history) == [user("messe ?"), bot("10h30")]


def test_history_starts_after_the_last_reset() -> None:
    history = [
        user("messe ?"),
        bot("10h30"),
        user("/reset"),
        bot("C'est noté"),
        user("confessions ?"),
        bot("samedi 16h"),
        user("/reset"),
        bot("C'est noté"),
        user("et le caté ?"),
    ]
    assert context_from_history(history) == [user("et le caté ?")]


def test_messages_during_a_handoff_stay_in_the_history() -> None:
    history = [user("/humain"), bot("Je transmets"), user("vous êtes là ?"), user("allô ?")]
    assert context_from_history(history) == [user("vous êtes là ?"), user("allô ?")]


TURNS = st.lists(
    st.builds(Turn, role=st.sampled_from(list(Role)), text=st.text(max_size=40)), max_size=30
)


@given(turns=TURNS, max_turns=st.integers(0, 20), max_chars=st.integers(0, 300))
def test_trimmed_window_is_the_newest_suffix_within_both_bounds(
    turns: list[Turn], max_turns: int, max_chars: int
) -> None:
    window = trim_context(turns, max_turns=max_turns, max_chars=max_chars)
    if max_turns == 0 or max_chars == 0:
        assert window == ()  # a zero bound turns the context window off
        return
    assert len(window) <= max_turns
    assert sum(len(t.text) for t in window) <= max_chars
    assert list(window) == turns[len(turns) - len(window) :]
    # Maximal: one more turn from the past would break a bound.
    if len(window) < len(turns):
        longer = turns[len(turns) - len(window) - 1 :]
        assert len(longer) > max_turns or sum(len(t.text) for t in longer) > max_chars
