"""Import of radiologist eye-gaze recordings (REFLACX, EGD-CXR) and their linking to scans.

Each recording is one unit: its ``GazeRecording`` row, its ``GazeAnatomyMask`` rows and the mask files
are stored together or not at all (a failed unit deletes the files it wrote). A broken recording is
reported with the file and field that were wrong, and the other recordings of the folder go on.
"""

import io
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from PIL import Image

from core.models import Project
from core.storage import project_key, storage_all_or_nothing, storage_save_bytes, storage_save_path
from studies.ingest.bounded import raster_open_bounded
from studies.ingest.gaze import GazeRecordingData, GazeSkipped, gaze_units
from studies.ingest.types import IngestError
from studies.models import GazeAnatomyMask, GazeRecording, Scan

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class GazeImportSummary:
    """``stored``: ``{id, external_id, fixations, scan_id}``; ``skipped``: ``{external_id, reason}``;
    ``errors``: ``IngestError.as_dict()`` plus the ``external_id`` of the recording where known."""

    stored: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scan_image_size(scan: Scan) -> tuple[int, int] | None:
    """``(width, height)`` px of a radiograph: the canonical array is ``(X, Y)`` (or ``(X, Y, 1)``)."""
    shape = list(scan.shape or [])
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
        return int(shape[0]), int(shape[1])
    return None


def scan_for_image(*, project: Project, image_ref: str) -> Scan | None:
    """The project's scan named ``image_ref`` (a DICOM id or file stem); the oldest if several."""
    if not image_ref:
        return None
    return Scan.objects.filter(project=project, name=image_ref).order_by("id").first()


class _ScanSizes(Mapping):
    """dicom_id -> (width, height) of the project's scan of that name, looked up on demand."""

    def __init__(self, project: Project):
        self.project = project

    def __getitem__(self, name: str) -> tuple[int, int]:
        scan = scan_for_image(project=self.project, image_ref=name)
        size = scan_image_size(scan) if scan is not None else None
        if size is None:
            raise KeyError(name)
        return size

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def gaze_import(
    *, project: Project, path: Path, fmt: str, progress: Progress | None = None
) -> GazeImportSummary:
    """Import every recording of the folder ``path`` in format ``fmt`` (``reflacx``, ``egd`` or ``auto``).

    Idempotent: a recording already stored under the same (project, format, external id) with the same
    checksum is skipped as a duplicate; with another checksum it is an error (delete it to re-import).
    Recordings are linked to the project's scan whose ``name`` is their image reference (the DICOM id)
    and its study; a linked scan of another image size is an error. ``progress(done, total)`` is called
    after each recording. Runs without locks; the unique constraint on (project, format, external id)
    settles concurrent imports of the same recording.
    """
    summary = GazeImportSummary()
    try:
        units = gaze_units(Path(path), fmt, image_sizes=_ScanSizes(project))
    except IngestError as exc:
        summary.errors.append(exc.as_dict())
        return summary
    total = len(units)
    for done, unit in enumerate(units, start=1):
        try:
            item = unit.read()
            if isinstance(item, GazeSkipped):
                summary.skipped.append({"external_id": item.external_id, "reason": item.reason})
            else:
                _store(project, item, summary)
        except IngestError as exc:
            summary.errors.append({**exc.as_dict(), "external_id": unit.external_id})
        if progress is not None:
            progress(done, total)
    return summary


def _store(project: Project, data: GazeRecordingData, summary: GazeImportSummary) -> None:
    existing = GazeRecording.objects.filter(
        project=project, source_format=data.source_format, external_id=data.external_id
    ).first()
    if existing is not None:
        if existing.checksum == data.checksum:
            summary.skipped.append({"external_id": data.external_id, "reason": "duplicate"})
            return
        raise IngestError(
            data.source,
            f"recording {data.external_id} is already stored (#{existing.id}) with other content; "
            "delete it to import this version",
            "checksum",
        )
    scan = scan_for_image(project=project, image_ref=data.image_ref)
    if scan is not None:
        _check_size(data, scan)
    try:
        with storage_all_or_nothing() as written, transaction.atomic():
            recording = GazeRecording.objects.create(
                project=project,
                scan=scan,
                study_id=scan.study_id if scan is not None else None,
                external_id=data.external_id,
                image_ref=data.image_ref,
                reader=data.reader,
                source_format=data.source_format,
                image_width=data.image_width,
                image_height=data.image_height,
                fixation_count=data.fixation_count,
                fixations=data.fixations,
                transcript=data.transcript,
                transcript_text=data.transcript_text,
                meta=data.meta,
                usable=data.usable,
                problems=data.problems,
                checksum=data.checksum,
            )
            for name, mask_path in sorted(data.anatomy_masks.items()):
                key = project_key(project, "gaze", data.source_format, data.external_id, f"{name}.png")
                stored_key = storage_save_path(key, mask_path)
                written.append(stored_key)
                GazeAnatomyMask.objects.create(
                    recording=recording,
                    name=name,
                    file=stored_key,
                    pixel_count=data.anatomy_mask_pixels.get(name, 0),
                )
    except IntegrityError as exc:
        raise IngestError(data.source, f"recording {data.external_id} could not be stored: {exc}") from exc
    summary.stored.append(
        {
            "id": recording.id,
            "external_id": recording.external_id,
            "fixations": recording.fixation_count,
            "scan_id": recording.scan_id,
        }
    )


def _check_size(data: GazeRecordingData, scan: Scan) -> None:
    size = scan_image_size(scan)
    if size is None:
        raise IngestError(
            data.source,
            f"scan #{scan.id} named {data.image_ref} is not a 2D image (shape {scan.shape})",
            "image",
        )
    if size != (data.image_width, data.image_height):
        raise IngestError(
            data.source,
            f"image size {data.image_width}x{data.image_height} differs from scan #{scan.id} "
            f"({size[0]}x{size[1]})",
            "image_size",
        )


def gaze_link_scans(*, project: Project) -> int:
    """Link the project's unlinked recordings to scans ingested since; returns how many were linked.

    A scan whose size differs from the recording's image size is not linked (logged as a warning).
    """
    linked = 0
    unlinked = list(GazeRecording.objects.filter(project=project, scan__isnull=True).exclude(image_ref=""))
    for i in range(0, len(unlinked), 500):
        chunk = unlinked[i : i + 500]
        scans: dict[str, Scan] = {}
        names = {r.image_ref for r in chunk}
        for scan in Scan.objects.filter(project=project, name__in=names).order_by("-id"):
            scans[scan.name] = scan  # the oldest wins, as in scan_for_image
        for recording in chunk:
            scan = scans.get(recording.image_ref)
            if scan is None:
                continue
            if scan_image_size(scan) != (recording.image_width, recording.image_height):
                log.warning(
                    "gaze recording %s: scan #%s has another image size; not linked", recording.id, scan.id
                )
                continue
            recording.scan = scan
            recording.study_id = scan.study_id
            recording.save(update_fields=["scan", "study"])
            linked += 1
    return linked


ANATOMY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def anatomy_mask_set(
    *, recording: GazeRecording, name: str, data: bytes | IO[bytes], filename: str = "mask.png"
) -> GazeAnatomyMask:
    """Store (or replace) the anatomy mask ``name`` of a recording's image from an annotation: a PNG at
    the image's resolution whose non-zero pixels are the anatomy (``data``: its bytes or a binary file).
    Its size is checked from its header before it is decoded. ``IngestError`` naming the file and
    field when it is not one; the old file is deleted only after the new row is committed."""
    if not ANATOMY_NAME.match(name or ""):
        raise IngestError(filename, f"{name!r}: lower-case letters, digits and _ (e.g. left_lung)", "name")
    size = (recording.image_width, recording.image_height)
    image = raster_open_bounded(
        io.BytesIO(data) if isinstance(data, bytes | bytearray) else data,
        name=filename,
        field="file",
        max_pixels=settings.IMAGE_MAX_PIXELS,
        expect_size=size,
    )
    try:
        image.load()
    except Exception as exc:  # Pillow raises several kinds
        raise IngestError(filename, f"not a readable image ({exc})", "file") from exc
    mask = np.asarray(image.convert("L")) > 0
    if not mask.any():
        raise IngestError(filename, "the mask is empty (no non-zero pixel)", "file")
    out = io.BytesIO()
    Image.fromarray(mask).convert("1").save(out, format="PNG")
    old = GazeAnatomyMask.objects.filter(recording=recording, name=name).first()
    key = project_key(
        recording.project, "gaze", recording.source_format, recording.external_id, f"{name}.png"
    )
    with storage_all_or_nothing() as written, transaction.atomic():
        stored = storage_save_bytes(key, out.getvalue())
        written.append(stored)
        if old is not None:
            old.delete()
        created = GazeAnatomyMask.objects.create(
            recording=recording, name=name, file=stored, pixel_count=int(mask.sum())
        )
        if old is not None and old.file.name != stored:
            transaction.on_commit(lambda: default_storage.delete(old.file.name))
    return created
