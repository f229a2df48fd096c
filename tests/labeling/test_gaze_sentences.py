"""Sentences of gaze transcripts (issue 15, item 1): built from the word sequence and its punctuation, word
times kept, findings read per whole sentence so that negation covers it.

Each definition is restated plainly here and compared with ``labeling.gaze.sentences`` on hand-made and
random transcripts in both formats:

- EGD-CXR ``transcript.json``: ``time_stamped_text`` is one Google Speech-to-Text word per item with its
  punctuation attached (``"enlarged."``); a sentence ends at a word ending with ``.``, ``?`` or ``!``; it
  starts at its first word's ``begin_time`` and ends at its last word's ``end_time``.
- REFLACX ``timestamps_transcription.csv``: ``"."`` and ``","`` are rows of their own. The authors'
  ``find_fixations_all_sentences.py`` rebuilds the text adding a space before every row except ``.``,
  ``,`` and ``:``, starts a sentence at the first row after a ``"."`` row and ends it at that ``"."`` row
  (``last_end_timestamp``).
"""

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeling.gaze.labels import GazeParams, RecordingInput, gaze_labels, rules_findings
from labeling.gaze.sentences import LONG_RUN_WORDS, transcript_sentences
from studies.ingest.gaze import read_egd
from studies.ingest.gaze.synthetic import EgdSpec, write_egd

FOUR = ["The heart is enlarged.", "There is a small left pleural effusion.", "No pneumothorax.",
        "The lungs are otherwise clear."]  # fmt: skip


def _egd_items(sentences, t=0.6, word_s=0.3, gap_s=0.1, pause_s=0.8):
    """EGD-CXR phrases: one word each, punctuation attached, as the dataset has them."""
    items = []
    for sentence in sentences:
        for word in sentence.split():
            items.append({"text": word, "start": round(t, 3), "end": round(t + word_s, 3)})
            t += word_s + gap_s
        t += pause_s
    return items


# ------------------------------------------------------------------------------------------ restatements


def _egd_restated(items):
    """(text, start, end, closed) per sentence: single-word phrases joined by spaces, cut after every word
    whose last character is ., ? or !; words left at the end make an unclosed sentence."""
    out, words = [], []
    for item in items:
        words.append(item)
        if item["text"][-1] in ".?!":
            out.append((" ".join(w["text"] for w in words), words[0]["start"], words[-1]["end"], True))
            words = []
    if words:
        out.append((" ".join(w["text"] for w in words), words[0]["start"], words[-1]["end"], False))
    return out


def _reflacx_restated(rows):
    """The REFLACX authors' loop: (sentence text, first row's start, "." row's end) per sentence, and the
    whole text with a space before every row but ".", "," and ":"."""
    text, out = "", []
    sentence_from, start = None, None
    for word, t0, t1 in rows:
        if word not in (".", ",", ":") and text:
            text += " "
        if sentence_from is None:
            sentence_from, start = len(text), t0
        text += word
        if word == ".":
            out.append((text[sentence_from:], start, t1))
            sentence_from = None
    return text, out


def _words(rows):
    return [{"text": w, "start": s, "end": e} for w, s, e in rows]


# ------------------------------------------------------------------------------------------ EGD-CXR


def test_egd_words_make_four_sentences_with_the_word_times():
    items = _egd_items(FOUR)
    out = transcript_sentences(items, source_format="egd")

    assert len(items) == 18 and len(out.sentences) == 4
    assert [(s.text, s.start, s.end, s.closed) for s in out.sentences] == _egd_restated(items)
    assert [s.text for s in out.sentences] == FOUR
    assert out.text == " ".join(FOUR)
    assert all(out.text[s.char_start : s.char_end] == s.text for s in out.sentences)
    third = out.sentences[2]
    assert [w.text for w in out.words[third.word_start : third.word_end]] == ["No", "pneumothorax."]
    assert [(w.start, w.end) for w in out.words] == [(i["start"], i["end"]) for i in items]
    assert out.problems == []


def test_random_egd_transcripts_equal_the_restatement():
    rng = random.Random(15)
    vocabulary = ["heart", "lungs", "clear", "mild", "no", "effusion", "left", "base", "is", "the"]
    for _ in range(200):
        n = rng.randint(1, 30)
        words = [rng.choice(vocabulary) + rng.choice(["", "", "", ",", ".", "?", "!"]) for _ in range(n)]
        items = _egd_items([" ".join(words)], t=rng.uniform(0, 5), word_s=rng.uniform(0.05, 0.6))
        out, expected = transcript_sentences(items, source_format="egd"), _egd_restated(items)
        assert [(s.text, s.start, s.end, s.closed) for s in out.sentences] == expected
        assert all(out.text[s.char_start : s.char_end] == s.text for s in out.sentences)
        assert [s.word_end - s.word_start for s in out.sentences] == [len(e[0].split()) for e in expected]


def test_egd_phrase_of_several_words_is_split_by_character_position():
    items = [
        {"text": "Lungs clear. Heart", "start": 1.0, "end": 2.8},
        {"text": "big.", "start": 3.0, "end": 3.5},
    ]
    out = transcript_sentences(items, source_format="egd")

    assert [s.text for s in out.sentences] == ["Lungs clear.", "Heart big."]
    phrase, span = "Lungs clear. Heart", 1.8
    first, second = out.sentences
    assert first.start == 1.0 and first.end == pytest.approx(1.0 + span * len("Lungs clear.") / len(phrase))
    assert (
        second.start == pytest.approx(1.0 + span * phrase.index("Heart") / len(phrase)) and second.end == 3.5
    )
    assert any("1 item(s) hold several words (#0)" in p for p in out.problems)


def test_trailing_words_after_the_last_full_stop_are_a_last_unclosed_sentence():
    items = _egd_items(["No pneumothorax.", "Small left effusion"])
    out = transcript_sentences(items, source_format="egd")

    assert [(s.text, s.closed) for s in out.sentences] == [
        ("No pneumothorax.", True),
        ("Small left effusion", False),
    ]
    assert out.sentences[1].end == items[-1]["end"]
    assert out.problems == [
        "transcript: 3 word(s) after the last full stop ('Small left effusion') "
        "kept as a last, unclosed sentence"
    ]


def test_unpunctuated_or_very_long_transcripts_are_problems():
    bare = transcript_sentences(_egd_items(["there is cardiomegaly no effusion"]), source_format="egd")
    assert [(s.text, s.closed) for s in bare.sentences] == [("there is cardiomegaly no effusion", False)]
    assert bare.problems == [
        "transcript: no sentence punctuation in 5 word(s); the whole dictation is one sentence"
    ]

    long_run = " ".join(["opacity"] * (LONG_RUN_WORDS + 1)) + "."
    out = transcript_sentences(_egd_items(["Heart normal.", long_run]), source_format="egd")
    assert len(out.sentences) == 2 and out.sentences[1].closed
    assert len(out.problems) == 1 and out.problems[0].startswith(
        f"transcript: sentence 1 runs {LONG_RUN_WORDS + 1} words over"
    )
    short = " ".join(["opacity"] * LONG_RUN_WORDS) + "."
    assert transcript_sentences(_egd_items([short]), source_format="egd").problems == []


def test_out_of_order_empty_and_stray_punctuation_items():
    items = _words([(".", 0.0, 0.1), ("Heart", 1.0, 1.3), ("", 1.3, 1.4), ("normal", 0.9, 1.6),
                    (".", 1.6, 1.7), ("Lungs", 2.0, 2.4), ("clear.", 2.3, 2.1)])  # fmt: skip
    out = transcript_sentences(items, source_format="egd")

    assert [(s.text, s.start, s.end) for s in out.sentences] == [
        ("Heart normal.", 1.0, 1.7),
        ("Lungs clear.", 2.0, 2.3),
    ]
    assert out.problems == [
        "transcript: 1 empty item(s) left out (#2)",
        "transcript: 1 item(s) end before they start (#6); their end is set to their start",
        "transcript: times out of order at 1 item(s) (#3); kept in file order",
        "transcript: 1 item(s) overlap the previous one in time (#6)",
        "transcript: punctuation before the first word left out (#0)",
    ]


# ------------------------------------------------------------------------------------------ REFLACX


def test_random_reflacx_word_rows_equal_the_authors_loop():
    rng = random.Random(7)
    for _ in range(200):
        rows, t = [], rng.uniform(0, 3)
        for _ in range(rng.randint(1, 25)):
            word = rng.choice(["heart", "size", "normal", "no", "effusion", "lungs", "clear", "mild"])
            rows.append((word, round(t, 2), round(t + 0.3, 2)))
            t += 0.35
            if rng.random() < 0.3:
                rows.append((rng.choice([".", ".", ",", ":"]), round(t, 2), round(t + 0.2, 2)))
                t += 0.25
        if rows[-1][0] != ".":
            rows.append((".", round(t, 2), round(t + 0.2, 2)))
        text, expected = _reflacx_restated(rows)
        out = transcript_sentences(_words(rows), source_format="reflacx")
        assert out.text == text
        assert [(s.text, s.start, s.end) for s in out.sentences] == expected
        assert all(s.closed for s in out.sentences) and out.problems == []


# ------------------------------------------------------------------------------------------ findings


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("No pneumothorax.", {("Pneumothorax", "absent")}),
        ("No pneumothorax or effusion.", {("Pneumothorax", "absent"), ("Pleural Effusion", "absent")}),
        ("There is a small left pleural effusion.", {("Pleural Effusion", "present")}),
        ("The heart is enlarged.", {("Cardiomegaly", "present")}),
    ],
)
def test_findings_of_a_whole_sentence_honour_its_negation(sentence, expected):
    out = transcript_sentences(_egd_items([sentence]), source_format="egd")
    (only,) = out.sentences
    assert {(f["code"], f["assertion"]) for f in rules_findings(only.text)} == expected


def test_egd_recording_four_sentences_findings_and_no_proposal_for_a_negated_finding(tmp_path: Path):
    items = _egd_items(FOUR + ["No pneumothorax or effusion."])
    spec = EgdSpec(
        image_size=(400, 300), n_fixations=60, phrases=[(i["text"], i["start"], i["end"]) for i in items]
    )
    [data] = list(read_egd(write_egd(tmp_path, recordings=[spec])))
    masks = {name: np.asarray(Image.open(p).convert("L")) > 0 for name, p in data.anatomy_masks.items()}
    rec = RecordingInput(
        external_id=data.external_id, source_format="egd", width=data.image_width, height=data.image_height,
        fixations=data.fixations, transcript=data.transcript,
    )  # fmt: skip

    out = gaze_labels(rec, masks, GazeParams(), rules_findings)

    assert [s["text"] for s in out.sentences] == [*FOUR, "No pneumothorax or effusion."]
    findings = [{(f["code"], f["assertion"]) for f in s["findings"]} for s in out.sentences]
    assert findings[0] == {("Cardiomegaly", "present")}
    assert findings[1] == {("Pleural Effusion", "present")}
    assert findings[2] == {("Pneumothorax", "absent")}
    assert findings[4] == {("Pneumothorax", "absent"), ("Pleural Effusion", "absent")}
    assert sorted((p["code"], p["sentence_index"]) for p in out.proposals) == [
        ("Cardiomegaly", 0), ("Pleural Effusion", 1)
    ]  # fmt: skip
    assert all(s["window"][1] == s["end"] for s in out.sentences)
    assert out.sentences[2]["start"] == items[11]["start"] and out.sentences[2]["end"] == items[12]["end"]
