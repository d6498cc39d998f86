"""The lexical fallback embedding: shape, normalisation, stability and similarity."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biomem.pipeline.embedding import (
    LEXICAL_EMBEDDING_MODEL,
    char_ngrams,
    cosine,
    lexical_embedding,
)

TEXT = "Met Ana and Kofi to plan the Atlas cutover; need to update the runbook before Friday."


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


@pytest.mark.parametrize(
    "dim",
    [pytest.param(768, id="default"), pytest.param(1, id="one"), pytest.param(1000, id="odd")],
)
def test_dimension_and_unit_norm(dim: int) -> None:
    """The vector has the requested length and unit L2 norm."""
    vector = lexical_embedding(TEXT, dim=dim)
    assert len(vector) == dim
    assert _norm(vector) == pytest.approx(1.0)


def test_default_dimension_is_768() -> None:
    """Without a dim the vector has 768 components."""
    assert len(lexical_embedding(TEXT)) == 768


@pytest.mark.parametrize(
    "text",
    [pytest.param("", id="empty"), pytest.param("  ...!? — ", id="no-words")],
)
def test_wordless_text_gives_zero_vector(text: str) -> None:
    """Text without words embeds to the zero vector of the requested length."""
    assert lexical_embedding(text, dim=16) == [0.0] * 16


def test_bad_dimension_raises() -> None:
    """A non-positive dimension is a programming error."""
    with pytest.raises(ValueError, match="dim"):
        lexical_embedding(TEXT, dim=0)


def test_char_ngrams_pad_words() -> None:
    """N-grams of sizes 3 to 5 run over the word padded with one space each side."""
    assert char_ngrams("ab") == [" ab", "ab ", " ab "]
    assert len(char_ngrams("word")) == 4 + 3 + 2


def test_vectors_are_pinned() -> None:
    """A known input keeps its exact vector; a change here needs a new LEXICAL_EMBEDDING_MODEL."""
    vector = lexical_embedding("ab", dim=64)
    third = 1 / math.sqrt(3)
    expected = [0.0] * 64
    expected[11], expected[32], expected[33] = -third, third, third
    assert vector == pytest.approx(expected)
    assert LEXICAL_EMBEDDING_MODEL == "lexical-char-ngram-v1"


def test_deterministic_across_processes() -> None:
    """Another interpreter with a different hash seed computes the same vector."""
    code = (
        "import json, sys; from biomem.pipeline.embedding import lexical_embedding; "
        "json.dump(lexical_embedding(sys.argv[1], dim=32), sys.stdout)"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code, TEXT],
            capture_output=True,
            check=True,
            text=True,
            timeout=60,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert lexical_embedding(TEXT, dim=32) == pytest.approx(json.loads(outputs.pop()))


def test_case_and_punctuation_do_not_matter() -> None:
    """Lowercasing and word splitting make case and punctuation irrelevant."""
    assert lexical_embedding("Atlas cutover!") == lexical_embedding("atlas, CUTOVER")


def test_similar_texts_are_closer_than_unrelated() -> None:
    """Texts sharing words and stems score higher than texts sharing none."""
    anchor = lexical_embedding("Rehearsed the Atlas cutover steps with Priya")
    similar = lexical_embedding("Atlas cutover rehearsal went fine, Priya happy")
    unrelated = lexical_embedding("Ella lost a tooth at breakfast")
    assert cosine(anchor, similar) > cosine(anchor, unrelated) + 0.2
    assert cosine(anchor, anchor) == pytest.approx(1.0)


def test_repetition_is_damped() -> None:
    """Sublinear tf: repeating a word many times does not drown out the others."""
    once = lexical_embedding("budget review")
    many = lexical_embedding("budget " * 50 + "review")
    review = lexical_embedding("review")
    assert cosine(many, review) > 0.3
    assert cosine(once, many) > 0.8


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param([1.0, 0.0], [0.0, 2.0], 0.0, id="orthogonal"),
        pytest.param([1.0, 1.0], [2.0, 2.0], 1.0, id="parallel"),
        pytest.param([1.0, 0.0], [-3.0, 0.0], -1.0, id="opposite"),
        pytest.param([0.0, 0.0], [1.0, 0.0], 0.0, id="zero-left"),
        pytest.param([1.0, 0.0], [0.0, 0.0], 0.0, id="zero-right"),
    ],
)
def test_cosine(a: list[float], b: list[float], expected: float) -> None:
    """Cosine is the normalised dot product, 0.0 when either vector is zero."""
    assert cosine(a, b) == pytest.approx(expected)


def test_cosine_rejects_mismatched_lengths() -> None:
    """Vectors of different lengths cannot be compared."""
    with pytest.raises(ValueError, match="length"):
        cosine([1.0], [1.0, 0.0])


@given(st.text(max_size=300))
def test_any_text_embeds_to_unit_or_zero(text: str) -> None:
    """Every text embeds to a unit vector, or to zeros when it has no word."""
    vector = lexical_embedding(text, dim=64)
    assert len(vector) == 64
    assert _norm(vector) == pytest.approx(1.0) or not any(vector)
