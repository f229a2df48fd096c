"""Which DICOM files form a series, and the identifiers a file lacks: the fallbacks other readers use.

Anonymised files often keep their identifying attributes but empty (SOPInstanceUID, SeriesInstanceUID,
StudyInstanceUID and PatientID all ``""``), or drop them. Other readers still read such files, and
here they are read the same way:

- SimpleITK / ITK (``ImageSeriesReader.GetGDCMSeriesIDs``, GDCM's ``SerieHelper``,
  ``CreateUniqueSeriesIdentifier``) name a series by its SeriesInstanceUID, refined ("series details")
  by SeriesNumber, SequenceName, SliceThickness, Rows and Columns, within the folder it reads: files whose
  UID is empty form the series ``""`` of their folder.
- dcm2niix (``isSameSet`` in ``console/nii_dicom_batch.cpp``) stacks two files only when manufacturer,
  modality, original/derived, SeriesNumber, the study (StudyInstanceUID, or study date and time), the image
  size, protocol name, echo and ImageOrientationPatient agree and their SeriesInstanceUIDs are equal
  (two empty UIDs are equal).
- 3D Slicer's ``DICOMScalarVolumePlugin`` splits what it loads into sub-series by ImageOrientationPatient
  (and content or trigger time, diffusion direction), then sorts slices along the slice normal.

The rule here, from those: a file whose SeriesInstanceUID is empty or absent joins the files of the same
folder that share FrameOfReferenceUID, ImageOrientationPatient (rounded to 1e-4), SeriesNumber,
SeriesDescription, Rows, Columns, Modality and StudyInstanceUID (empty or not). A file without
ImagePositionPatient, or with several frames, cannot be stacked with others: it is a series by itself.
Files with a SeriesInstanceUID are grouped by it, as before.

Each missing identifier gets a deterministic value, so that ingesting the same files again finds them
stored (nothing new), and each fallback is listed among the stored series' warnings:

- SOPInstanceUID: the file meta's MediaStorageSOPInstanceUID, else ``2.25.<n>`` from the file's sha256;
- SeriesInstanceUID: ``2.25.<n>`` from the sorted instance UIDs of the group;
- StudyInstanceUID: one study per series, ``2.25.<n>`` from the series UID;
- PatientID: one pseudonymous patient per study (``dicom_identity.dicom_patient_key``), never keyed by
  PatientName, which anonymisers set to the same placeholder in every file.

The derived values are written into the file's header (``DicomFile.header``), so de-identification
remaps them like any original UID; they never leave the process unremapped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from studies.ingest.dicom_values import raw_int, raw_text, text
from studies.ingest.types import DicomFile

__all__ = [
    "FALLBACK_WARNINGS",
    "dicom_group_series",
    "fallback_warnings",
    "instance_uid",
    "patient_id_missing",
    "series_identifiers_fill",
]

SOP_FROM_FILE_META = "sop:file_meta"
SOP_FROM_CONTENT = "sop:content"
SERIES_DERIVED = "series"
STUDY_DERIVED = "study"
PATIENT_FROM_STUDY = "patient"
ORIENTATION_DECIMALS = 4

FALLBACK_WARNINGS = {
    SOP_FROM_FILE_META: "SOPInstanceUID empty in {n} of {total} files: the file meta's "
    "MediaStorageSOPInstanceUID used",
    SOP_FROM_CONTENT: "SOPInstanceUID empty in {n} of {total} files and no MediaStorageSOPInstanceUID: "
    "a UID derived from each file's content (sha256) used",
    SERIES_DERIVED: "SeriesInstanceUID empty: series formed from the files of one folder sharing "
    "FrameOfReferenceUID, ImageOrientationPatient, SeriesNumber, SeriesDescription, Rows, Columns and "
    "Modality (as GDCM/SimpleITK, dcm2niix and 3D Slicer group them); its UID derived from its instances",
    STUDY_DERIVED: "StudyInstanceUID empty: this series is a study of its own (UID derived from the series)",
    PATIENT_FROM_STUDY: "PatientID empty: the study is a pseudonymous patient of its own (PatientName is not "
    "used to join studies)",
}


def derived_uid(kind: str, value: str) -> str:
    """A DICOM UID (``2.25.<integer>``, at most 44 characters) derived from ``value``: the same value
    always gives the same UID."""
    digest = hashlib.sha256(f"groundlab-fallback-{kind}\x00{value}".encode()).hexdigest()
    return "2.25." + str(int(digest[:32], 16))


def instance_uid(ds: Any, checksum: str) -> tuple[str, str | None]:
    """The file's SOPInstanceUID, else its file meta's MediaStorageSOPInstanceUID, else one derived from
    its content; and which fallback was used (None, ``SOP_FROM_FILE_META`` or ``SOP_FROM_CONTENT``)."""
    uid = raw_text(ds, "SOPInstanceUID")
    if uid:
        return uid, None
    meta = getattr(ds, "file_meta", None)
    uid = text(meta.get("MediaStorageSOPInstanceUID")) if meta is not None else ""
    if uid:
        return uid, SOP_FROM_FILE_META
    return derived_uid("sop", checksum), SOP_FROM_CONTENT


def patient_id_missing(ds: Any) -> bool:
    return not text(ds.get("PatientID"))


def _series_key(f: DicomFile) -> tuple:
    """What files without a SeriesInstanceUID must share to form one series (see the module docstring)."""
    ds = f.header
    alone = f.sop_uid if (f.position is None or f.number_of_frames > 1) else ""
    orientation = (
        tuple(round(float(v), ORIENTATION_DECIMALS) + 0.0 for v in f.orientation) if f.orientation else None
    )
    return (
        str(f.path.parent),
        raw_text(ds, "FrameOfReferenceUID"),
        orientation,
        raw_int(ds, "SeriesNumber"),
        text(ds.get("SeriesDescription")),
        f.rows,
        f.columns,
        f.modality,
        f.study_uid,
        alone,
    )


def series_identifiers_fill(f: DicomFile) -> None:
    """Once ``f.series_uid`` is known: its study when it has none (derived from the series), and a note
    when PatientID is empty (``dicom_identity`` then keys the patient by the study)."""
    if not f.study_uid:
        f.study_uid = derived_uid("study", f.series_uid)
        f.header.StudyInstanceUID = f.study_uid
        f.fallbacks.append(STUDY_DERIVED)
    if patient_id_missing(f.header) and PATIENT_FROM_STUDY not in f.fallbacks:
        f.fallbacks.append(PATIENT_FROM_STUDY)


def dicom_group_series(files: Iterable[DicomFile]) -> dict[str, list[DicomFile]]:
    """Headers grouped into series, series and files in the order first seen: by SeriesInstanceUID, and
    files without one by what they share (module docstring), each such group given a derived
    SeriesInstanceUID, StudyInstanceUID if it has none, and the ``fallbacks`` it used."""
    slots: dict[tuple, list[DicomFile]] = {}
    for f in files:
        key = ("uid", f.series_uid) if f.series_uid else ("key", _series_key(f))
        slots.setdefault(key, []).append(f)
    groups: dict[str, list[DicomFile]] = {}
    for (kind, _), members in slots.items():
        if kind == "key":
            series_uid = derived_uid("series", "\n".join(sorted(f.sop_uid for f in members)))
            for f in members:
                f.series_uid = series_uid
                f.header.SeriesInstanceUID = series_uid
                f.fallbacks.append(SERIES_DERIVED)
                series_identifiers_fill(f)
        groups.setdefault(members[0].series_uid, []).extend(members)  # copies in two folders meet here
    return groups


def fallback_warnings(files: Sequence[DicomFile]) -> list[str]:
    """One warning per fallback the files of a series used, in the order of ``FALLBACK_WARNINGS``."""
    counts = {code: 0 for code in FALLBACK_WARNINGS}
    for f in files:
        for code in set(f.fallbacks):
            if code in counts:
                counts[code] += 1
    return [FALLBACK_WARNINGS[code].format(n=n, total=len(files)) for code, n in counts.items() if n]
