"""Heuristic fallbacks: keywords, entities, sentiment and the whole fallback enrichment."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biomem.pipeline.heuristics import entities, fallback_enrichment, keywords, sentiment

ATLAS = "Met Ana and Kofi to plan the Atlas cutover; need to update the runbook before Friday."


def test_keywords_rank_by_frequency_then_position() -> None:
    """Stopwords and bare numbers go; repeats rank first, ties keep text order."""
    text = (
        "I just got the Q3 budget numbers, then we reviewed the budget with Priya's team "
        "and the sign-off is late: 40 items about the budget."
    )
    assert keywords(text, limit=5) == ["budget", "q3", "numbers", "reviewed", "priya"]
    assert keywords(text) == keywords(text)
    assert "sign-off" in keywords(text, limit=20)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("", 8, [], id="empty"),
        pytest.param("I and the of with about", 8, [], id="only-stopwords"),
        pytest.param("Atlas atlas ATLAS cutover", 8, ["atlas", "cutover"], id="case-folded"),
        pytest.param("alpha beta gamma", 0, [], id="zero-limit"),
    ],
)
def test_keywords_edge_cases(text: str, limit: int, expected: list[str]) -> None:
    """Empty input, all-stopword input, case and a zero limit behave plainly."""
    assert keywords(text, limit=limit) == expected


@pytest.mark.parametrize(
    ("text", "known", "expected"),
    [
        pytest.param(ATLAS, (), ["Ana", "Kofi", "Atlas"], id="mid-sentence-names"),
        pytest.param("Call with Kofi Mensah about Atlas.", (), ["Kofi Mensah", "Atlas"], id="run"),
        pytest.param(
            "Atlas slipped again. Ana is worried.", ("Atlas",), ["Atlas"], id="known-start"
        ),
        pytest.param("The Atlas team met. Then we left.", (), ["Atlas"], id="initial-common-words"),
        pytest.param(
            "Yesterday I met Ana. Then I flew to Copenhagen on Monday in December.",
            (),
            ["Ana", "Copenhagen"],
            id="skips-initial-I-weekday-month",
        ),
        pytest.param("Ella's drawing. Later Ella slept.", (), ["Ella"], id="possessive"),
        pytest.param(
            "Ana called. Lunch with Ana and Dr. Lund.", (), ["Ana", "Dr. Lund"], id="seen-mid"
        ),
        pytest.param("Read The Remains of the Day.", (), ["Remains of the Day"], id="title"),
        pytest.param("the atlas team", ("Atlas",), ["Atlas"], id="known-lowercase"),
        pytest.param("Nothing named here.", ("I", "Friday", ""), [], id="bad-known-ignored"),
    ],
)
def test_entities(text: str, known: tuple[str, ...], expected: list[str]) -> None:
    """Capitalised non-initial words and known entities count; I, weekdays and months don't."""
    assert entities(text, known=known) == expected


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        pytest.param("Fixed the bug and launched; so relieved and proud.", 1, id="positive"),
        pytest.param("Tired and worried: the deploy failed again, another blocker.", -1, id="neg"),
        pytest.param("I am not happy with the plan.", -1, id="negated-positive"),
        pytest.param("There were no bugs and nothing crashed.", 1, id="negated-negative"),
        pytest.param("Trying not to panic.", -1, id="not-to-keeps-feeling"),
        pytest.param("The meeting moved to room 4.", 0, id="neutral"),
        pytest.param("", 0, id="empty"),
    ],
)
def test_sentiment_sign(text: str, sign: int) -> None:
    """The lexicon score has the expected sign, with negation flipping a word."""
    score = sentiment(text)
    assert -1.0 < score < 1.0
    assert (score > 0) - (score < 0) == sign


def test_intensifier_strengthens() -> None:
    """An intensifier scales a word by 1.5, within the (pos - neg) / (pos + neg + 1) squash."""
    assert sentiment("happy") == pytest.approx(0.5)
    assert sentiment("really happy") == pytest.approx(0.6)
    assert sentiment("not very happy") == pytest.approx(-0.6)


@pytest.mark.parametrize(
    ("content", "metadata", "entities_in", "task_in", "action_in"),
    [
        pytest.param(
            ATLAS,
            {"people": [], "project": None, "topics": []},
            {"Ana", "Kofi", "Atlas"},
            "need to update the runbook before Friday",
            "Met Ana and Kofi to plan the Atlas cutover",
            id="atlas-planning",
        ),
        pytest.param(
            "On the train: I reviewed Priya's schema PR. Remember to book the retro room!",
            {"people": ["Priya Nair"], "project": "Atlas migration", "emotional_valence": 0.2},
            {"Priya Nair", "Atlas migration"},
            "Remember to book the retro room",
            "I reviewed Priya's schema PR",
            id="people-and-project",
        ),
        pytest.param(
            "Dropped Ella at school, then called Mom about the weekend. Slept badly again.",
            {"people": ["Ella"], "topics": ["family"]},
            {"Ella", "Mom"},
            None,
            "called Mom about the weekend",
            id="family-morning",
        ),
    ],
)
def test_fallback_enrichment_on_realistic_memories(
    content: str,
    metadata: dict[str, Any],
    entities_in: set[str],
    task_in: str | None,
    action_in: str,
) -> None:
    """Entities, tasks, actions, a short goal and an in-range sentiment come out of real notes."""
    result = fallback_enrichment(content, metadata=metadata)
    assert entities_in <= set(result.entities)
    assert (task_in in result.tasks) if task_in else result.tasks == ()
    assert action_in in result.actions
    assert result.goal and len(result.goal.split()) <= 12 and len(result.goal) <= 200
    assert content.startswith(result.goal)
    assert -1.0 <= result.sentiment <= 1.0
    assert result.topics


def test_fallback_uses_metadata_topics_and_valence() -> None:
    """Metadata topics replace keywords, and a valid valence is averaged in."""
    plain = fallback_enrichment("Fixed the flaky test. Great.")
    with_meta = fallback_enrichment(
        "Fixed the flaky test. Great.", metadata={"topics": ["ci"], "emotional_valence": -1}
    )
    assert plain.topics == ("fixed", "flaky", "test")
    assert with_meta.topics == ("ci",)
    expected = (sentiment("Fixed the flaky test. Great.") - 1) / 2
    assert with_meta.sentiment == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({"people": "Ana", "project": 3, "topics": "x"}, id="wrong-types"),
        pytest.param({"emotional_valence": 7}, id="valence-out-of-range"),
        pytest.param({"emotional_valence": True}, id="valence-bool"),
        pytest.param({"people": [None, 4, "", "Ana"]}, id="mixed-people"),
    ],
)
def test_fallback_ignores_malformed_metadata(metadata: dict[str, Any]) -> None:
    """Metadata values of the wrong type or range are ignored, not trusted or fatal."""
    result = fallback_enrichment("Lunch with the team.", metadata=metadata)
    assert result.sentiment == sentiment("Lunch with the team.")
    assert set(result.entities) <= {"Ana"}


def test_fallback_uses_known_entities_and_full_names() -> None:
    """Known entities count at sentence start, and first names resolve to metadata full names."""
    result = fallback_enrichment(
        "Beacon beta is live. Priya sent cake.",
        metadata={"people": ["Priya Nair"]},
        known_entities={"Beacon"},
    )
    assert result.entities == ("Beacon", "Priya Nair")


@pytest.mark.parametrize(
    ("content", "goal"),
    [
        pytest.param("   ", "(empty memory)", id="blank"),
        pytest.param("...", "...", id="punctuation-only"),
        pytest.param(
            "one two three four five six seven eight nine ten eleven twelve thirteen",
            "one two three four five six seven eight nine ten eleven twelve",
            id="long",
        ),
        pytest.param("x" * 500, "x" * 200, id="one-huge-word"),
    ],
)
def test_goal_is_short_and_never_empty(content: str, goal: str) -> None:
    """The goal is the first clause cut to 12 words and 200 characters, never empty."""
    assert fallback_enrichment(content).goal == goal


@given(
    st.text(),
    st.dictionaries(
        st.sampled_from(["people", "project", "topics", "emotional_valence", "kind"]),
        st.none() | st.floats() | st.text() | st.lists(st.text() | st.integers(), max_size=4),
    ),
    st.lists(st.text(max_size=10), max_size=5),
)
def test_fallback_never_raises(content: str, metadata: dict[str, Any], known: list[str]) -> None:
    """Any content, metadata and known entities give a well-formed Enrichment."""
    result = fallback_enrichment(content, metadata=metadata, known_entities=known)
    assert result.goal
    assert -1.0 <= result.sentiment <= 1.0
    for items in (result.tasks, result.actions, result.entities, result.topics):
        assert len(items) <= 10 and all(item and len(item) <= 200 for item in items)
        assert len({item.casefold() for item in items}) == len(items)
