"""I-AI export: the table I-AI's code trains from, with its files (``docs/exports/iai.md``).

Read at ``UARK-AICV/IAI`` 9900c59: ``iai/data/datasets/register_tiai_e2e_v2.py`` (``Tiai_gaze_function``,
``register_all_tiai``) reads three CSVs with ``pandas.read_csv`` and, per row, the columns ``reflacx_id``,
``path``, ``_type`` (``c``, ``l`` or ``r``), the ``mask (…)``, ``heatmap (…)`` and ``sentence (…)`` column
of its type (``cardiomegaly``, ``left lung``, ``right lung``) and its label (``severity`` for ``c``,
``has finding`` for ``l`` and ``r``, an integer 0-4 that ``{0: 0, 1: 1, 2: 1, 3: 1, 4: 1}`` maps);
``iai/data/dataset_mappers/TIAI_gaze_dataset_mapper_e2e_v2.py`` and ``iai/utils/misc.py`` open
``os.path.join(mimic_cxr_path, path)`` with SimpleITK (``read_dicoms``: the array divided by its maximum,
one slice), the heatmap and the mask with PIL (``convert('L')``, resized to 224 x 224; the heatmap's
intense focus above ``unique[len(unique) // 5]``, the mask above 40/255), and cache each row under
``<reflacx_id>_<TYPE>``. Layout::

    iai/train.csv, iai/dev.csv, iai/test.csv  I-AI's table (the release's train, val and test split), one
                                              row per recording and type, c, l, r; header-only when empty
    iai/images/<case_id>.dcm                  the radiograph: a DICOM Secondary Capture, 16-bit
                                              MONOCHROME2, the image's stored values
    iai/heatmaps/<reflacx_id>_<type>.png      8-bit grayscale ("L"), image size, the record's heatmap
                                              scaled so its maximum is 255
    iai/masks/<reflacx_id>_<type>.png         the anatomy mask, 0/255
    iai/definitions.json                      per heatmap the gaze definition it was made with, its maximum;
                                              the label rules; images whose values were rescaled

Paths in the CSVs are relative to the ``iai`` folder: run I-AI there with ``mimic_cxr_path = "."``.
``reflacx_id`` is the recording id (REFLACX's reading id; ``A-Za-z0-9._-`` kept, made unique). Types:
``c`` the ``heart`` record, ``l`` the ``left_lung`` (region set ``anatomy``) or ``left`` (``fgcxr``)
record, ``r`` likewise on the right (the patient's sides). Labels from the case's labels (``LABEL_RULES``).
Extra columns ``split``, ``case_id``, ``reader`` follow I-AI's. A recording without the three records, or
one of them without an anatomy mask, is named in ``summary.skipped``; an export left with no row raises
``FormatError`` naming why.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from releases.formats.fgcxr import (
    by_recording,
    check_shape,
    checked_heatmap,
    definition_key,
    file_key,
    heatmap_8bit,
    lacking_reason,
    mask_8bit,
    nothing_reason,
    png_bytes,
    radiograph_pixels,
    release_dict,
    safe_id,
    unique,
)
from releases.records import (
    CaseRecord,
    ExportSummary,
    FormatError,
    GazeAnatomyRecord,
    JsonSpool,
    ReleaseMeta,
    Sink,
)

NAME = "iai"
LABEL_KINDS = ("mask", "box", "none")
TYPES = {"c": "cardiomegaly", "l": "left lung", "r": "right lung"}  # register_tiai_e2e_v2.map_type_namecol
ANATOMY = {"c": ("heart",), "l": ("left_lung", "left"), "r": ("right_lung", "right")}
COLUMNS = (
    "reflacx_id", "path", "_type",
    *(f"mask ({TYPES[t]})" for t in TYPES), *(f"heatmap ({TYPES[t]})" for t in TYPES),
    *(f"sentence ({TYPES[t]})" for t in TYPES),
    "severity", "has finding", "split", "case_id", "reader",
)  # fmt: skip
SPLIT_FILES = {"train": "train.csv", "val": "dev.csv", "test": "test.csv"}  # I-AI's train / dev / test
CARDIAC_CODES = ("Cardiomegaly",)
NOT_FINDINGS = ("No Finding", "Support Devices")
LABEL_RULES = {
    "severity": "1 when the case holds a present label coded Cardiomegaly, else 0 (every row of a recording)",
    "has finding": (
        "l / r rows: 1 when the case holds a present label on that side (laterality left / right or "
        "bilateral) other than No Finding and Support Devices, else 0; c rows: 1 when either side has one"
    ),
}
LACK_HINT = "label it with a gaze run whose records have anatomy masks (regions anatomy or fgcxr)"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage


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
    def __init__(self, sink: Sink, meta: ReleaseMeta, summary: ExportSummary):
        self.sink, self.meta, self.summary = sink, meta, summary
        self.spool = JsonSpool(sink, prefix=NAME)
        self.tables: dict[str, tuple[Path, Any, Any]] = {}
        self.keys: set[str] = set()
        self.cases: set[str] = set()
        self.rows = 0
        self.runs: dict[str, Any] = {}

    def put(self, relpath: str, data: bytes) -> str:
        self.sink.put_bytes(f"{NAME}/{relpath}", data)
        self.summary.files += 1
        return relpath

    def table(self, split: str):
        if split not in self.tables:
            fd, name = tempfile.mkstemp(suffix=".csv", dir=self.sink.scratch())
            fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            self.tables[split] = (Path(name), fh, writer)
        return self.tables[split][2]

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
            self.summary.skipped.append(lacking_reason(case.case_id, item, LACK_HINT))
        complete = []
        for recording_id, records in by_recording(case.gaze):
            picked, why = self.pick(records)
            masks = {} if why else self.masks(picked)
            if isinstance(masks, str):
                why = masks
            if why:
                self.summary.skipped.append(f"{case.case_id}/{recording_id}: {why}; {LACK_HINT}")
            else:
                complete.append((recording_id, picked, masks))
        if not complete:
            return
        pixels = radiograph_pixels(case)
        shape = pixels.shape
        for _, picked, masks in complete:
            for t, mask in masks.items():
                rec = picked[t]
                check_shape(mask, shape, f"{case.case_id}/{rec.recording_id}/{rec.anatomy}.mask")
        image = f"images/{cid}.dcm"
        data, rescaled = dicom_bytes(pixels, case, self.meta)
        self.put(image, data)
        del pixels, data
        if rescaled is not None:
            self.spool.add("images", {"rescaled_from": rescaled}, name=image)
        labels = case_labels(case)
        for recording_id, picked, masks in complete:
            key = unique(file_key(recording_id), self.keys)
            self.recording(case, key, image, shape, picked, masks, labels)
        self.summary.cases += 1

    @staticmethod
    def masks(picked: dict[str, GazeAnatomyRecord]) -> dict[str, np.ndarray] | str:
        """The three records' anatomy masks, or what is missing."""
        out = {}
        for t, rec in picked.items():
            mask = rec.load_mask()
            if mask is None:
                return f"no anatomy mask for its {rec.anatomy} record (I-AI's mask ({TYPES[t]}) column)"
            out[t] = np.asarray(mask) != 0
        return out

    @staticmethod
    def pick(records: list[GazeAnatomyRecord]) -> tuple[dict[str, GazeAnatomyRecord], str]:
        """``({type: record}, "")``, or what the recording lacks."""
        found = {rec.anatomy: rec for rec in records}
        picked, lacks = {}, []
        for t, names in ANATOMY.items():
            rec = next((found[n] for n in names if n in found), None)
            if rec is None:
                lacks.append(f"no {' or '.join(names)} record")
            else:
                picked[t] = rec
        if lacks:
            have = ", ".join(sorted(found))
            return picked, f"lacks what I-AI's three types need: {'; '.join(lacks)} (its records: {have})"
        return picked, ""

    def recording(
        self,
        case: CaseRecord,
        key: str,
        image: str,
        shape: tuple[int, ...],
        picked: dict[str, GazeAnatomyRecord],
        masks: dict[str, np.ndarray],
        labels: dict[str, int],
    ) -> None:
        heatmaps = {}
        for t, rec in picked.items():
            where = f"{case.case_id}/{rec.recording_id}/{rec.anatomy}"
            heat = checked_heatmap(rec, shape, where)
            name = self.put(f"heatmaps/{key}_{t}.png", png_bytes(heatmap_8bit(heat)))
            top = max(float(heat.max()) if heat.size else 0.0, 0.0)
            del heat
            heatmaps[t] = name
            self.spool.add(
                "heatmaps",
                {"reflacx_id": key, "_type": t, "anatomy": rec.anatomy, "recording_id": rec.recording_id,
                 "heatmap_max": top, "definition": definition_key(self.runs, rec.provenance),
                 "record": rec.provenance.get("record")},
                name=name,
            )  # fmt: skip
        mask_names = {t: self.put(f"masks/{key}_{t}.png", png_bytes(mask_8bit(masks[t]))) for t in TYPES}
        del masks
        table = self.table(case.split)
        first = picked["c"]
        for t in TYPES:
            has_finding = labels[t] if t != "c" else max(labels["l"], labels["r"])
            table.writerow([
                key, image, t,
                *(mask_names[u] for u in TYPES), *(heatmaps[u] for u in TYPES),
                *(picked[u].caption or " ".join(picked[u].sentences) for u in TYPES),
                labels["c"], has_finding, case.split, case.case_id, first.reader,
            ])  # fmt: skip
            self.rows += 1

    def finish(self) -> None:
        if not self.rows:
            raise FormatError(
                NAME,
                nothing_reason("heart, left and right lung records with anatomy masks", self.summary.skipped),
            )
        for split in ("train", "val", "test"):
            self.table(split)
        for split in sorted(self.tables):
            path, fh, _ = self.tables[split]
            fh.close()
            self.sink.put_file(f"{NAME}/{SPLIT_FILES.get(split, f'{split}.csv')}", path)
            self.summary.files += 1
        self.spool.write(
            self.sink,
            f"{NAME}/definitions.json",
            {"format": NAME, "release": release_dict(self.meta), "types": TYPES,
             "anatomy": {t: list(names) for t, names in ANATOMY.items()}, "labels": LABEL_RULES,
             "split_files": SPLIT_FILES, "definitions": self.runs},
            ["heatmaps", "images"],
            maps=["heatmaps", "images"],
        )  # fmt: skip
        self.summary.files += 1

    def close(self) -> None:
        for path, fh, _ in self.tables.values():
            if not fh.closed:
                fh.close()
            if path.exists():
                path.unlink()
        self.tables = {}
        self.spool.close()


def case_labels(case: CaseRecord) -> dict[str, int]:
    """``{"c": severity, "l": has finding on the left, "r": on the right}`` (``LABEL_RULES``)."""
    present = [label for label in case.labels if label.assertion == "present"]
    out = {"c": int(any(label.code in CARDIAC_CODES for label in present)), "l": 0, "r": 0}
    for label in present:
        if label.code in NOT_FINDINGS:
            continue
        side = (label.laterality or "").lower()
        if side in ("left", "bilateral"):
            out["l"] = 1
        if side in ("right", "bilateral"):
            out["r"] = 1
    return out


def dicom_bytes(pixels: np.ndarray, case: CaseRecord, meta: ReleaseMeta) -> tuple[bytes, list[float] | None]:
    """The radiograph ``(rows, columns)`` as a DICOM Secondary Capture file: 16-bit unsigned MONOCHROME2
    with the image's values when they are whole numbers in 0..65535, else those values mapped linearly
    from their range onto 0..65535 (returned as ``[min, max]``). UIDs are derived from the release and
    the case (the same export writes the same file)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    values = np.asarray(pixels)
    rescaled = None
    whole = np.issubdtype(values.dtype, np.integer) or bool(np.all(values == np.round(values)))
    if values.size and whole and values.min() >= 0 and values.max() <= 65535:
        stored = values.astype(np.uint16)
    else:
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        span = hi - lo if hi > lo else 1.0
        stored = np.round((values.astype(np.float64) - lo) / span * 65535.0).astype(np.uint16)
        rescaled = [lo, hi]
    seed = [meta.name, str(meta.version), case.case_id, case.image.sha256]

    def uid(part: str) -> str:
        return generate_uid(entropy_srcs=[*seed, part])

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = SC_CLASS
    file_meta.MediaStorageSOPInstanceUID = uid("sop")
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = SC_CLASS
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = case.image.study_uid or uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.PatientID = ds.PatientName = case.patient_id
    ds.Modality = case.image.modality or "OT"
    ds.ConversionType = "WSD"
    ds.SeriesDescription = f"{meta.name} v{meta.version} {case.case_id}"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), rescaled
