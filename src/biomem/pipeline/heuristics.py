"""Heuristic enrichment, for when the LLM is down.

Everything here is deterministic and cheap: keywords by frequency, entities by
capitalisation, sentiment from a small lexicon, tasks and actions from marker
phrases. The caller stores the result with ``source='fallback'`` and has the
LLM redo it later, so the aim is "useful and never wrong-shaped", not "good".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from biomem.pipeline.enrichment import MAX_CHARS, MAX_ITEMS, Enrichment

__all__ = ["entities", "fallback_enrichment", "keywords", "sentiment"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS: Final = _words("""
    a about above after again against all also am an and any are around as at back be because
    been before being below between both but by can cannot could did do does doing done down
    during each either else even ever every few for from further get gets getting go goes going
    got had has have having he her here hers herself him himself his how however i if in into is
    it its itself just least less let like lot lots made make many may me might mine more most
    much must my myself near need needs no nor not now of off ok okay on once one only or other
    our ours ourselves out over own per quite rather really same she should since so some still
    such than that the their theirs them themselves then there these they this those though
    through to today tomorrow tonight too under until up upon us very via was we well were what
    when where which while who whom whose why will with within without would yes yesterday yet
    you your yours yourself bit thing things way todo
    i'm i've i'd i'll we're we've we'd we'll you're you've they're they've isn't aren't wasn't
    weren't don't doesn't didn't can't couldn't won't wouldn't shouldn't haven't hasn't hadn't
""")
_PRONOUN_I: Final = _words("i i'm i've i'd i'll")
_CALENDAR: Final = _words("""
    monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri
    sat sun january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec
""")
_NOT_NAMES: Final = _PRONOUN_I | _CALENDAR
_POSITIVE: Final = _words("""
    great good nice happy glad relieved proud love loved lovely fixed launched celebrate
    celebrated celebration excited exciting fun enjoy enjoyed wonderful amazing awesome fantastic
    excellent success successful succeeded win won smooth smoothly calm productive progress
    finished shipped solved resolved thanks thankful grateful appreciate appreciated helpful best
    better beautiful laugh laughed laughing smile smiled smiling delighted pleased satisfied
    confident energised energized rested refreshed inspired inspiring praised kudos congrats
    joy joyful peaceful relaxed relaxing cosy cozy sweet brilliant perfect easy stable promoted
    approved nailed breakthrough hopeful optimistic motivated delicious milestone unblocked
    confetti relief accepted merged fix thrilled yay hooray cheers thank-you high-fived
""")
_NEGATIVE: Final = _words("""
    stress stressed stressful worried worry worrying anxious anxiety failed fail failing failure
    crash crashed bug broken broke late tired exhausted angry annoyed annoying frustrated
    frustrating sick ill blocker blocked stuck sad upset disappointed disappointing terrible
    awful bad worse worst horrible problem outage incident error lost losing missed delay delayed
    overdue pain painful hurt headache conflict tense tension nervous scared afraid fear panic
    lonely bored boring mess messy chaos chaotic overwhelmed overwhelming burnout slow regression
    rollback complaint complain complained hate hated rude unfair wrong mistake sorry regret
    embarrassed awkward guilty badly insomnia fever flu injured cancelled canceled postponed
    rejected difficult tough struggle struggled struggling confused confusing dread drained
    grumpy
""")
_NEGATORS: Final = _words("""
    not no never nothing none nobody neither nor without hardly barely cannot dont didnt doesnt
    isnt wasnt arent werent cant wont couldnt shouldnt wouldnt havent hasnt aint
""")
_INTENSIFIERS: Final = _words("very really so extremely super incredibly totally truly deeply")
_ACTION_VERBS: Final = _words("""
    met sent wrote read ran went took made had got gave bought built brought caught chose did drew
    drove ate found flew forgot heard held kept led left paid rode said saw sold spent spoke swam
    taught told threw put began split drank sang slept won
""")
# "-ed" words that open a clause as a state, not as something the writer did.
_STATES: Final = _words("""
    tired excited worried stressed relieved bored annoyed exhausted frustrated pleased surprised
    scared confused disappointed overwhelmed thrilled delighted embarrassed interested blocked
    related based used supposed
""")
_TITLES: Final = _words("dr mr mrs ms prof st mt")
_TITLE_DOT = re.compile(r"\b(?:dr|mr|mrs|ms|prof|st|mt)\.$", re.IGNORECASE)
_CONNECTORS: Final = _words("of the de da del der van von la le du")
_SKIPPABLE: Final = _words("i we just finally also then already quickly and")
_OBLIGATION = re.compile(
    r"\b(?:needs? to|ha(?:ve|s) to|must|should|to-?do|remember to|don'?t forget|do not forget)\b",
    re.IGNORECASE,
)
# Words: unicode letters/digits, inner hyphens and apostrophes kept ("sign-off", "don't").
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_CLAUSE_END = re.compile(r"[.!?…]+(?=\s|$)|[;\n]+")
_CONJUNCTION = re.compile(r",\s*(?:and then|but|then|so|and)\s+", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
# Negation and intensifiers reach no further than the clause they are in.
_SENTIMENT_SCOPE = re.compile(r"[.!?;,:\n]+")


def keywords(text: str, *, limit: int = 8) -> list[str]:
    """Return the ``limit`` most frequent non-stopword words, ties by first position."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for word in _tokens(text):
        if len(word) < 2 or word in STOPWORDS or not any(c.isalpha() for c in word):
            continue
        counts[word] += 1
        first.setdefault(word, len(first))
    ranked = sorted(counts, key=lambda word: (-counts[word], first[word]))
    return ranked[: max(limit, 0)]


def entities(text: str, *, known: Iterable[str] = ()) -> list[str]:
    """Return named things in ``text``, in order of first appearance.

    Capitalised words and runs of them count unless they open a sentence
    (there capitals say nothing) or are "I", weekdays or months; ``known``
    entities (recurring in the corpus) count wherever they appear, in any case.
    """
    found: list[tuple[int, str]] = []
    folded = text.casefold()
    for item in known:
        name = _SPACES.sub(" ", item).strip()
        # The substring test is a cheap filter: most known names are absent from a memory.
        if not name or name.casefold() in _NOT_NAMES or name.casefold() not in folded:
            continue
        match = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE)
        if match:
            found.append((match.start(), name))
    words = list(_WORD.finditer(text))
    initial = [_starts_sentence(text, match.start()) for match in words]
    # A capitalised word that also appears capitalised mid-sentence is a name even
    # when it opens a sentence.
    mid_caps = {
        _strip_possessive(m.group()).casefold()
        for m, first in zip(words, initial, strict=True)
        if not first and m.group()[0].isupper()
    }
    usable = [
        _is_name_word(match.group(), first, mid_caps)
        for match, first in zip(words, initial, strict=True)
    ]
    index = 0
    while index < len(words):
        if not usable[index]:
            index += 1
            continue
        end = index
        while (following := _next_in_run(text, words, usable, end)) is not None:
            end = following
        found.extend(_span_entity(text, words[index : end + 1]))
        index = end + 1
    found.sort(key=lambda item: (item[0], -len(item[1])))
    return _dedupe(name for _, name in found)


def sentiment(text: str) -> float:
    """Return the lexicon sentiment of ``text`` in (-1, 1); 0.0 when neutral.

    Each lexicon word scores 1, times 1.5 after an intensifier, flipped when a
    negator is among the 3 words before it. The result is
    ``(pos - neg) / (pos + neg + 1)``: bounded without clamping, and damped for
    short texts, where one word is weak evidence.
    """
    positive = negative = 0.0
    for clause in _SENTIMENT_SCOPE.split(text):
        tokens = _tokens(clause)
        for index, token in enumerate(tokens):
            polarity = _polarity(token)
            if polarity == 0:
                continue
            before = tokens[max(index - 3, 0) : index]
            weight = 1.5 if any(t in _INTENSIFIERS for t in before[-2:]) else 1.0
            if _negated(before):
                polarity = -polarity
            if polarity > 0:
                positive += weight
            else:
                negative += weight
    return (positive - negative) / (positive + negative + 1.0)


def fallback_enrichment(
    content: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    known_entities: Iterable[str] = (),
) -> Enrichment:
    """Return a heuristic :class:`Enrichment` of one memory; never raises for any input.

    Args:
        content: the memory's text.
        metadata: its metadata; ``people``, ``project``, ``topics`` and
            ``emotional_valence`` are used when well-typed, ignored otherwise.
        known_entities: entities seen at least twice before in the corpus.
    """
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    sentences = [s.strip() for s in _CLAUSE_END.split(content) if s.strip()]
    clauses = [c.strip() for s in sentences for c in _CONJUNCTION.split(s) if c.strip()]
    people = _strings(meta.get("people"))
    found = [_full_name(name, people) for name in entities(content, known=known_entities)]
    project = meta.get("project")
    found += [*people, *([project] if isinstance(project, str) else [])]
    topics = _strings(meta.get("topics")) or keywords(content, limit=3)
    score = sentiment(content)
    valence = meta.get("emotional_valence")
    if isinstance(valence, int | float) and not isinstance(valence, bool) and -1 <= valence <= 1:
        score = (score + float(valence)) / 2
    return Enrichment(
        goal=_goal(sentences[0] if sentences else content),
        tasks=tuple(_dedupe(c for c in clauses if _OBLIGATION.search(c.replace("’", "'")))),
        actions=tuple(_dedupe(a for c in clauses if (a := _action(c)) is not None)),
        entities=tuple(_dedupe(found)),
        topics=tuple(_dedupe(topics)),
        sentiment=round(min(max(score, -1.0), 1.0), 3),
    )


def _tokens(text: str) -> list[str]:
    return [_strip_possessive(m.group().lower().replace("’", "'")) for m in _WORD.finditer(text)]


def _strip_possessive(word: str) -> str:
    for suffix in ("'s", "’s", "'", "’"):
        if word.endswith(suffix) and len(word) > len(suffix):
            return word[: -len(suffix)]
    return word


def _starts_sentence(text: str, start: int) -> bool:
    # A bounded look-back keeps this linear in the length of long memories.
    before = text[max(start - 32, 0) : start].rstrip(" \t\"'“‘(*•-–—")
    if not before:
        return True
    return before[-1] in ".!?…\n" and not _TITLE_DOT.search(before[-6:])


def _is_name_word(token: str, initial: bool, mid_caps: set[str]) -> bool:
    word = _strip_possessive(token)
    return (
        word[0].isupper()
        and word.casefold() not in _NOT_NAMES
        and word.rstrip("s").casefold() not in _CALENDAR  # "Fridays"
        and (not initial or word.casefold() in mid_caps)
    )


def _next_in_run(
    text: str, words: list[re.Match[str]], usable: list[bool], last: int
) -> int | None:
    """Return the index of the name word continuing the run ending at ``last``, if any."""
    if words[last].group() != _strip_possessive(words[last].group()):
        return None  # "Daniel's sister": a possessive ends the name
    # Directly adjacent, or across one or two connectors ("Remains of the Day").
    for index in range(last + 1, min(last + 4, len(words))):
        gap = text[words[index - 1].end() : words[index].start()]
        titled = gap.startswith(".") and words[index - 1].group().casefold() in _TITLES
        if (gap[1:] if titled else gap).strip(" \t"):
            return None
        if usable[index]:
            return index
        if words[index].group() not in _CONNECTORS:
            return None
    return None


def _span_entity(text: str, run: list[re.Match[str]]) -> list[tuple[int, str]]:
    """Turn a run of name words into one entity, shorn of stopwords at its ends."""
    while run and run[0].group().casefold() in STOPWORDS:
        run = run[1:]
    while run and _strip_possessive(run[-1].group()).casefold() in STOPWORDS:
        run = run[:-1]
    if not run:
        return []
    end = run[-1].start() + len(_strip_possessive(run[-1].group()))
    name = _SPACES.sub(" ", text[run[0].start() : end])
    return [(run[0].start(), name)] if len(name) > 1 else []


def _negated(before: list[str]) -> bool:
    # "trying not to panic" still worries: a negator before "to" negates no feeling.
    return any(
        (token in _NEGATORS or token.endswith("n't")) and before[index + 1 : index + 2] != ["to"]
        for index, token in enumerate(before)
    )


def _polarity(token: str) -> int:
    for word in (token, token[:-1] if token.endswith("s") else token):
        if word in _POSITIVE:
            return 1
        if word in _NEGATIVE:
            return -1
    return 0


def _action(clause: str) -> str | None:
    """Return the part of ``clause`` that says what the writer did, if it says so."""
    # "On the train: answered emails" — the action may follow a scene-setting colon.
    for part in (clause, *clause.split(":")[1:2]):
        tokens = _tokens(part)[:4]
        while tokens and tokens[0] in _SKIPPABLE:
            tokens = tokens[1:]
        verb = tokens[0] if tokens else ""
        regular = verb.endswith("ed") and not verb.endswith("eed") and len(verb) > 4
        if verb in _ACTION_VERBS or (regular and verb not in _STATES):
            return part.strip()
    return None


def _goal(sentence: str) -> str:
    """Return the first 12 words of ``sentence``, or a placeholder for blank content."""
    goal = " ".join(sentence.split()[:12]).rstrip(",:;-–— ")
    if len(goal) > MAX_CHARS:
        goal = goal[:MAX_CHARS].rsplit(" ", 1)[0] if " " in goal[:MAX_CHARS] else goal[:MAX_CHARS]
    return goal or " ".join(sentence.split())[:MAX_CHARS] or "(empty memory)"


def _full_name(name: str, people: list[str]) -> str:
    """Map "Priya" to "Priya Nair" when the metadata names her in full."""
    for person in people:
        if name.casefold() in person.casefold().split():
            return person
    return name


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        return []
    return [
        _SPACES.sub(" ", item).strip() for item in value if isinstance(item, str) and item.strip()
    ]


def _dedupe(items: Iterable[str]) -> list[str]:
    """Return up to MAX_ITEMS trimmed, non-empty, case-insensitively distinct strings."""
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = _SPACES.sub(" ", item).strip()[:MAX_CHARS].rstrip()
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
        if len(out) == MAX_ITEMS:
            break
    return out
