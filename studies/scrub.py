"""Scrubbing report text of the identifiers found in DICOM headers.

Identifiers are reduced to normalised tokens (name parts, ids, dates in common spellings) and kept only
as keyed hashes (``Study.identifier_hashes``); scrubbing hashes each word of the text the same way and
replaces matches with ``XXXX`` (the token de-identified report collections use).
"""

import re
from collections.abc import Iterable

from studies.pseudonyms import keyed_hash

MASK = "XXXX"
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*(?:[./][A-Za-z0-9]+)*")
_MIN_TOKEN = 2


def _norm(token: str) -> str:
    return token.strip().strip(".,;:'\"()").lower()


def identifier_tokens(
    *, names: Iterable[str] = (), ids: Iterable[str] = (), dates: Iterable[str] = ()
) -> set[str]:
    """Tokens worth scrubbing: each part of each name (DICOM ``^`` and spaces), whole ids, and each
    date (``YYYYMMDD``) in the spellings reports use (``YYYY-MM-DD``, ``MM/DD/YYYY``, ``DD.MM.YYYY``)."""
    tokens: set[str] = set()
    for name in names:
        for part in re.split(r"[\^\s,]+", str(name or "")):
            part = _norm(part)
            if len(part) >= _MIN_TOKEN and not part.isdigit():
                tokens.add(part)
    for ident in ids:
        ident = _norm(str(ident or ""))
        if len(ident) >= 3:
            tokens.add(ident)
    for date in dates:
        text = str(date or "").strip()[:8]
        if len(text) == 8 and text.isdigit():
            y, m, d = text[:4], text[4:6], text[6:8]
            tokens |= {text, f"{y}-{m}-{d}", f"{m}/{d}/{y}", f"{d}.{m}.{y}", f"{d}/{m}/{y}"}
    return tokens


def identifier_hashes(secret: str, tokens: Iterable[str]) -> list[str]:
    return sorted({keyed_hash(secret, "scrub", _norm(t)) for t in tokens if _norm(t)})


def scrub_text(text: str, *, secret: str, hashes: Iterable[str]) -> tuple[str, int]:
    """Replace every word of ``text`` whose keyed hash is in ``hashes`` with ``XXXX``.

    Returns the scrubbed text and the number of replacements.
    """
    wanted = set(hashes)
    if not wanted or not text:
        return text, 0
    count = 0

    def repl(match: re.Match) -> str:
        nonlocal count
        word = match.group(0)
        if keyed_hash(secret, "scrub", _norm(word)) in wanted:
            count += 1
            return MASK
        return word

    return _WORD.sub(repl, text), count


def scrub_plain(text: str, *, tokens: Iterable[str]) -> tuple[str, int]:
    """Scrub with identifiers at hand (same rules as ``scrub_text``, no hashing)."""
    wanted = {_norm(t) for t in tokens if _norm(t)}
    if not wanted or not text:
        return text, 0
    count = 0

    def repl(match: re.Match) -> str:
        nonlocal count
        if _norm(match.group(0)) in wanted:
            count += 1
            return MASK
        return match.group(0)

    return _WORD.sub(repl, text), count
