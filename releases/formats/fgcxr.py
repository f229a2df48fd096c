"""FG-CXR / I-AI style export: each radiograph's anatomies with the reader's caption sentences, dwell time
and gaze heatmap (``formats.md``, "Gaze-aligned, anatomy-level captions").

Layout (one self-contained folder per image; every pixel file is ``rows × columns`` at image resolution)::

    fgcxr/index.json                       release, images [{case_id, image, json, split, records, readers}],
                                           splits {split: [case_id, ...]}
    fgcxr/<case_id>/<case_id>.json         the image's record (below)
    fgcxr/<case_id>/<case_id>.png          the image, 8-bit grayscale, 0.5–99.5 percentile window
    fgcxr/<case_id>/<stem>.heatmap.png     gaze heatmap, 8-bit grayscale scaled so its maximum is 255
    fgcxr/<case_id>/<stem>.heatmap.npy     the same heatmap as float32 (rows, columns), unscaled
    fgcxr/<case_id>/<stem>.mask.png        anatomy mask, 0/255 (only when the record has one)
    fgcxr/<case_id>/<stem>.focus.png       "intense focus" mask, 0/255
    fgcxr/<case_id>/finding__<label>.png   mask of a grounded finding (kind mask), 0/255

``<stem>`` is ``<anatomy-slug>__<recording-slug>`` (e.g. ``left-lung__rec-7``), unique within the image even
when several readers looked at it. ``<case_id>.json``::

    {"format": "fgcxr", "case_id", "image": "<case_id>.png", "width", "height", "split", "patient_id",
     "study_id", "report_id", "report": {section: text},
     "anatomies": [{"anatomy", "caption", "sentences", "dwell_s", "fixations", "time_to_first_s",
                    "dwell_share", "reader", "recording_id", "heatmap_png", "heatmap_npy", "heatmap_max",
                    "mask_png" (or null), "focus_png", "provenance"}],
     "findings": [{"label_id", "text", "kind", "code", "category", "location", "laterality", "assertion",
                   "source", "box" ([xmin, ymin, xmax, ymax] pixels, max exclusive, x = column, or null),
                   "mask_png" (or null), "provenance"}]}

File names in the JSON are relative to the image's folder. ``heatmap_png / 255 * heatmap_max`` recovers the
heatmap up to 8-bit quantisation. Cases without gaze records are skipped (``"<case_id>: no gaze
recording"``); 3D images raise ``FormatError``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from releases.records import (
    CaseRecord,
    ExportSummary,
    FormatError,
    LabelRecord,
    ReleaseMeta,
    Sink,
    label_dict,
)

NAME = "fgcxr"
LABEL_KINDS = ("mask", "box", "none")
WINDOW_PERCENTILES = (0.5, 99.5)


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    images: list[dict[str, Any]] = []
    splits: dict[str, list[str]] = {}
    for done, case in enumerate(cases, start=1):
        if not case.gaze:
            summary.skipped.append(f"{case.case_id}: no gaze recording")
        else:
            entry = _export_case(case, sink, summary)
            images.append(entry)
            splits.setdefault(case.split, []).append(case.case_id)
            summary.cases += 1
        if progress is not None:
            progress(done)
    index = {
        "format": NAME,
        "release": {
            "name": meta.name,
            "version": meta.version,
            "description": meta.description,
            "licence": meta.licence,
            "citation": meta.citation,
        },
        "images": images,
        "splits": splits,
    }
    sink.put_bytes(f"{NAME}/index.json", _json(index))
    summary.files += 1
    return summary


def _export_case(case: CaseRecord, sink: Sink, summary: ExportSummary) -> dict[str, Any]:
    cid = _safe_id(case.case_id, f"{case.case_id}.case_id")
    folder = f"{NAME}/{cid}"
    pixels = radiograph_pixels(case)  # (rows, columns)
    shape = pixels.shape

    def put(name: str, data: bytes) -> str:
        sink.put_bytes(f"{folder}/{name}", data)
        summary.files += 1
        return name

    image_name = put(f"{cid}.png", png_bytes(window(pixels)))
    del pixels

    stems: set[str] = set()
    anatomies = []
    for rec in case.gaze:
        stem = _unique(f"{slug(rec.anatomy)}__{slug(rec.recording_id)}", stems)
        where = f"{case.case_id}/{rec.recording_id}/{rec.anatomy}"
        heat = np.asarray(rec.load_heatmap(), dtype=np.float32)
        _check_shape(heat, shape, f"{where}.heatmap")
        if not np.isfinite(heat).all():
            raise FormatError(f"{where}.heatmap", "heatmap has NaN or infinite values")
        heat_max = float(heat.max()) if heat.size else 0.0
        heat_png = put(f"{stem}.heatmap.png", png_bytes(heatmap_8bit(heat)))
        heat_npy = put(f"{stem}.heatmap.npy", _npy(heat))
        del heat
        mask = rec.load_mask()
        mask_png = None
        if mask is not None:
            mask = np.asarray(mask)
            _check_shape(mask, shape, f"{where}.mask")
            mask_png = put(f"{stem}.mask.png", png_bytes(_mask_8bit(mask)))
        focus = np.asarray(rec.load_focus())
        _check_shape(focus, shape, f"{where}.focus")
        focus_png = put(f"{stem}.focus.png", png_bytes(_mask_8bit(focus)))
        anatomies.append(
            {
                "anatomy": rec.anatomy,
                "caption": rec.caption,
                "sentences": list(rec.sentences),
                "dwell_s": float(rec.dwell_s),
                "fixations": int(rec.fixations),
                "time_to_first_s": None if rec.time_to_first_s is None else float(rec.time_to_first_s),
                "dwell_share": float(rec.dwell_share),
                "reader": rec.reader,
                "recording_id": rec.recording_id,
                "heatmap_png": heat_png,
                "heatmap_npy": heat_npy,
                "heatmap_max": max(heat_max, 0.0),
                "mask_png": mask_png,
                "focus_png": focus_png,
                "provenance": rec.provenance,
            }
        )

    findings = []
    names: set[str] = set()
    for label in case.labels:
        if label.kind not in LABEL_KINDS:
            summary.skipped.append(f"{case.case_id}/{label.label_id}: kind {label.kind!r} is not supported")
            continue
        findings.append(_finding(case, label, shape, names, put))
        summary.labels += 1

    record = {
        "format": NAME,
        "case_id": case.case_id,
        "image": image_name,
        "width": int(shape[1]),
        "height": int(shape[0]),
        "split": case.split,
        "patient_id": case.patient_id,
        "study_id": case.study_id,
        "report_id": case.report_id,
        "report": dict(case.report),
        "anatomies": anatomies,
        "findings": findings,
    }
    put(f"{cid}.json", _json(record))
    return {
        "case_id": case.case_id,
        "image": f"{cid}/{image_name}",
        "json": f"{cid}/{cid}.json",
        "split": case.split,
        "records": len(anatomies),
        "readers": sorted({rec.reader for rec in case.gaze}),
    }


def _finding(
    case: CaseRecord,
    label: LabelRecord,
    shape: tuple[int, ...],
    names: set[str],
    put: Callable[[str, bytes], str],
) -> dict[str, Any]:
    where = f"{case.case_id}/{label.label_id}"
    box = None
    mask_png = None
    if label.kind == "box":
        if label.box is None or len(label.box) != 4:
            raise FormatError(f"{where}.box", f"a 2D box needs [xmin, ymin, xmax, ymax], got {label.box!r}")
        box = [float(v) for v in label.box]
    elif label.kind == "mask":
        mask = label.load_mask()
        if mask is None:
            raise FormatError(f"{where}.mask", "kind mask without a mask file")
        _check_shape(mask, shape, f"{where}.mask")
        mask_png = put(
            _unique(f"finding__{slug(label.label_id)}", names) + ".png", png_bytes(_mask_8bit(mask))
        )
    return {
        **label_dict(label),
        "box": box,
        "mask_png": mask_png,
    }


# -- pixels -------------------------------------------------------------------------------------------


def radiograph_pixels(case: CaseRecord) -> np.ndarray:
    """The case's image as a 2D ``(rows, columns)`` array: ``load()`` gives ``(X, Y)`` (or ``(X, Y, 1)``),
    transposed. 3D images raise ``FormatError`` (field ``<case_id>.image``)."""
    arr = np.asarray(case.image.load())
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise FormatError(f"{case.case_id}.image", f"{NAME} holds 2D radiographs, got shape {arr.shape}")
    return arr.T


def window(pixels: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> np.ndarray:
    """8-bit grayscale: values between the two percentiles map linearly to 0..255, the rest clip."""
    values = np.asarray(pixels, dtype=np.float64)
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round(np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def heatmap_8bit(heat: np.ndarray) -> np.ndarray:
    """Heatmap scaled so its maximum is 255 (negative values clip to 0; an all-zero map stays 0)."""
    heat = np.clip(np.asarray(heat, dtype=np.float64), 0.0, None)
    top = float(heat.max()) if heat.size else 0.0
    if top <= 0:
        return np.zeros(heat.shape, dtype=np.uint8)
    return np.round(heat / top * 255.0).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """A 2D uint8 array as an 8-bit grayscale PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _mask_8bit(mask: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8)


def _check_shape(arr: np.ndarray, shape: tuple[int, ...], field: str) -> None:
    if tuple(np.shape(arr)) != tuple(shape):
        raise FormatError(field, f"shape {tuple(np.shape(arr))} is not the image's (rows, columns) {shape}")


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


# -- names and JSON -----------------------------------------------------------------------------------


def slug(text: str) -> str:
    """Lower-case file-name part: runs of other characters than ``a-z0-9._-`` become ``-``."""
    out = re.sub(r"[^a-z0-9._-]+", "-", str(text).lower()).strip("-.")
    return out or "x"


def _unique(stem: str, seen: set[str]) -> str:
    name, n = stem, 2
    while name in seen:
        name, n = f"{stem}-{n}", n + 1
    seen.add(name)
    return name


def _safe_id(case_id: str, field: str) -> str:
    if not case_id or "/" in case_id or "\\" in case_id or case_id in (".", ".."):
        raise FormatError(field, f"{case_id!r} cannot be a folder name")
    return case_id


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, ensure_ascii=False, default=_plain).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
