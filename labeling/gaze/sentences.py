"""Sentences of a dictation with their times, from a recording's transcript (pure: no database).

A transcript is the ``GazeRecording.transcript`` list of ``{"text", "start", "end"}`` items (seconds from
the start of the dictation), in the order of the file. Both formats are read as one *word sequence*:

- ``reflacx`` (``timestamps_transcription.csv``): one word per row; ``"."`` and ``","`` are rows of their
  own, spoken ("period", "comma") and timed like words.
- ``egd`` (``transcript.json`` ``time_stamped_text``): one item per word recognised by Google
  Speech-to-Text with automatic punctuation, its punctuation attached (``"enlarged."``). A phrase that
  holds several words (the dataset's validation calls them "type B errors", left by the manual
  correction) is split at whitespace, each word's times interpolated by its character position inside
  the phrase.

Guarantees:

- The text is rebuilt by joining the items with single spaces, except that an item made only of
  ``. , : ; ? !`` is written without a space before it and joins the word before it (the REFLACX
  authors' ``find_fixations_all_sentences.py`` adds no space before ``.``, ``,`` and ``:``); such an item
  before the first word is left out (reported). ``char_start``/``char_end`` of every word and sentence
  index that text (``Transcript.text``).
- A sentence ends at the first word that ends with ``.``, ``?`` or ``!`` (closing quotes or brackets
  after it allowed), i.e. at a REFLACX ``"."`` row or an EGD-CXR ``"word."`` phrase. Its ``start`` is the
  begin of its first word and its ``end`` the end of its last item (the ``"."`` row for REFLACX: the
  authors' ``last_end_timestamp``), never before its start. Word times are never re-interpolated across
  words; ``word_start``/``word_end`` index ``Transcript.words``, where each word keeps its times.
- Words after the last sentence end form a last sentence with ``closed`` False, and the recording gets
  a problem that says how many words it holds. (The REFLACX authors' code makes no sentence heatmap for
  them, as it makes one only at a ``"."`` row; a definition following them can drop unclosed sentences.
  They are kept by default because an unfinished last sentence still names findings.)
- A transcript without any sentence end is one unclosed sentence, reported as unpunctuated; a sentence
  of more than ``LONG_RUN_WORDS`` words or ``LONG_RUN_S`` seconds is kept whole and reported.
- Items are used in file order (the order of the dictation, as both datasets' authors read them); an
  item that starts before the previous word is kept in place and reported, as are overlapping items; an
  item whose end is before its start gets its end set to its start (reported); an empty item is left out
  (reported). No transcript: no sentences, and a problem.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

_END = re.compile(r"[.?!][\"')\]]*$")
_ATTACHED = re.compile(r"^[.,:;?!]+$")  # written without a space before it
_MAX_LISTED = 5
LONG_RUN_WORDS = 60
LONG_RUN_S = 30.0


@dataclass
class Word:
    text: str
    start: float
    end: float
    char_start: int
    char_end: int
    item: int  # index of the transcript item it came from


@dataclass
class Sentence:
    index: int
    text: str
    start: float
    end: float
    char_start: int
    char_end: int
    word_start: int = 0  # into Transcript.words
    word_end: int = 0  # exclusive
    closed: bool = True  # ended by sentence punctuation

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Transcript:
    text: str = ""
    sentences: list[Sentence] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)


def transcript_sentences(items: list[dict] | None, *, source_format: str) -> Transcript:
    """The sentences of ``items`` (see the module docstring). ``source_format`` (reflacx or egd) names the
    items' origin; both are read by the same rules, as each is a word sequence with its punctuation."""
    out = Transcript()
    if not items:
        out.problems.append("transcript: missing or empty; sentence alignment skipped")
        return out
    rows = _checked(items, out.problems)
    _words(rows, out)
    _sentences(out)
    return out


def _checked(items: list[dict], problems: list[str]) -> list[tuple[int, str, float, float]]:
    """``(item index, text, start, end)`` of the usable items, in file order; what is odd is said."""
    rows: list[tuple[int, str, float, float]] = []
    bad_order, overlaps, backwards, empty = [], [], [], []
    last_start, last_end = float("-inf"), float("-inf")  # of the previous word (punctuation aside)
    for i, item in enumerate(items):
        text = " ".join(str(item.get("text", "")).split())
        start, end = float(item.get("start", 0.0)), float(item.get("end", 0.0))
        if not text:
            empty.append(i)
            continue
        if end < start:
            backwards.append(i)
            end = start
        if not _ATTACHED.match(text):
            if start < last_start:
                bad_order.append(i)
            elif start < last_end - 1e-6:
                overlaps.append(i)
            last_start, last_end = start, end
        rows.append((i, text, start, end))
    if empty:
        problems.append(f"transcript: {len(empty)} empty item(s) left out ({_items(empty)})")
    if backwards:
        problems.append(
            f"transcript: {len(backwards)} item(s) end before they start ({_items(backwards)}); "
            "their end is set to their start"
        )
    if bad_order:
        problems.append(
            f"transcript: times out of order at {len(bad_order)} item(s) ({_items(bad_order)}); "
            "kept in file order"
        )
    if overlaps:
        problems.append(
            f"transcript: {len(overlaps)} item(s) overlap the previous one in time ({_items(overlaps)})"
        )
    return rows


def _items(indexes: list[int]) -> str:
    shown = ", ".join(f"#{i}" for i in indexes[:_MAX_LISTED])
    return shown + (" ..." if len(indexes) > _MAX_LISTED else "")


def _words(rows: list[tuple[int, str, float, float]], out: Transcript) -> None:
    """The word sequence and the rebuilt text; punctuation items join the word before them."""
    text = ""
    split_items, leading = [], []
    for item, phrase, start, end in rows:
        if _ATTACHED.match(phrase):
            if not out.words:
                leading.append(item)
                continue
            last = out.words[-1]
            text += phrase
            last.text += phrase
            last.char_end = len(text)
            last.end = end if end >= last.start else last.start
            continue
        parts = phrase.split(" ")
        if len(parts) > 1:
            split_items.append(item)
        base = len(text) + (1 if text else 0)
        text += (" " if text else "") + phrase
        span, offset = end - start, 0
        for part in parts:
            at = phrase.index(part, offset)
            offset = at + len(part)
            out.words.append(
                Word(
                    text=part,
                    start=start + span * at / len(phrase) if len(parts) > 1 else start,
                    end=start + span * offset / len(phrase) if len(parts) > 1 else end,
                    char_start=base + at,
                    char_end=base + offset,
                    item=item,
                )
            )
    out.text = text
    if leading:
        out.problems.append(f"transcript: punctuation before the first word left out ({_items(leading)})")
    if split_items:
        out.problems.append(
            f"transcript: {len(split_items)} item(s) hold several words ({_items(split_items)}); "
            "their word times are interpolated by character position"
        )


def _sentences(out: Transcript) -> None:
    first = 0
    for i, word in enumerate(out.words):
        if _END.search(word.text):
            _close(out, first, i + 1, closed=True)
            first = i + 1
    if first < len(out.words):
        _close(out, first, len(out.words), closed=False)
        n = len(out.words) - first
        if first == 0:
            out.problems.append(
                f"transcript: no sentence punctuation in {n} word(s); the whole dictation is one sentence"
            )
        else:
            out.problems.append(
                f"transcript: {n} word(s) after the last full stop ({_quote(out.sentences[-1].text)}) "
                "kept as a last, unclosed sentence"
            )
    for s in out.sentences:
        words, seconds = s.word_end - s.word_start, s.end - s.start
        if words > LONG_RUN_WORDS or seconds > LONG_RUN_S:
            out.problems.append(
                f"transcript: sentence {s.index} runs {words} words over {seconds:.1f} s without a full stop "
                f"({_quote(s.text)}); kept whole"
            )


def _close(out: Transcript, first: int, stop: int, *, closed: bool) -> None:
    words = out.words[first:stop]
    start = words[0].start
    out.sentences.append(
        Sentence(
            index=len(out.sentences),
            text=out.text[words[0].char_start : words[-1].char_end],
            start=start,
            end=max(words[-1].end, start),
            char_start=words[0].char_start,
            char_end=words[-1].char_end,
            word_start=first,
            word_end=stop,
            closed=closed,
        )
    )


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
