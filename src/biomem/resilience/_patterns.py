"""What secrets look like: keys that name one, and credentials and PII inside text.

The building blocks of :func:`biomem.resilience.redact.redact_text`, which runs
the text patterns in order, each family behind a cheap substring test, and whose
module docstring lists what is masked and how. Import from
:mod:`biomem.resilience.redact`.
"""

from __future__ import annotations

import itertools
import re

MASK = "***"


def _tag(kind: str) -> str:
    return f"[REDACTED:{kind}]"


# --- secret-named keys -----------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SECRET_WORDS = _words(
    "password passwd pwd pass passphrase secret secrets token apikey authorization auth"
    " cookie cookies session sessionid credential credentials creds dsn privatekey"
    " accesskey secretkey jwt bearer otp"
)
_SECRET_PAIRS = frozenset(
    (w, "key") for w in ("api", "private", "access", "account", "signing", "encryption", "master")
)
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "apikey", "accesskey", "sessionid")
_SECRET_PREFIXES = ("password", "passwd", "apikey")
# A trailing word that describes the secret rather than holding it:
# token_count, password_file, private_key_path, auth_url stay readable.
_METADATA_WORDS = _words(
    "count counts num number total max min limit limits len length size used usage ttl type"
    " kind mode method scheme url uri endpoint host file path dir env var name enabled"
    " required present configured provided valid expires expiry expiration age error errors"
    " policy version source field"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")


def _names_secret(key: str) -> bool:
    """Whether ``key`` names a secret (``db_password``), not describes one (``token_count``)."""
    words = [w.lower() for w in _NON_ALNUM.split(_CAMEL.sub("_", key)) if w]
    return not (len(words) > 1 and words[-1] in _METADATA_WORDS) and any(
        w in _SECRET_WORDS
        or w.endswith(_SECRET_SUFFIXES)
        or w.startswith(_SECRET_PREFIXES)
        or (w, nxt) in _SECRET_PAIRS
        for w, nxt in itertools.pairwise([*words, ""])
    )


# --- patterns in free text ---------------------------------------------------------

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")
_PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:.*?-----END[A-Z0-9 ]{0,40}-----|.*)",  # unterminated: mask to the end
    re.DOTALL,
)
# The password runs to the last "@" before the host: unencoded "@" in it stays masked.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@?#]*:)[^\s/?#]+@")
_SLACK_WEBHOOK = re.compile(r"(?P<head>hooks\.slack\.com/(?:services|workflows|triggers)/)[\w/-]+")
_COOKIE = re.compile(r"(?P<key>(?<![\w-])(?:set-)?cookie[ \t]*:[ \t]*)[^\s\"'][^\r\n\"']*", re.I)
_KV = re.compile(
    r"(?P<key>(?:pass(?:word|wd|phrase)|(?<![a-z])pass|pwd|secret|token|api[_-]?key"
    r"|(?:access|private|account|signing|encryption|master|secret)[_-]?key|authorization"
    r"|(?<![a-z])auth|cookie|session(?:[_-]?id)?|credentials?|creds|dsn)"
    r"(?:\\?[\"'])?\s*[:=]\s*)"
    r"(?P<scheme>(?:bearer|basic|token|digest|negotiate|ntlm)\s+)?"
    r"(?P<val>\\\"(?:[^\"\\]|\\[^\"])*(?:\\\")?|\"(?:[^\"\\\n]|\\.)*\"?|'(?:[^'\\\n]|\\.)*'?"
    r"|[^\s&\"'][^\s&]*)",
    re.I,
)
_KV_HINT = re.compile(r"pass|pwd|secret|token|key|auth|cookie|session|cred|dsn")  # on lower()
_AUTH = re.compile(
    r"\b(?P<scheme>[Bb]earer|BEARER|[Bb]asic|BASIC)[ \t]+(?P<tok>[\w.~+/-]+=*)", re.A
)
_AWS_SECRET = re.compile(
    r"(?P<key>aws_?secret_?access_?key[\"']?\s*[:=]?\s*[\"']?)[A-Za-z0-9/+=]{40}(?![\w/+=])", re.I
)
_TOKENS = re.compile(
    r"(?<![\w-])(?:(?P<jwt>eyJ[\w-]{2,}\.[\w-]{2,}\.[\w-]*)"
    r"|(?P<api_key>sk-[\w-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|AIza[\w-]{35})"
    r"|(?P<aws_key_id>A[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9]))"
    r"|(?P<github_token>gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,})"
    r"|(?P<slack_token>xox[abprs]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}))",
    re.A,
)
_EMAIL = re.compile(
    r"(?<![\w.%+-])(?<!//)[\w.%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])", re.A
)
_SSN = re.compile(r"(?<![\w-])(?!000|666|9)\d{3}-(?!00)\d\d-(?!0000)\d{4}(?![\w-])", re.A)
# Digit groups joined by single spaces or dashes; not part of a decimal, word or UUID.
_DIGIT_RUN = re.compile(r"(?<![\w.+-])(?=(?:[ -]?\d){13})\d++(?:[ -]\d++)*+(?![\w]|\.\d|-\w)", re.A)
_DIGITS = re.compile(r"\d+", re.A)
_TOKEN_HINTS = ("eyJ", "sk-", "k_", "AIza", "IA", "gh", "github_pat_", "xox", "xapp-")
_E164 = re.compile(r"(?<![\w+])\+[1-9]\d{0,14}(?:[ -]?\(\d{1,4}\)|[ -]\d{1,14}){0,6}(?!\w)", re.A)
_US_PHONE = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\([2-9]\d\d\)[ .-]?|[2-9]\d\d[.-])\d{3}[.-]\d{4}(?![\w-]|\.\d)",
    re.A,
)


def _kv(m: re.Match[str]) -> str:
    val = m["val"]
    quote = next((q for q in ('\\"', '"', "'") if val.startswith(q)), "")
    return f"{m['key']}{m['scheme'] or ''}{quote}{MASK}{quote}"


def _auth(m: re.Match[str]) -> str:
    scheme, tok = m["scheme"], m["tok"]
    # "Bearer x" is always a credential; "basic usage" or "the bearer of" is prose.
    credential = (
        scheme == "Bearer"
        or len(tok) >= 20
        or (len(tok) >= 8 and not (tok.isalpha() and (tok[1:].islower() or tok.isupper())))
    )
    return f"{scheme} {_tag(scheme.lower())}" if credential else m.group()


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _cards(m: re.Match[str]) -> str:
    """Mask the Luhn-valid card numbers laid out as cards inside a run of digit groups."""
    run = m.group()
    groups = [(g.start(), g.end()) for g in _DIGITS.finditer(run)]
    found: list[tuple[int, int, int]] = []
    for i, (start, end) in enumerate(groups):
        if end - start != 4 and not 13 <= end - start <= 19:
            continue  # every usual layout starts with four digits or is one block
        lens: list[int] = []
        for a, b in groups[i : i + 19]:  # 19 digits never span more than 19 groups
            lens.append(b - a)
            n = sum(lens)
            if n > 19:
                break
            # One block, fours (4-4-4-4, 4-4-4-4-3 …) or 4-6-5 / 4-6-4: a window that
            # straddles unrelated numbers ("3456 666-12-3456") is chance, not a card.
            usual = (
                len(lens) == 1
                or lens in ([4, 6, 5], [4, 6, 4])
                or (set(lens[:-1]) == {4} and lens[-1] <= 4)
            )
            if n < 13 or not usual:
                continue
            digits = "".join(run[x:y] for x, y in groups[i : i + len(lens)])
            if digits[0] in "23456" and _luhn(digits):
                found.append((-n, i, i + len(lens) - 1))
    used = [False] * len(groups)
    taken: list[tuple[int, int]] = []
    for _, i, j in sorted(found):  # longest first, then leftmost
        if not any(used[i : j + 1]):
            used[i : j + 1] = [True] * (j + 1 - i)
            taken.append((i, j))
    parts, pos = [], 0
    for i, j in sorted(taken):
        parts += [run[pos : groups[i][0]], _tag("card")]
        pos = groups[j][1]
    return "".join([*parts, run[pos:]])


def _e164(m: re.Match[str]) -> str:
    """Mask at most 15 digits: a number that merely follows the phone stays."""
    text, count, end = m.group(), 0, 0
    for g in _DIGITS.finditer(text):
        if count + len(g.group()) > 15:
            break
        count += len(g.group())
        end = g.end() + (text[g.end() : g.end() + 1] == ")")
    return _tag("phone") + text[end:] if count >= 8 else text
