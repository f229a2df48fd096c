"""Helpers every file-writing exporter shares: one case id per export, the labels a format writes, a mask
on the image grid, images and label arrays as gzipped NIfTI, scratch files, and file modes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from releases.records import CaseRecord, FormatError, ImageRecord, LabelRecord, Sink
from studies.ingest.volume_io import GzipWriter

AFFINE_ATOL = 1e-3  # mm: NIfTI stores the sform in float32


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
    """The label's mask as a bool array on the image array's grid: ``(X, Y, Z)``, or ``(X, Y)`` for 2D
    (``LabelRecord.load_mask``: the codec's order for PNG and NIfTI files alike). Raises FormatError when
    the mask is not on the image grid (other shape, or a NIfTI mask with another affine).
    """
    where = f"{case.case_id}/{label.label_id}.mask"
    mask = label.load_mask()
    if mask is None:
        raise FormatError(where, "mask label without a mask file")
    shape = tuple(int(n) for n in case.image.shape)
    is_nifti = str(label.mask_path).endswith((".nii", ".nii.gz"))
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
