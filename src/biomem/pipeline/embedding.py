"""The lexical fallback embedding: hashed character n-grams, for when the LLM is down.

The vector is a signed feature-hashing of the character 3-, 4- and 5-grams of
each word padded with spaces (``" word "``), so words sharing stems, typos and
inflections land near each other. Counts are damped to ``1 + log(count)``
(sublinear tf) so one repeated word cannot dominate, and the vector is
L2-normalised so a dot product is a cosine.

The hash is BLAKE2b, not :func:`hash`, whose per-process salt would make
vectors differ between runs. The sign comes from the top bit and the bucket
from the remainder, so collisions cancel out on average instead of piling up.

These vectors live in their own space: comparing one with a model embedding of
the same dimension is meaningless, which is why callers should store
:data:`LEXICAL_EMBEDDING_MODEL` next to each vector and re-embed once the model
is back.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from hashlib import blake2b
from typing import Final

__all__ = [
    "DEFAULT_DIM",
    "LEXICAL_EMBEDDING_MODEL",
    "NGRAM_SIZES",
    "char_ngrams",
    "cosine",
    "lexical_embedding",
]

DEFAULT_DIM: Final = 768
NGRAM_SIZES: Final = (3, 4, 5)
# Names the algorithm and its parameters: bump it whenever the vectors change.
LEXICAL_EMBEDDING_MODEL: Final = "lexical-char-ngram-v1"

_WORD = re.compile(r"[^\W_]+")
_SIGN_BIT: Final = 1 << 63


def char_ngrams(word: str) -> list[str]:
    """Return the 3-, 4- and 5-grams of ``" word "``, in order, repeats kept.

    Args:
        word: one lowercased word; a word too short for a size yields none of it.
    """
    padded = f" {word} "
    return [
        padded[start : start + size]
        for size in NGRAM_SIZES
        for start in range(len(padded) - size + 1)
    ]


@functools.lru_cache(maxsize=1 << 16)
def _gram_hash(gram: str) -> int:
    # A vocabulary's n-grams repeat from memory to memory: hashing each once
    # per process makes the fallback several times faster on a large backlog.
    return int.from_bytes(blake2b(gram.encode(), digest_size=8).digest(), "little")


def lexical_embedding(text: str, *, dim: int = DEFAULT_DIM) -> list[float]:
    """Return the L2-normalised hashed n-gram vector of ``text``.

    Args:
        text: any text; without a word in it the result is the zero vector.
        dim: the vector's length.

    Raises:
        ValueError: ``dim`` is not positive.
    """
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    # Counting words first hashes each distinct n-gram once, however often it repeats.
    grams: Counter[str] = Counter()
    for word, count in Counter(_WORD.findall(text.lower())).items():
        for gram in char_ngrams(word):
            grams[gram] += count
    # Sparse until the end: a text touches a few hundred of the buckets, and
    # the norm over those alone is the same exact sum (fsum) as over all.
    buckets: dict[int, float] = {}
    for gram, count in grams.items():
        value = _gram_hash(gram)
        weight = 1.0 + math.log(count)
        index = value % dim
        buckets[index] = buckets.get(index, 0.0) + (-weight if value & _SIGN_BIT else weight)
    norm = math.sqrt(math.fsum(x * x for x in buckets.values()))
    vector = [0.0] * dim
    if norm == 0.0:  # no words, or (rarely) every feature cancelled out
        return vector
    for index, x in buckets.items():
        vector[index] = x / norm
    return vector


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Return the cosine similarity of ``a`` and ``b``; 0.0 when either is all zeros.

    Raises:
        ValueError: the vectors differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"vectors differ in length: {len(a)} != {len(b)}")
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm_a = math.sqrt(math.fsum(x * x for x in a))
    norm_b = math.sqrt(math.fsum(y * y for y in b))
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    # Rounding can push a self-similarity a hair past 1.
    return max(-1.0, min(1.0, dot / (norm_a * norm_b)))
