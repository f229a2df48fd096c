"""Grounded reports as RadFact input (``docs/exports/radfact.md``): the file that microsoft/RadFact's
``run_radfact`` reads (``get_candidates_and_references_from_json``) for grounded reporting.

Layout::

    radfact/grounded_reports.json   a JSON array, one object per radiograph:
        {"example_id": <case_id>, "split": "train" | "val" | "test",
         "target":     [{"text": str, "boxes": [{"x_min", "y_min", "x_max", "y_max"}, ...] | null}, ...],
         "prediction": [... same shape ...]}

RadFact's loader reads ``example_id``, ``prediction`` and ``target`` of each object by key (``split`` is
left alone) and parses every phrase with ``GroundedPhrase.from_dict``: a phrase has exactly the keys
``text`` and ``boxes``; ``boxes`` is ``null`` or a non-empty list of boxes normalised to [0, 1]
(``0 <= x_min <= x_max <= 1``, same for y), never ``[]``.

``target`` is the report as reviewed: every sentence of the case's report sections Findings and
Impression, in order (split by the platform's splitter, ``labeling.rules.sentences.split_sentences``),
negative ones included, each with ``boxes: null`` unless an accepted finding (source ``human``, asserted
present, kind box or mask) grounds it: the finding's report span (``provenance["span"]`` = ``[section,
start, end]``) overlaps the sentence, and the sentence gets the finding's boxes. An accepted finding
whose span does not lie in Findings or Impression of the case's report becomes a phrase of its own (its
text and boxes, ``null`` for kind none), after the report's sentences. Rejected findings add nothing
(their sentence is in the target, without boxes; listed in ``summary.skipped``).

``prediction`` is the unreviewed proposals of the case (sources ``weak`` and ``model``), one phrase per
claim: proposals with the same code and assertion (or, without a code, the same normalised text and
assertion) are one phrase, so a finding that Findings and Impression both mention appears once; their
boxes are pooled. A present proposal's phrase is its own text; an absent or uncertain one states its
CheXpert observation (``No pleural effusion.``, ``Possible edema.``), as the labeler's mention alone
(``pleural effusion``) would read as a positive. Absent/uncertain proposals of other codes are listed in
``summary.skipped``. Context labels (generator anatomy such as ``left_lung``) are never phrases.

Boxes are normalised by the image: x by the width (``shape[0]`` of the ``(X, Y)`` image), y by the height
(``shape[1]``); a box label gives its box (``[xmin, ymin, xmax, ymax]`` pixels, max exclusive), a mask
label one box per 8-connected component (raster order). An accepted finding whose mask is empty grounds
nothing (its sentence stays, without boxes); a proposal whose mask is empty is left out (both listed in
``summary.skipped``). RadFact is for 2D radiographs: a 3D case raises ``FormatError`` (field
``<case_id>.image``). Every case is listed, also with an empty ``target`` or ``prediction``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from labeling.rules.sentences import split_sentences
from labeling.types import CHEXPERT_OBSERVATIONS
from releases.records import CaseRecord, ExportSummary, FormatError, LabelRecord, ReleaseMeta, Sink
from studies.masks import mask_rows

NAME = "radfact"
LABEL_KINDS = ("mask", "box", "none")
TARGET_SOURCES = ("human",)
TARGET_SECTIONS = ("findings", "impression")
MODALITY_HINT = (
    "freeze a release of the radiographs only (release_create --modality CR --modality DX, or the API's "
    'selection "modalities": ["CR", "DX"]) and export that'
)
_STATES = {"absent": "No {}.", "uncertain": "Possible {}."}


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    fd, name = tempfile.mkstemp(prefix="radfact-", suffix=".json", dir=sink.scratch())
    local = Path(name)
    seen: set[str] = set()
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("[")
            for done, case in enumerate(cases, start=1):
                if case.case_id in seen:  # RadFact keys examples by id: a second one would replace the first
                    summary.skipped.append(
                        f"{case.case_id}: the case appears twice in the release; written once"
                    )
                else:
                    seen.add(case.case_id)
                    item = case_item(case, summary)
                    fh.write(("\n" if summary.cases == 0 else ",\n") + json.dumps(item, ensure_ascii=False))
                    summary.cases += 1
                if progress is not None:
                    progress(done)
            fh.write("\n]\n")
        sink.put_file(f"{NAME}/grounded_reports.json", local)
        summary.files += 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            local.unlink()  # put_file may have moved it already
    return summary


@dataclass
class _Phrase:
    text: str
    boxes: list[dict[str, float]] = field(default_factory=list)
    section: str = ""
    start: int = 0
    end: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "boxes": self.boxes or None}

    def add(self, boxes: list[dict[str, float]] | None) -> None:
        for box in boxes or []:
            if box not in self.boxes:
                self.boxes.append(box)


def case_item(case: CaseRecord, summary: ExportSummary) -> dict[str, Any]:
    """The RadFact example of one case; labels left out are listed in ``summary.skipped``."""
    shape = list(case.image.shape)
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)):
        raise FormatError(
            f"{case.case_id}.image",
            f"RadFact is for 2D radiographs, but case {case.case_id} is a {case.image.modality or 'image'} "
            f"of shape {shape}: {MODALITY_HINT}",
        )
    width, height = int(shape[0]), int(shape[1])
    sentences = report_sentences(case.report)
    own: list[_Phrase] = []
    claims: dict[tuple[str, ...], _Phrase] = {}
    for label in case.labels:
        where = f"{case.case_id}/{label.label_id}"
        if label.role == "context":
            summary.skipped.append(f"{where}: context anatomy ({label.code or label.text}), not a finding")
            continue
        if label.kind not in LABEL_KINDS:
            summary.skipped.append(f"{where}: kind {label.kind!r} is not supported")
            continue
        if label.source in TARGET_SOURCES:
            used = _target_label(label, sentences, own, width, height, where, summary)
        else:
            used = _prediction_label(label, claims, width, height, where, summary)
        summary.labels += used
    return {
        "example_id": case.case_id,
        "split": case.split,
        "target": [p.as_dict() for p in sentences + own],
        "prediction": [p.as_dict() for p in claims.values()],
    }


def report_sentences(report: dict[str, str]) -> list[_Phrase]:
    """Every sentence of the report's Findings then Impression, with its section and character span."""
    out = []
    for section in TARGET_SECTIONS:
        text = report.get(section) or ""
        for start, end in split_sentences(text):
            out.append(_Phrase(text=text[start:end], section=section, start=start, end=end))
    return out


def _spanned(label: LabelRecord, sentences: list[_Phrase]) -> list[_Phrase]:
    """The sentences the label's report span overlaps ([] when it has none there)."""
    span = (label.provenance or {}).get("span")
    if not isinstance(span, list | tuple) or len(span) != 3:
        return []
    section, start, end = span
    if not isinstance(start, int) or not isinstance(end, int) or start >= end:
        return []
    return [s for s in sentences if s.section == section and s.start < end and start < s.end]


def _target_label(
    label: LabelRecord,
    sentences: list[_Phrase],
    own: list[_Phrase],
    width: int,
    height: int,
    where: str,
    summary: ExportSummary,
) -> int:
    if label.assertion != "present":
        summary.skipped.append(
            f"{where}: {label.assertion} finding (rejected in review): its sentence stays without boxes"
        )
        return 0
    boxes = label_boxes(label, width, height, where)
    if boxes == []:
        summary.skipped.append(f"{where}: empty mask")
        boxes = None
    hits = _spanned(label, sentences)
    for sentence in hits:
        sentence.add(boxes)
    if not hits:
        phrase = _Phrase(text=label.text.strip() or label.code or "finding")
        phrase.add(boxes)
        own.append(phrase)
    return 1


def _prediction_label(
    label: LabelRecord,
    claims: dict[tuple[str, ...], _Phrase],
    width: int,
    height: int,
    where: str,
    summary: ExportSummary,
) -> int:
    code = (label.code or "").strip()
    if label.assertion == "present":
        text = label.text.strip() or code
    elif label.assertion in _STATES and code in CHEXPERT_OBSERVATIONS and code != "No Finding":
        text = _STATES[label.assertion].format(code.lower())
    else:
        summary.skipped.append(
            f"{where}: {label.assertion} proposal of code {code!r}: its text does not state the assertion"
        )
        return 0
    if not text:
        summary.skipped.append(f"{where}: a proposal without text or code")
        return 0
    boxes = label_boxes(label, width, height, where)
    if boxes == []:  # a region proposal with nothing in it proposes nothing
        summary.skipped.append(f"{where}: empty mask")
        return 0
    key = ("code", code.lower(), label.assertion) if code else ("text", normalised(text), label.assertion)
    phrase = claims.get(key)
    if phrase is None:
        phrase = claims[key] = _Phrase(text=text)
    phrase.add(boxes)
    return 1


def normalised(text: str) -> str:
    """Lower case, single spaces, no closing punctuation: ``Small effusion.`` == ``small  effusion``."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".;:!,").strip().lower()


def label_boxes(label: LabelRecord, width: int, height: int, where: str) -> list[dict[str, float]] | None:
    """Normalised boxes of a label: None for kind none; its drawn box when it has one (a finding grounded
    by a mask and a box: the expert's box); else one box per component of its mask ([] for an empty
    one)."""
    if label.kind == "none":
        return None
    if label.kind == "box" or label.box is not None:
        if label.box is None or len(label.box) != 4:
            raise FormatError(f"{where}.box", f"a 2D box needs [xmin, ymin, xmax, ymax], got {label.box!r}")
        x0, y0, x1, y1 = (float(v) for v in label.box)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise FormatError(
                f"{where}.box", f"box {label.box} is empty or outside the {width}x{height} image"
            )
        return [_normalised(x0, y0, x1, y1, width, height)]
    mask = label.load_mask()
    if mask is None:
        raise FormatError(f"{where}.mask", "kind mask without a mask file")
    if mask.ndim != 2:
        raise FormatError(f"{where}.mask", f"a radiograph's mask is 2D, got shape {mask.shape}")
    mask = mask_rows(np.asarray(mask) != 0)
    if mask.shape != (height, width):
        raise FormatError(
            f"{where}.mask", f"shape {mask.shape} is not the image's (rows, columns) {(height, width)}"
        )
    return mask_boxes(mask, width, height)


def mask_boxes(mask: np.ndarray, width: int, height: int) -> list[dict[str, float]]:
    """One normalised box per 8-connected component of a ``(rows, columns)`` mask."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for rows, cols in ndimage.find_objects(labels)[:n]:
        boxes.append(_normalised(cols.start, rows.start, cols.stop, rows.stop, width, height))
    return boxes


def _normalised(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> dict[str, float]:
    return {"x_min": x0 / width, "y_min": y0 / height, "x_max": x1 / width, "y_max": y1 / height}
