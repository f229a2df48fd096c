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

The helpers here (``check_unique``, ``split_labels``, ``mask_on_grid``, ``put_image``, ``put_nifti``,
``scratch_file``) are shared with the MONAI and DICOM SEG exporters.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from releases.records import (
    CaseRecord,
    ExportSummary,
    FormatError,
    ImageRecord,
    JsonSpool,
    LabelRecord,
    ReleaseMeta,
    Sink,
    label_dict,
)
from studies.ingest.volume_io import GzipWriter

NAME = "rexgroundingct"
LABEL_KINDS = ("mask", "none")

AFFINE_ATOL = 1e-3  # mm: NIfTI stores the sform in float32
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


# --- Shared helpers (also used by the MONAI and DICOM SEG exporters) ---------------------------------------


def check_unique(case: CaseRecord, seen: set[str]) -> None:
    """Refuse a case id met before in this export (its files would overwrite the first case's)."""
    if case.case_id in seen:
        raise FormatError(f"{case.case_id}.case_id", "the case appears twice in the release")
    seen.add(case.case_id)


def split_labels(case: CaseRecord, kinds: Iterable[str], skipped: list[str]) -> list[LabelRecord]:
    """The labels of ``case`` an exporter writes, in label order; the others are listed in ``skipped``.

    A label is left out when its kind is not in ``kinds`` or when it is a mask label without a mask file.
    """
    allowed = set(kinds)
    kept = []
    for label in case.labels:
        if label.kind not in allowed:
            skipped.append(
                f"{case.case_id}/{label.label_id}: kind {label.kind!r} is not supported by this format"
            )
        elif label.kind == "mask" and label.mask_path is None:
            skipped.append(f"{case.case_id}/{label.label_id}: mask label without a mask file")
        else:
            kept.append(label)
    return kept


def mask_on_grid(case: CaseRecord, label: LabelRecord) -> np.ndarray:
    """The label's mask as a bool array on the image array's grid: ``(X, Y, Z)``, or ``(X, Y)`` for 2D.

    2D masks come as ``(rows, columns)`` = ``(Y, X)`` from PNG and are transposed. Raises FormatError when
    the mask is not on the image grid (other shape, or a NIfTI mask with another affine).
    """
    where = f"{case.case_id}/{label.label_id}.mask"
    mask = label.load_mask()
    if mask is None:
        raise FormatError(where, "mask label without a mask file")
    shape = tuple(int(n) for n in case.image.shape)
    is_nifti = str(label.mask_path).endswith((".nii", ".nii.gz"))
    if len(shape) == 2 and not is_nifti:
        mask = mask.T
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise FormatError(where, f"mask shape {list(mask.shape)} is not the image's {list(shape)}")
    if is_nifti:
        mask_affine = nib.load(str(label.mask_path)).affine
        if not np.allclose(mask_affine, np.asarray(case.image.affine, dtype=float), atol=AFFINE_ATOL):
            raise FormatError(where, "mask affine differs from the image affine: not on the image grid")
    return mask


def put_image(sink: Sink, relpath: str, image: ImageRecord, case_id: str) -> None:
    """Write the case's canonical image as gzipped NIfTI at ``relpath``, with the record's affine.

    A ``.nii.gz`` file whose affine is the record's is copied as it is; a ``.nii`` file is gzipped; a file
    with another affine is rewritten with the record's (values as stored, unscaled ones scaled).
    """
    img = nib.load(str(image.path))
    shape = tuple(int(n) for n in image.shape)
    file_shape = tuple(int(n) for n in img.shape)
    while len(file_shape) > len(shape) and file_shape[-1] == 1:
        file_shape = file_shape[:-1]
    if file_shape != shape:
        raise FormatError(f"{case_id}.image", f"image file shape {list(img.shape)} is not {list(shape)}")
    if not np.allclose(img.affine, np.asarray(image.affine, dtype=float), atol=AFFINE_ATOL):
        put_nifti(sink, relpath, np.asanyarray(img.dataobj).reshape(shape, order="A"), image.affine)
        return
    if str(image.path).endswith(".gz"):
        sink.put_file(relpath, Path(image.path))
        return
    tmp = scratch_file(sink, ".nii.gz")
    try:
        with open(image.path, "rb") as src, open(tmp, "wb") as raw, GzipWriter(raw) as gz:
            shutil.copyfileobj(src, gz, 4 << 20)
        sink.put_file(relpath, tmp)
    finally:
        if tmp.exists():
            tmp.unlink()


def put_nifti(sink: Sink, relpath: str, array: np.ndarray, affine: np.ndarray) -> None:
    """Write ``array`` as gzipped NIfTI-1 at ``relpath``: sform and qform = ``affine`` (code 1), mm."""
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(array, affine)
    header = img.header
    header.set_data_dtype(array.dtype)
    header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    header.set_slope_inter(1.0, 0.0)
    tmp = scratch_file(sink, ".nii.gz")
    try:
        with open(tmp, "wb") as raw, GzipWriter(raw) as gz:
            img.to_stream(gz)
        sink.put_file(relpath, tmp)
    finally:
        if tmp.exists():
            tmp.unlink()


def scratch_file(sink: Sink, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, dir=sink.scratch())
    os.close(fd)
    return Path(name)
