"""Typed payloads passed between the readers (pure functions) and the ingest services (database)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ApplicationError


class IngestError(ApplicationError):
    """A unit (file, series, recording, report file) cannot be ingested. Names the file and field (a 400
    when a request meets it; an ingest job lists it per file)."""

    def __init__(self, file: str | Path, reason: str, field: str | None = None):
        super().__init__(f"{file}: {reason}", field=field)
        self.file = str(file)
        self.reason = reason
        self.field = field

    def __str__(self) -> str:
        return f"{self.file}" + (f" [{self.field}]" if self.field else "") + f": {self.reason}"

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "field": self.field or "file", self.field or "file": self.message}

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.file, self.reason, self.field))

    def as_dict(self) -> dict[str, str]:
        out = {"file": self.file, "reason": self.reason}
        if self.field:
            out["field"] = self.field
        return out


@dataclass
class DicomFile:
    """One DICOM instance's header, read without pixel data.

    ``position`` is ImagePositionPatient (LPS mm), ``orientation`` ImageOrientationPatient (6 floats).
    ``header`` is the pydicom Dataset without PixelData (for de-identification and metadata), with the
    identifiers the file lacked filled in (``studies.ingest.dicom_series``).
    """

    path: Path
    checksum: str  # sha256 of the file bytes
    sop_uid: str
    series_uid: str
    study_uid: str
    modality: str
    header: Any  # pydicom.Dataset
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int = 1
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    has_pixels: bool = True
    fallbacks: list[str] = field(default_factory=list)  # identifiers filled in (``dicom_series``)


@dataclass
class Volume:
    """Pixels of one image series in canonical form, ready to be written as NIfTI.

    ``array`` axis order: ``(X, Y, Z)`` for 3D (X = image column, Y = image row, Z = slice along the
    slice normal) or ``(X, Y)`` for 2D radiographs; Fortran-ordered so NIfTI writing does not copy.
    ``affine`` maps (i, j, k) voxel indices to RAS+ millimetres. ``spacing`` is mm per axis.
    CT values are Hounsfield units (RescaleSlope/Intercept applied); MONOCHROME1 is inverted.
    ``slice_uids[k]`` is the original SOPInstanceUID of the single-frame DICOM instance that became slice
    ``k`` of a 3D DICOM volume ("" for a slice that is a frame of a multi-frame instance); empty for 2D
    images and other formats.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    modality: str
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    burned_in_annotation: str = "NO"  # YES, NO or UNKNOWN
    series_description: str = ""
    slice_uids: list[str] = field(default_factory=list)

    @property
    def ndim(self) -> int:
        return self.array.ndim
