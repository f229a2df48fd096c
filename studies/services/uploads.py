"""Uploads through the API: files are put in storage, then a Job ingests them on the default queue;
mask uploads are decoded within the bounds of the scan they belong to.

Uploaded scan files are raw (not de-identified yet): they are stored under the job's uploads folder
(``core.uploads.job_uploads_prefix``) and removed when the job ends, in any state.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from core.errors import ApplicationError
from core.jobs import broker_check, job_create, job_dispatch
from core.models import Job, Project
from core.storage import storage_all_or_nothing
from core.uploads import job_uploads_prefix
from studies.ingest.bounded import PNG_MAGIC, nifti_read_bounded, raster_open_bounded
from studies.ingest.types import IngestError
from studies.masks import mask_from_rows


class UploadTooLarge(IngestError):
    """An upload over ``UPLOAD_MAX_BYTES``: 413."""

    status = 413


@dataclass
class UploadSpec:
    files: list[UploadedFile]
    reports_csv: UploadedFile | None = None
    gaze_archive: UploadedFile | None = None
    options: dict[str, Any] = field(default_factory=dict)


def upload_check_size(*, total_bytes: int) -> None:
    if total_bytes > settings.UPLOAD_MAX_BYTES:
        raise UploadTooLarge(
            "upload", f"{total_bytes} bytes exceed the upload limit of {settings.UPLOAD_MAX_BYTES} bytes"
        )


def upload_create(*, project: Project, spec: UploadSpec, user) -> Job:
    """Store the uploaded files and queue their ingest. Raises UploadTooLarge or BrokerUnavailable
    (nothing stored then)."""
    every = list(spec.files) + [f for f in (spec.reports_csv, spec.gaze_archive) if f is not None]
    upload_check_size(total_bytes=sum(f.size or 0 for f in every))
    broker_check()
    with storage_all_or_nothing() as keys, transaction.atomic():
        job = job_create(project=project, kind="ingest_upload", user=user, params=dict(spec.options))
        base = job_uploads_prefix(job)

        def put(f: UploadedFile, i: int) -> str:
            name = f"{base}/{i:05d}_{(f.name or 'file').replace('/', '_')[-120:]}"
            key = default_storage.save(name, f)
            keys.append(key)
            f.close()  # its temporary file is no longer needed, nor a descriptor a storage opened on it
            return key

        params = dict(spec.options)
        params["upload_keys"] = [put(f, i) for i, f in enumerate(spec.files)]
        params["upload_names"] = [f.name for f in spec.files]
        if spec.reports_csv is not None:
            params["reports_key"] = put(spec.reports_csv, len(keys))
        if spec.gaze_archive is not None:
            params["gaze_key"] = put(spec.gaze_archive, len(keys))
            params["gaze_name"] = spec.gaze_archive.name
        params["bytes"] = sum(f.size or 0 for f in every)
        job.params = params
        job.save(update_fields=["params"])
        from studies.tasks import ingest_upload

        job_dispatch(job=job, task=ingest_upload, broker_checked=True)
    return job


def mask_upload_read(upload: UploadedFile, *, scan, field: str = "mask") -> tuple[np.ndarray, bytes | None]:
    """A mask upload as booleans on ``scan``'s grid, axis order ``(X, Y[, Z])``, and, when it already is
    what would be stored (a gzipped uint8 NIfTI of 0/1 on the scan's affine), its bytes as they came.

    A NIfTI (``.nii``/``.nii.gz``) is refused from its header when the shape it declares is not the
    scan's, then inflated a piece at a time up to its declared size, never past it; a PNG (2D scans,
    width = X, height = Y) is refused from its IHDR unless it has the scan's size. Errors are
    ``ApplicationError`` (400) naming ``field`` and the file."""
    name = upload.name or "mask"
    shape = tuple(int(n) for n in scan.shape) if scan is not None else None
    upload.seek(0)
    head = upload.read(8)
    upload.seek(0)
    try:
        if head == PNG_MAGIC:
            return _png_mask(upload, name=name, field=field, shape=shape), None
        read = nifti_read_bounded(
            upload,
            name=name,
            field=field,
            max_bytes=settings.NIFTI_MAX_BYTES,
            expect_shape=shape,
            keep_compressed=True,
        )
    except IngestError as exc:
        raise ApplicationError(f"{exc.file}: {exc.reason}", field=field) from exc
    voxels = read.array
    mask = voxels > 0
    if shape is not None:
        mask = mask.reshape(shape, order="F")  # the same voxels; trailing 1s as the scan has them
    reusable = (
        read.declared.gzipped
        and voxels.dtype == np.uint8
        and scan is not None
        and np.allclose(read.affine, np.asarray(scan.affine), atol=1e-4)
        and int(voxels.max(initial=0)) <= 1
    )
    return mask, read.compressed if reusable else None


def _png_mask(upload: UploadedFile, *, name: str, field: str, shape: tuple[int, ...] | None) -> np.ndarray:
    plane = shape
    if shape is not None:
        plane = shape[:2] if all(n == 1 for n in shape[2:]) else None
        if plane is None:
            raise IngestError(name, f"a PNG mask is 2D; the scan's grid is {list(shape)} (use NIfTI)", field)
    image = raster_open_bounded(
        upload, name=name, field=field, max_pixels=settings.IMAGE_MAX_PIXELS, expect_size=plane
    )
    with image:
        try:
            pixels = mask_from_rows(np.asarray(image.convert("L")) > 0)  # the codec's (X, Y)
        except (OSError, ValueError, SyntaxError) as exc:
            raise IngestError(name, f"not a readable PNG ({type(exc).__name__}: {exc})", field) from exc
    return pixels.reshape(shape, order="F") if shape is not None else pixels
