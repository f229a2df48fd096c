"""ReXGroundingCT layout (chest CT findings segmented in 3D; see docs/formats.md "ReXGroundingCT").

Files::

    images/<case_id>.nii.gz          the image: gzipped NIfTI, the case's array (X, Y, Z) and affine
    segmentations/<case_id>.nii.gz   the findings: one array (F, H, W, D), F = the case's mask labels
    dataset.json                     one entry per case, grouped by split
    reports_dataset.json             every label of every case (report-only, negative, uncertain too)

Segmentations: ``(H, W, D)`` are the image array's axes in the image file's order (X, Y, Z), so channel
``f`` voxel ``[i, j, k]`` is image voxel ``[i, j, k]``; no axis is flipped or reordered. Channel ``f`` is
the ``f``-th mask label of the case in label order; inside a channel each 26-connected component is one
entity, numbered 1..n (``scipy.ndimage.label`` raster order). uint8, uint16 when a channel has more than
255 entities (uint32 past 65535). The NIfTI header holds the image's affine, but NIfTI readers apply it
to the first three array axes while here the first axis is the channel: the world position of channel
voxel ``[f, i, j, k]`` is ``affine @ [i, j, k, 1]`` (RAS+ mm) with the entry's ``"affine"``, the same as
the image's. A case without mask labels gets no segmentation file (its entry has F = 0, empty
``findings`` and ``"segmentation": null``): zero-length NIfTI axes are not read by every tool.

``dataset.json``::

    {"name": ..., "version": ..., "description": ..., "licence": ..., "citation": ...,
     "format": "rexgroundingct",
     "train": [entry, ...], "val": [...], "test": [...]}

Splits are top-level keys, as in the published file (``data["train"]`` is a list of entries); train, val
and test are always present, other split names get their own key. An entry (the published keys first,
then ours)::

    {"name": "<case_id>.nii.gz", "findings": {"0": text}, "entity_counts": {"0": n},
     "shape": [H, W, D], "pixels": {"0": non-zero voxels}, "categories": {"0": "2b"},
     "case_id": ..., "split": ..., "image": "images/<case_id>.nii.gz",
     "segmentation": "segmentations/<case_id>.nii.gz" | null,
     "affine": 4x4 voxel -> RAS+ mm, "label_ids": {"0": label_id}, "sources": {"0": "human"},
     "codes": {"0": code}}

The published ``"protocol"`` key is left out (the platform does not record an annotation protocol).

``reports_dataset.json``: ``{"name", "version", "cases": [{"name", "case_id", "split", "report_id",
"report": {section: text}, "findings": [{"label_id", "text", "kind", "code", "category", "location",
"laterality", "assertion", "source", "provenance", "channel"}]}]}`` with every written label (mask and
report-only ``none``, present, absent or uncertain); ``channel`` is the segmentation channel of a mask
label, else null.

Shared helpers (``check_unique``, ``split_labels``, ``mask_on_grid``, ``put_image``, ``put_nifti``) are in
``releases/formats/common.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from scipy import ndimage

from releases.formats.common import check_unique, mask_on_grid, put_image, put_nifti, split_labels
from releases.records import (
    CaseRecord,
    ExportSummary,
    FormatError,
    JsonSpool,
    LabelRecord,
    ReleaseMeta,
    Sink,
    label_dict,
)

NAME = "rexgroundingct"
LABEL_KINDS = ("mask", "none")

SPLITS = ("train", "val", "test")
_RESERVED = ("name", "version", "description", "licence", "citation", "format")
_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    splits = JsonSpool(sink, "rex-splits")  # entries and report findings on disk until the end
    reports = JsonSpool(sink, "rex-reports")
    seen: set[str] = set()
    for case in cases:
        check_unique(case, seen)
        if case.image.ndim != 3:
            raise FormatError(
                f"{case.case_id}.image", f"ReXGroundingCT holds 3D images, got {case.image.ndim}D"
            )
        if case.split in _RESERVED:
            raise FormatError(f"{case.case_id}.split", f"split name {case.split!r} is a reserved key")
        labels = split_labels(case, LABEL_KINDS, summary.skipped)
        masks = [label for label in labels if label.kind == "mask"]
        name = f"{case.case_id}.nii.gz"
        put_image(sink, f"images/{name}", case.image, case.case_id)
        summary.files += 1
        entry: dict[str, Any] = {
            "name": name,
            "findings": {},
            "entity_counts": {},
            "shape": [int(n) for n in case.image.shape],
            "pixels": {},
            "categories": {},
            "case_id": case.case_id,
            "split": case.split,
            "image": f"images/{name}",
            "segmentation": None,
            "affine": np.asarray(case.image.affine, dtype=float).tolist(),
            "label_ids": {},
            "sources": {},
            "codes": {},
        }
        if masks:
            seg = _segmentation(case, masks, entry)
            put_nifti(sink, f"segmentations/{name}", seg, case.image.affine)
            del seg
            entry["segmentation"] = f"segmentations/{name}"
            summary.files += 1
        splits.add(case.split, entry)
        channel = {id(label): f for f, label in enumerate(masks)}
        reports.add(
            "cases",
            {
                "name": name,
                "case_id": case.case_id,
                "split": case.split,
                "report_id": case.report_id,
                "report": dict(case.report),
                "findings": [_report_finding(label, channel.get(id(label))) for label in labels],
            },
        )
        summary.cases += 1
        summary.labels += len(labels)
        if progress is not None:
            progress(summary.cases)
    head = {
        "name": meta.name,
        "version": meta.version,
        "description": meta.description,
        "licence": meta.licence,
        "citation": meta.citation,
        "format": NAME,
    }
    try:
        splits.write(sink, "dataset.json", head, [*SPLITS, *(k for k in splits.parts if k not in SPLITS)])
        reports.write(sink, "reports_dataset.json", {"name": meta.name, "version": meta.version}, ["cases"])
    finally:
        splits.close()
        reports.close()
    summary.files += 2
    return summary


def _segmentation(case: CaseRecord, masks: list[LabelRecord], entry: dict[str, Any]) -> np.ndarray:
    """The (F, X, Y, Z) entity array of ``masks``; fills the entry's per-finding keys."""
    shape = tuple(int(n) for n in case.image.shape)
    seg = np.zeros((len(masks), *shape), dtype=np.uint8, order="F")
    for f, label in enumerate(masks):
        mask = mask_on_grid(case, label)
        key = str(f)
        count = 0
        found = ndimage.find_objects(mask.view(np.uint8))
        if found and found[0] is not None:
            box = found[0]  # label only inside the mask's bounding box: all its components lie there
            entities, count = ndimage.label(mask[box], structure=_CONNECTIVITY_26)
            if count > np.iinfo(seg.dtype).max:
                seg = seg.astype(np.uint16 if count <= 65535 else np.uint32, order="F")
            seg[(f, *box)] = entities
        entry["findings"][key] = label.text
        entry["entity_counts"][key] = int(count)
        entry["pixels"][key] = int(np.count_nonzero(mask))
        entry["categories"][key] = label.category
        entry["label_ids"][key] = label.label_id
        entry["sources"][key] = label.source
        entry["codes"][key] = label.code
    return seg


def _report_finding(label: LabelRecord, channel: int | None) -> dict[str, Any]:
    return {**label_dict(label), "channel": channel}
