"""DICOM: the de-identified source series rebuilt from the canonical image, plus one DICOM SEG per case.

Files::

    series/<case_id>/<nnnn>.dcm   one single-frame instance per slice k (nnnn = k + 1, 4 digits at least)
    seg/<case_id>.dcm             a BINARY Segmentation (highdicom) of those instances, one segment per
                                  mask label; absent when the case has no mask label
    index.json                    cases, their files, UIDs and segment numbers <-> label ids

The source series is rebuilt by ``releases.formats.dicom_source`` (slices, pixels, UIDs, header,
geometry RAS+ -> LPS); the SEG, its segments' codes, colours and algorithm, and its reproducible UIDs
and dates are written by ``releases.formats.dicom_segmentation`` (highdicom). This module walks the
cases, writes both and the index.

``index.json``: ``{"name", "version", "format", "cases": [{"case_id", "split", "patient_id",
"study_uid", "series_uid", "modality", "sop_class_uid", "files": [...], "seg": path | null,
"seg_series_uid", "seg_sop_uid", "segments": [{"segment_number", "label_id", "text", "category",
"code", "role", "source", "algorithm_type", "property_category", "property_type",
"property_type_modifier", "anatomic_region", "coded_exactly"}], "report_only": [{"label_id", "text",
"code", "category", "assertion", "source"}]}]}``; a coded value is ``{"scheme", "value", "meaning"}``
(modifier and region null when absent).

3D images only: a 2D image raises FormatError.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from releases.formats.common import check_unique, scratch_file, split_labels
from releases.formats.dicom_segmentation import segment_entry, segmentation
from releases.formats.dicom_source import write_series
from releases.records import (
    REPORT_ONLY_FIELDS,
    CaseRecord,
    ExportSummary,
    FormatError,
    ReleaseMeta,
    Sink,
    label_dict,
)

NAME = "dicom-seg"
LABEL_KINDS = ("mask", "none")


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    index: list[dict[str, Any]] = []
    seen: set[str] = set()
    for case in cases:
        check_unique(case, seen)
        if case.image.ndim != 3:
            raise FormatError(
                f"{case.case_id}.image", f"DICOM SEG export needs a 3D image, got {case.image.ndim}D"
            )
        labels = split_labels(case, LABEL_KINDS, summary.skipped)
        masks = [label for label in labels if label.kind == "mask"]
        sources, files = write_series(case, sink)
        summary.files += len(files)
        entry: dict[str, Any] = {
            "case_id": case.case_id,
            "split": case.split,
            "patient_id": case.patient_id,
            "study_uid": str(sources[0].StudyInstanceUID),
            "series_uid": str(sources[0].SeriesInstanceUID),
            "modality": case.image.modality,
            "sop_class_uid": str(sources[0].SOPClassUID),
            "files": files,
            "seg": None,
            "seg_series_uid": None,
            "seg_sop_uid": None,
            "segments": [],
            "report_only": [
                label_dict(label, REPORT_ONLY_FIELDS) for label in labels if label.kind != "mask"
            ],
        }
        if masks:
            seg = segmentation(case, masks, sources, meta)
            tmp = scratch_file(sink, ".dcm")
            try:
                seg.save_as(tmp, enforce_file_format=True)
                sink.put_file(f"seg/{case.case_id}.dcm", tmp)
            finally:
                if tmp.exists():
                    tmp.unlink()
            summary.files += 1
            entry["seg"] = f"seg/{case.case_id}.dcm"
            entry["seg_series_uid"] = str(seg.SeriesInstanceUID)
            entry["seg_sop_uid"] = str(seg.SOPInstanceUID)
            entry["segments"] = [segment_entry(n, label) for n, label in enumerate(masks, start=1)]
            del seg
        index.append(entry)
        summary.cases += 1
        summary.labels += len(labels)
        if progress is not None:
            progress(summary.cases)
    data = {"name": meta.name, "version": meta.version, "format": NAME, "cases": index}
    sink.put_bytes("index.json", json.dumps(data, indent=1, ensure_ascii=False, default=str).encode("utf-8"))
    summary.files += 1
    return summary
