"""Grounded reports as RadFact input (``formats.md``, "Grounded findings (MAIRA-2 / RadFact)").

Layout::

    radfact/grounded_reports.json   a JSON array, one object per radiograph:
        {"example_id": <case_id>, "split": "train" | "val" | "test",
         "target":     [{"text": str, "boxes": [{"x_min", "y_min", "x_max", "y_max"}, ...] | null}, ...],
         "prediction": [... same shape ...]}

RadFact compares a ``prediction`` with a ``target`` of the same example. A dataset release has no model
under evaluation, so ``target`` holds the case's accepted findings (source ``human``) and ``prediction`` the
unreviewed proposals of the same case (sources ``weak`` and ``model``; an empty list when there are none):
running RadFact on the file measures how well the proposals agree with the reviewed labels. Every case is
listed, also with an empty ``target``.

Only labels asserted present are written (absent/uncertain ones are listed in ``summary.skipped``).
Boxes are normalised to [0, 1]: x by the image width (``shape[0]`` of the ``(X, Y)`` image), y by its
height (``shape[1]``); a box label gives its box (``[xmin, ymin, xmax, ymax]`` pixels, max exclusive), a
mask label one box per 8-connected component of the mask (in raster order of the components), a label of
kind ``none`` ``"boxes": null`` (never ``[]``). A mask label whose mask is empty is skipped. RadFact is
for 2D radiographs: a 3D case raises ``FormatError`` (field ``<case_id>.image``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from releases.records import CaseRecord, ExportSummary, FormatError, LabelRecord, ReleaseMeta, Sink

NAME = "radfact"
LABEL_KINDS = ("mask", "box", "none")
TARGET_SOURCES = ("human",)


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    fd, name = tempfile.mkstemp(prefix="radfact-", suffix=".json", dir=sink.scratch())
    local = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("[")
            for done, case in enumerate(cases, start=1):
                item = case_item(case, summary)
                fh.write(("\n" if done == 1 else ",\n") + json.dumps(item, ensure_ascii=False))
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


def case_item(case: CaseRecord, summary: ExportSummary) -> dict[str, Any]:
    """The RadFact example of one case; labels left out are listed in ``summary.skipped``."""
    shape = list(case.image.shape)
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)):
        raise FormatError(f"{case.case_id}.image", f"RadFact is for 2D radiographs, got shape {shape}")
    width, height = int(shape[0]), int(shape[1])
    target: list[dict[str, Any]] = []
    prediction: list[dict[str, Any]] = []
    for label in case.labels:
        where = f"{case.case_id}/{label.label_id}"
        if label.kind not in LABEL_KINDS:
            summary.skipped.append(f"{where}: kind {label.kind!r} is not supported")
            continue
        if label.assertion != "present":
            summary.skipped.append(f"{where}: assertion {label.assertion!r} (RadFact lists present findings)")
            continue
        boxes = label_boxes(label, width, height, where)
        if boxes == []:
            summary.skipped.append(f"{where}: empty mask")
            continue
        phrase = {"text": label.text, "boxes": boxes}
        (target if label.source in TARGET_SOURCES else prediction).append(phrase)
        summary.labels += 1
    return {"example_id": case.case_id, "split": case.split, "target": target, "prediction": prediction}


def label_boxes(label: LabelRecord, width: int, height: int, where: str) -> list[dict[str, float]] | None:
    """Normalised boxes of a label: None for kind none, [] for an empty mask."""
    if label.kind == "none":
        return None
    if label.kind == "box":
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
    mask = np.asarray(mask) != 0
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
