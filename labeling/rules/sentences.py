"""Section selection and sentence splitting with exact character offsets (pure Python, no models)."""

import re

# Sections that describe the patient or the exam, never the image: no proposals come from them.
HISTORY_SECTIONS = frozenset(
    {
        "indication", "indications", "comparison", "comparisons", "history", "clinical history",
        "clinicalinformation", "clinical information", "clinical_information", "reason", "reason for exam",
        "technique", "procedure", "examination", "exam", "title", "image", "mesh", "problems", "uid",
    }
)  # fmt: skip

MAX_SECTION_CHARS = 200_000  # text past this point of one section is not read (huge or garbage input)

# A sentence ends at . ! ? followed by white space (or the end), at a blank line, or before a numbered item
# ("1. ... 2. ..."). A period inside a number (1.2 cm) or an abbreviation (e.g. vs. Dr.) does not end one.
_ABBREV = re.compile(r"(?:\b(?:e\.g|i\.e|vs|dr|mr|mrs|ms|approx|cf|fig)|\b[a-z])\.$", re.I)
_BOUNDARY = re.compile(r"[.!?]+(?=\s|$)|\n\s*\n|\n(?=\s*(?:\d{1,2}[.)]|[-*•])\s)")
_LIST_NUMBER = re.compile(r"\s*\d{1,2}")
_NUMBERED = re.compile(r"(?<![\w.])\d{1,2}[.)]\s+(?=[A-Za-z])")


def section_items(sections: dict) -> list[tuple[str, str]]:
    """(name, text) of the sections proposals may come from, in the given order; odd values skipped."""
    out = []
    if not isinstance(sections, dict):
        return out
    for name, text in sections.items():
        if not isinstance(name, str):
            continue
        if name.strip().lower().replace("-", " ") in HISTORY_SECTIONS:
            continue
        if isinstance(text, str) and text.strip():
            out.append((name, text))
    return out


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of the sentences of ``text``; ``text[start:end]`` is stripped of white
    space and includes the closing punctuation. Leading list numbers ("1. ") stay outside the span."""
    spans: list[tuple[int, int]] = []
    if not text:
        return spans
    limit = min(len(text), MAX_SECTION_CHARS)
    start = 0
    for m in _BOUNDARY.finditer(text, 0, limit):
        end = m.end() if m.group(0)[0] in ".!?" else m.start()
        if m.group(0)[0] == "." and _ABBREV.search(text, max(0, m.start() - 6), m.start() + 1):
            # "e.g." or "vs." or a lone initial: not a boundary, unless a capital letter follows after
            # a lone lower-case letter (rare); keep it simple and go on.
            continue
        if _LIST_NUMBER.fullmatch(text, start, m.start()):
            continue  # "1." opening a numbered item
        _add(text, start, end, spans)
        start = m.end()
    _add(text, start, limit, spans)
    return spans


def _add(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    m = _NUMBERED.match(text, start, end)
    if m:
        start = m.end()
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start and any(c.isalnum() for c in text[start:end]):
        spans.append((start, end))
