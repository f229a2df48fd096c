"""FG-CXR export: the dataset's own layout, as the authors' loader reads it (``docs/exports/fgcxr.md``).

Read at ``UARK-AICV/FG-CXR`` 174bf13: ``fgcxr/prepare.py`` (``build_manifest``) reads ``full.json`` and
checks the files, ``fgcxr/data.py`` (``HeatmapDataset``, ``ReportDataset``) reads the manifest it writes;
``fgcxr/constants.py`` fixes the seven regions and their order. Layout (``<region_>`` is the region with
spaces as ``_``, as ``prepare.py`` names heatmaps)::

    fgcxr/full.json                         {study_id: {"dicom_id", "type": [7 regions], "sentence": [7]}}
    fgcxr/images/<dicom_id>.jpg             the radiograph: 8-bit grayscale JPEG (quality 95), image size,
                                            0.5-99.5 percentile window
    fgcxr/heatmaps/<study_id>_<region_>.png one per region: 8-bit grayscale ("L"), image size, the
                                            record's heatmap scaled so its maximum is 255 (all 0: no gaze)
    fgcxr/masks/<study_id>_mask.png         the regions as one 8-bit label image (``MASK_VALUES``)
    fgcxr/manifest.json                     what ``fgcxr.prepare`` writes, with the release's splits and
                                            ``data_root`` ``data/fg_cxr`` (the README's folder)
    fgcxr/definitions.json                  per heatmap the gaze definition it was made with, its maximum
    fgcxr/index.json                        the platform's extras: per image its studies, report, findings
                                            (``findings/<case_id>/<label>.png`` masks); per study dwell,
                                            fixations, time to first fixation of every region
    fgcxr/findings/<case_id>/<label>.png    mask of a grounded finding (kind mask), 0/255

A study is one gaze recording of one radiograph (FG-CXR's keys are REFLACX reading ids; a radiograph read
twice is two studies with one ``dicom_id``): its key is the recording id (characters other than
``A-Za-z0-9._-`` as ``-``, made unique with ``-2``, ``-3`` ...), its ``dicom_id`` the case id. ``type``
holds the seven regions in FG-CXR's order and ``sentence`` the reader's sentences about each (joined; ""
when the reader said nothing about it). A recording whose records do not cover the seven regions (labelled
with another region set, or without anatomy) is named in ``summary.skipped`` with what it lacks; an export
left with no study raises ``FormatError`` naming why. 3D images raise ``FormatError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from releases.formats.common import split_labels
from releases.records import (
    CaseRecord,
    ExportSummary,
    FormatError,
    GazeAnatomyRecord,
    JsonSpool,
    LabelRecord,
    ReleaseMeta,
    Sink,
    label_dict,
)
from studies.masks import mask_rows

NAME = "fgcxr"
LABEL_KINDS = ("mask", "box", "none")
WINDOW_PERCENTILES = (0.5, 99.5)
JPEG_QUALITY = 95  # MIMIC-CXR-JPG's quality, and what fgcxr/cache_data.py writes
REGIONS = ("heart", "left", "upper left", "lower left", "right", "upper right", "lower right")
DATA_ROOT = "data/fg_cxr"  # FG-CXR's README: "Extract FG-CXR into ... data/fg_cxr/"
# masks/<study_id>_mask.png: FG-CXR's loader lists the file (manifest ``anatomy_mask``) and never opens it,
# and the dataset's own masks are not published; here each pixel holds the value of the last region of
# MASK_ORDER that covers it (0: none), every value above I-AI's 40/255 mask threshold.
MASK_VALUES = {region: 255 - 25 * i for i, region in enumerate(REGIONS)}
MASK_ORDER = ("left", "right", "upper left", "lower left", "upper right", "lower right", "heart")
LACK_HINT = (
    "label it with the gaze preset fgcxr (regions fgcxr) and give it anatomy: stored masks, an anatomy "
    "model or EGD-CXR bounding boxes"
)


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    writer = _Writer(sink, meta, summary)
    try:
        for done, case in enumerate(cases, start=1):
            writer.case(case)
            if progress is not None:
                progress(done)
        writer.finish()
    finally:
        writer.close()
    return summary


class _Writer:
    """One pass over the cases; the JSON files are spooled to scratch files, written at the end."""

    def __init__(self, sink: Sink, meta: ReleaseMeta, summary: ExportSummary):
        self.sink, self.meta, self.summary = sink, meta, summary
        self.full = TopMap(sink)
        self.spool = JsonSpool(sink, prefix=NAME)
        self.keys: set[str] = set()
        self.cases: set[str] = set()
        self.split_counts: dict[str, int] = {}
        self.runs: dict[str, Any] = {}

    def put(self, relpath: str, data: bytes) -> str:
        self.sink.put_bytes(f"{NAME}/{relpath}", data)
        self.summary.files += 1
        return relpath

    def case(self, case: CaseRecord) -> None:
        cid = safe_id(case.case_id, f"{case.case_id}.case_id")
        if cid in self.cases:
            raise FormatError(f"{case.case_id}.case_id", "the case appears twice in the release")
        self.cases.add(cid)
        lacking = list(case.gaze_lacking)
        if not case.gaze and not lacking:
            self.summary.skipped.append(f"{case.case_id}: no gaze recording")
            return
        for item in lacking:
            self.summary.skipped.append(lacking_reason(case.case_id, item))
        complete = []
        for recording_id, records in by_recording(case.gaze):
            by_region, missing = regions_of(case.case_id, recording_id, records, REGIONS)
            if missing:
                self.summary.skipped.append(
                    f"{case.case_id}/{recording_id}: lacks the FG-CXR regions {', '.join(missing)} (its "
                    f"records: {', '.join(sorted(r.anatomy for r in records))}); {LACK_HINT}"
                )
            else:
                complete.append((recording_id, by_region))
        if not complete:
            return
        pixels = radiograph_pixels(case)
        shape = pixels.shape
        image = self.put(f"images/{cid}.jpg", jpeg_bytes(window(pixels)))
        del pixels
        keys = []
        for recording_id, by_region in complete:
            key = unique(file_key(recording_id), self.keys)
            keys.append(key)
            self.study(case, cid, key, image, shape, by_region)
        self.spool.add("images", self.image_entry(case, cid, image, shape, keys))
        self.summary.cases += 1

    def study(
        self,
        case: CaseRecord,
        cid: str,
        key: str,
        image: str,
        shape: tuple[int, ...],
        by_region: dict[str, GazeAnatomyRecord],
    ) -> None:
        regions, manifest_regions, masks = [], [], {}
        first = by_region[REGIONS[0]]
        for region in REGIONS:
            rec = by_region[region]
            where = f"{case.case_id}/{rec.recording_id}/{region}"
            heat = checked_heatmap(rec, shape, where)
            name = self.put(f"heatmaps/{key}_{region.replace(' ', '_')}.png", png_bytes(heatmap_8bit(heat)))
            top = max(float(heat.max()) if heat.size else 0.0, 0.0)
            del heat
            mask = rec.load_mask()
            if mask is not None:
                mask = np.asarray(mask) != 0
                check_shape(mask, shape, f"{where}.mask")
                masks[region] = mask
            definition = definition_key(self.runs, rec.provenance)
            self.spool.add(
                "heatmaps",
                {"study_id": key, "region": region, "recording_id": rec.recording_id, "heatmap_max": top,
                 "definition": definition, "record": rec.provenance.get("record")},
                name=name,
            )  # fmt: skip
            sentence = rec.caption or " ".join(rec.sentences)
            regions.append({
                "name": region, "sentence": sentence, "sentences": list(rec.sentences), "heatmap": name,
                "heatmap_max": top, "dwell_s": float(rec.dwell_s), "fixations": int(rec.fixations),
                "time_to_first_s": None if rec.time_to_first_s is None else float(rec.time_to_first_s),
                "dwell_share": float(rec.dwell_share),
            })  # fmt: skip
            manifest_regions.append({"name": region, "sentence": sentence.strip(), "heatmap": name})
        mask_name = self.put(f"masks/{key}_mask.png", png_bytes(label_map(masks, shape)))
        mask_regions = [r for r in REGIONS if r in masks]
        del masks
        sentences = [r["sentence"] for r in regions]
        self.full.add(key, {"dicom_id": cid, "type": list(REGIONS), "sentence": sentences})
        self.spool.add(
            "studies",
            {"study_id": key, "dicom_id": cid, "image": image, "anatomy_mask": mask_name,
             "regions": manifest_regions, "split": case.split},
        )  # fmt: skip
        self.spool.add(
            "study_records",
            {"study_id": key, "case_id": case.case_id, "dicom_id": cid, "split": case.split,
             "patient_id": case.patient_id, "reader": first.reader, "recording_id": first.recording_id,
             "mask": mask_name, "mask_regions": mask_regions, "regions": regions},
        )  # fmt: skip
        self.split_counts[case.split] = self.split_counts.get(case.split, 0) + 1

    def image_entry(
        self, case: CaseRecord, cid: str, image: str, shape: tuple[int, ...], keys: list[str]
    ) -> dict[str, Any]:
        findings = []
        names: set[str] = set()
        for label in split_labels(case, LABEL_KINDS, self.summary.skipped):
            findings.append(self.finding(case, cid, label, shape, names))
            self.summary.labels += 1
        return {
            "case_id": case.case_id, "dicom_id": cid, "image": image, "width": int(shape[1]),
            "height": int(shape[0]), "split": case.split, "patient_id": case.patient_id,
            "study_id": case.study_id, "report_id": case.report_id, "report": dict(case.report),
            "studies": keys, "records": len(keys), "readers": sorted({r.reader for r in case.gaze}),
            "findings": findings,
        }  # fmt: skip

    def finding(
        self, case: CaseRecord, cid: str, label: LabelRecord, shape: tuple[int, ...], names: set[str]
    ) -> dict[str, Any]:
        where = f"{case.case_id}/{label.label_id}"
        box = mask_png = None
        if label.kind == "box" or label.box is not None:  # the drawn box, beside a mask too
            if label.box is None or len(label.box) != 4:
                got = f"got {label.box!r}"
                raise FormatError(f"{where}.box", f"a 2D box needs [xmin, ymin, xmax, ymax], {got}")
            box = [float(v) for v in label.box]
        if label.kind == "mask":
            mask = label.load_mask()
            if mask is not None and mask.ndim == 2:
                mask = mask_rows(mask)  # the picture: (rows, columns) as the image and heatmaps
            check_shape(mask, shape, f"{where}.mask")
            stem = unique(slug(label.label_id), names)
            mask_png = self.put(f"findings/{cid}/{stem}.png", png_bytes(mask_8bit(mask)))
        return {**json_safe(label_dict(label)), "box": box, "mask_png": mask_png}

    def finish(self) -> None:
        if not self.keys:
            raise FormatError(NAME, nothing_reason("the seven FG-CXR regions", self.summary.skipped))
        self.full.write(self.sink, f"{NAME}/full.json")
        self.summary.files += 1
        counts = {s: self.split_counts[s] for s in sorted(self.split_counts, key=split_order)}
        self.spool.write(
            self.sink,
            f"{NAME}/manifest.json",
            {"version": 1, "data_root": DATA_ROOT, "regions": list(REGIONS),
             "split_method": "the release's patient-level splits (Groundlab), not fgcxr.prepare's",
             "split_counts": counts},
            ["studies"],
        )  # fmt: skip
        self.spool.write(
            self.sink,
            f"{NAME}/definitions.json",
            {"format": NAME, "regions": list(REGIONS),
             "heatmaps_note": "8-bit PNG = round(heatmap / heatmap_max * 255); heatmap_max 0: no gaze",
             "mask_values": MASK_VALUES, "mask_order": list(MASK_ORDER), "definitions": self.runs},
            ["heatmaps"],
            maps=["heatmaps"],
        )  # fmt: skip
        self.spool.write(
            self.sink,
            f"{NAME}/index.json",
            {"format": NAME, "release": release_dict(self.meta), "regions": list(REGIONS), "splits": counts},
            ["images", "study_records"],
        )
        self.summary.files += 3

    def close(self) -> None:
        self.full.close()
        self.spool.close()


# -- shared with the I-AI export -------------------------------------------------------------------------


def by_recording(records: Iterable[GazeAnatomyRecord]) -> list[tuple[str, list[GazeAnatomyRecord]]]:
    """The records grouped by recording, in the order recordings first appear."""
    groups: dict[str, list[GazeAnatomyRecord]] = {}
    for rec in records:
        groups.setdefault(rec.recording_id, []).append(rec)
    return list(groups.items())


def regions_of(
    case_id: str, recording_id: str, records: list[GazeAnatomyRecord], wanted: Iterable[str]
) -> tuple[dict[str, GazeAnatomyRecord], list[str]]:
    """``({anatomy: record}, [wanted anatomies it has no record of])``; two records of one anatomy in a
    recording raise ``FormatError``."""
    found: dict[str, GazeAnatomyRecord] = {}
    for rec in records:
        if rec.anatomy in found:
            raise FormatError(f"{case_id}/{recording_id}/{rec.anatomy}", "two gaze records of one anatomy")
        found[rec.anatomy] = rec
    return found, [name for name in wanted if name not in found]


def lacking_reason(case_id: str, item: dict[str, Any], hint: str = LACK_HINT) -> str:
    """A recording the release holds without gaze records (``CaseRecord.gaze_lacking``), as a skip line."""
    problems = "; ".join(str(p) for p in item.get("problems") or []) or "no problem recorded"
    return f"{case_id}/{item.get('recording_id', '?')}: no gaze anatomy records ({problems}); {hint}"


def nothing_reason(what: str, skipped: list[str]) -> str:
    """Why an export holds no study: the first skip lines, or that no radiograph had a gaze recording."""
    gaze = [line for line in skipped if not line.endswith(": no gaze recording")]
    if not gaze:
        return f"no radiograph of the release has a gaze recording with {what} (gaze label runs make them)"
    more = f" (and {len(gaze) - 3} more)" if len(gaze) > 3 else ""
    return f"no gaze recording has {what}: " + " | ".join(gaze[:3]) + more


def definition_key(runs: dict[str, Any], provenance: dict[str, Any]) -> str:
    """The key of a heatmap's definition in ``definitions.json`` ``definitions`` (added to ``runs``): its
    gaze run (``{"gaze_run", "params"}``), or a digest of the provenance a record without one carries."""
    run = provenance.get("gaze_run")
    if run is not None:
        key = f"gaze_run-{run}"
        runs.setdefault(key, {"gaze_run": run, "params": json_safe(provenance.get("params"))})
    else:
        text = json.dumps(provenance, sort_keys=True, default=str)
        key = "provenance-" + hashlib.sha256(text.encode()).hexdigest()[:12]
        runs.setdefault(key, json_safe(provenance))
    return key


def checked_heatmap(rec: GazeAnatomyRecord, shape: tuple[int, ...], where: str) -> np.ndarray:
    heat = np.asarray(rec.load_heatmap(), dtype=np.float32)
    check_shape(heat, shape, f"{where}.heatmap")
    if not np.isfinite(heat).all():
        raise FormatError(f"{where}.heatmap", "heatmap has NaN or infinite values")
    return heat


def label_map(masks: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The regions' masks as one uint8 image: ``MASK_VALUES`` painted in ``MASK_ORDER`` (0: no region)."""
    out = np.zeros(shape, dtype=np.uint8)
    for region in MASK_ORDER:
        if region in masks:
            out[masks[region]] = MASK_VALUES[region]
    return out


def split_order(split: str) -> tuple[int, str]:
    return ({"train": 0, "val": 1, "test": 2}.get(split, 3), split)


def release_dict(meta: ReleaseMeta) -> dict[str, Any]:
    return {
        "name": meta.name,
        "version": meta.version,
        "description": meta.description,
        "licence": meta.licence,
        "citation": meta.citation,
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


def jpeg_bytes(pixels: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """A 2D uint8 array as an 8-bit grayscale JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def mask_8bit(mask: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8)


def check_shape(arr: np.ndarray | None, shape: tuple[int, ...], field: str) -> None:
    if arr is None:
        raise FormatError(field, "no mask file")
    if tuple(np.shape(arr)) != tuple(shape):
        raise FormatError(field, f"shape {tuple(np.shape(arr))} is not the image's (rows, columns) {shape}")


# -- names and JSON -----------------------------------------------------------------------------------


def slug(text: str) -> str:
    """Lower-case file-name part: runs of other characters than ``a-z0-9._-`` become ``-``."""
    out = re.sub(r"[^a-z0-9._-]+", "-", str(text).lower()).strip("-.")
    return out or "x"


def file_key(text: str) -> str:
    """An id as a file-name part, case kept: runs of other characters than ``A-Za-z0-9._-`` become ``-``."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return out or "x"


def unique(stem: str, seen: set[str]) -> str:
    name, n = stem, 2
    while name in seen:
        name, n = f"{stem}-{n}", n + 1
    seen.add(name)
    return name


def safe_id(case_id: str, field: str) -> str:
    if not case_id or "/" in case_id or "\\" in case_id or case_id in (".", ".."):
        raise FormatError(field, f"{case_id!r} cannot be a file name")
    return case_id


def json_safe(value: Any) -> Any:
    """Plain JSON values (numpy scalars and arrays as Python numbers and lists)."""
    return json.loads(json.dumps(value, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


class TopMap:
    """A JSON object written one member at a time to a scratch file (``full.json``: ``{key: value}`` at the
    top level, which ``JsonSpool`` cannot write), put into the sink at the end."""

    def __init__(self, sink: Sink):
        fd, name = tempfile.mkstemp(suffix=".json", dir=sink.scratch())
        self.path = Path(name)
        self.fh = os.fdopen(fd, "w", encoding="utf-8")
        self.fh.write("{")
        self.count = 0

    def add(self, key: str, value: Any) -> None:
        text = json.dumps(json_safe(value), ensure_ascii=False)
        self.fh.write(("," if self.count else "") + f"\n {json.dumps(key, ensure_ascii=False)}: {text}")
        self.count += 1

    def write(self, sink: Sink, relpath: str) -> str:
        self.fh.write("\n}\n")
        self.fh.close()
        return sink.put_file(relpath, self.path)

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        if self.path.exists():
            self.path.unlink()
