"""Text scanners for the data gate: PII and secrets (never echoed), and normalisation.

A finding is reported by kind and line only: the matched text never leaves this module.
"""

from __future__ import annotations

import hashlib
import re

from llmops.redact import SECRET_PATTERNS

# Every variable-length part is bounded (an address's limits: 64 before the @, labels of 63,
# at most 8 of them before the top-level domain), so a match attempt costs a constant and a
# scan is linear in the text. An unbounded `+` before the `@` makes every start position in a
# long run of address characters scan to the run's end: quadratic in the field's length.
# The tokens' open-ended `{20,}` and the like stay linear: such an attempt either matches
# (and `finditer` continues after the match) or fails within its minimum length.
# The secret kinds are the patterns that `llmops.redact` removes from everything the
# pipeline logs, uploads or prints: one definition of what a credential looks like.
PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,63}",
    "phone": r"(?<![\w+])\+?\(?\d{1,4}\)?(?:[ .-]\d{2,4}){2,4}(?![\w-])",
    "card": r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)",
    **SECRET_PATTERNS,
}
PII_KINDS = tuple(PATTERNS)
_COMPILED = {k: re.compile(p) for k, p in PATTERNS.items()}
# Cheap pre-filter: every pattern needs one of these characters or a long digit run (a
# shape added to SECRET_PATTERNS needs its prefix here, or the gate never looks for it).
_MAYBE = re.compile(r"[@]|\d{3}|AKIA|ASIA|AIza|-----BEGIN|gl[a-z]{2,5}-|gh[pousr]_|xox|sk-"
                    r"|hf_|_token=|(?i:bearer )")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def pii_kinds(text: str, enabled: frozenset[str] = frozenset(PII_KINDS),
              allow: re.Pattern[str] | None = None) -> set[str]:
    """Kinds of PII or secrets found in `text` (card numbers must pass Luhn)."""
    if not _MAYBE.search(text):
        return set()
    found: set[str] = set()
    for kind in enabled:
        for match in _COMPILED[kind].finditer(text):
            value = match.group()
            if allow is not None and allow.fullmatch(value):
                continue
            digits = re.sub(r"\D", "", value)
            if kind == "card" and not (13 <= len(digits) <= 19 and luhn_ok(digits)):
                continue
            if kind == "phone" and not 9 <= len(digits) <= 15:
                continue
            found.add(kind)
            break
    return found


def normalised(text: str) -> str:
    """Case and whitespace folded, for duplicate and leakage comparisons."""
    return " ".join(text.lower().split())


def fingerprint(text: str) -> bytes:
    """A compact digest of normalised text (8 bytes keeps 1M rows' sets small)."""
    return hashlib.blake2b(normalised(text).encode(), digest_size=8).digest()
