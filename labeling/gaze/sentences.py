"""Sentences of a dictation with their times, from a recording's transcript (pure: no database).

A transcript is the ``GazeRecording.transcript`` list of ``{"text", "start", "end"}`` (seconds from the
start of the dictation): words for REFLACX, where ``"."`` and ``","`` are their own rows, and phrases for
EGD-CXR.

- ``reflacx`` (words): the text is rebuilt by joining words with spaces (no space before punctuation);
  a sentence ends at a ``.``, ``?`` or ``!`` row (or a word ending with one); its time is
  ``[start of its first word, end of its last row]``.
- ``egd`` (phrases): each phrase is a sentence, except that a phrase holding several sentences is split
  at its sentence punctuation, each part's times interpolated by character position inside the phrase.

What cannot be used as given is said in ``problems`` and handled the plain way: no transcript → no
sentences; a transcript without sentence punctuation (REFLACX) → one sentence; words or phrases out of
time order → put in order of their start; overlapping times → kept; an item whose end is before its start
→ its end is set to its start. ``char_start``/``char_end`` index the rebuilt text (``text`` attribute
of ``Transcript``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

_END = re.compile(r"[.?!]$")
_SPLIT = re.compile(r"(?<=[.?!])\s+")
_PUNCT = {".", ",", "?", "!", ";", ":"}
_MAX_LISTED = 5


@dataclass
class Sentence:
    index: int
    text: str
    start: float
    end: float
    char_start: int
    char_end: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Transcript:
    text: str = ""
    sentences: list[Sentence] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def transcript_sentences(items: list[dict] | None, *, source_format: str) -> Transcript:
    """The sentences of ``items`` (see the module docstring); ``source_format`` is reflacx or egd."""
    out = Transcript()
    if not items:
        out.problems.append("transcript: missing or empty; sentence alignment skipped")
        return out
    rows = _checked(items, out.problems)
    if source_format == "egd":
        _phrases(rows, out)
    else:
        _words(rows, out)
    return out


def _checked(items: list[dict], problems: list[str]) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = []
    bad_order, overlaps, backwards = [], [], []
    last_start, last_end = float("-inf"), float("-inf")  # of the previous word (punctuation aside)
    for i, item in enumerate(items):
        text = str(item.get("text", "")).strip()
        start, end = float(item.get("start", 0.0)), float(item.get("end", 0.0))
        if end < start:
            backwards.append(i)
            end = start
        if text not in _PUNCT:
            if start < last_start:
                bad_order.append(i)
            elif start < last_end - 1e-6:
                overlaps.append(i)
            last_start, last_end = start, end
        rows.append((text, start, end))
    if backwards:
        problems.append(f"transcript: {len(backwards)} item(s) end before they start ({_items(backwards)})")
    if bad_order:
        problems.append(
            f"transcript: times out of order at {len(bad_order)} item(s) ({_items(bad_order)}); "
            "put in order of their start"
        )
        rows = _in_order(rows)
    if overlaps:
        problems.append(
            f"transcript: {len(overlaps)} item(s) overlap the previous one in time ({_items(overlaps)})"
        )
    return rows


def _in_order(rows: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Words sorted by start; each punctuation row stays right after the word it followed."""
    groups: list[list[tuple[str, float, float]]] = []
    for row in rows:
        if row[0] in _PUNCT and groups:
            groups[-1].append(row)
        else:
            groups.append([row])
    groups.sort(key=lambda g: g[0][1])
    return [row for group in groups for row in group]


def _items(indexes: list[int]) -> str:
    shown = ", ".join(f"#{i}" for i in indexes[:_MAX_LISTED])
    return shown + (" ..." if len(indexes) > _MAX_LISTED else "")


def _words(rows: list[tuple[str, float, float]], out: Transcript) -> None:
    text = ""
    current: list[tuple[int, int, float, float]] = []  # (char_start, char_end, start, end) per word
    for word, start, end in rows:
        if not word:
            continue
        if word in _PUNCT:
            text += word
            if current:
                current[-1] = (current[-1][0], len(text), current[-1][2], max(current[-1][3], end))
        else:
            text += ("" if not text else " ") + word
            current.append((len(text) - len(word), len(text), start, end))
        if current and _END.search(word):
            _close(out, text, current)
            current = []
    if current:
        _close(out, text, current)
    out.text = text
    if out.sentences and not any(_END.search(w) for w, _, _ in rows):
        out.problems.append("transcript: no sentence punctuation; the whole dictation is one sentence")


def _close(out: Transcript, text: str, words: list[tuple[int, int, float, float]]) -> None:
    char_start, char_end = words[0][0], words[-1][1]
    out.sentences.append(
        Sentence(
            index=len(out.sentences),
            text=text[char_start:char_end],
            start=min(w[2] for w in words),
            end=max(w[3] for w in words),
            char_start=char_start,
            char_end=char_end,
        )
    )


def _phrases(rows: list[tuple[str, float, float]], out: Transcript) -> None:
    text = ""
    for phrase, start, end in rows:
        if not phrase:
            continue
        base = len(text) + (1 if text else 0)
        text += (" " if text else "") + phrase
        offset = 0
        for part in _SPLIT.split(phrase):
            at = phrase.index(part, offset)
            offset = at + len(part)
            span = end - start
            out.sentences.append(
                Sentence(
                    index=len(out.sentences),
                    text=part,
                    start=start + span * at / len(phrase),
                    end=start + span * offset / len(phrase),
                    char_start=base + at,
                    char_end=base + offset,
                )
            )
    out.text = text
