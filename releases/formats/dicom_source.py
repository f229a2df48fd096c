"""The de-identified source series of the ``dicom-seg`` export, rebuilt from the canonical image.

Files: ``series/<case_id>/<nnnn>.dcm``, one single-frame instance per slice k (nnnn = k + 1, 4 digits at
least); ``releases.formats.dicom_seg`` writes them through ``write_series`` and references them from the
SEG (``releases.formats.dicom_segmentation``).

Slice ``k`` is the canonical array's ``[:, :, k]`` (columns = X, rows = Y), so file ``0001.dcm`` is
slice 0 of the NIfTI. CT becomes CT Image Storage, any other modality Secondary Capture
Image Storage (Modality kept) with the same plane attributes. Pixels: integer images that fit int16
(CT in HU) or uint16 are stored as they are with RescaleSlope 1 / Intercept 0; other images are
rescaled to uint16 with one slope and intercept for the series. UIDs: StudyInstanceUID,
SeriesInstanceUID and SOPInstanceUIDs are the record's (remapped) ones, SOP UIDs in slice order when
there is one per slice; missing ones are derived deterministically from the case (pydicom
``generate_uid`` with the case's ids as entropy), so a rebuilt series keeps its UIDs across releases.
Patient, study, series and equipment attributes come from the record's de-identified header when there
is one (PatientID/PatientName otherwise the patient's pseudonym). Geometry comes from the affine
converted RAS+ -> LPS (``diag(-1, -1, 1, 1) @ affine``): ImageOrientationPatient = the unit X column
(row cosine) and unit Y column (column cosine), PixelSpacing = [|Y column|, |X column|] (row spacing,
column spacing), ImagePositionPatient of slice k = origin + k x Z column, SliceThickness = |Z column|.
So the LPS position of pixel (column i, row j) of instance k is ``diag(-1, -1, 1, 1) @ affine @ (i, j,
k, 1)``, the same point as NIfTI voxel [i, j, k].
"""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from releases.records import CaseRecord, FormatError, Sink
from studies.deid.core import header_from_json

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Attributes copied from the de-identified header: patient, study, series, equipment, acquisition.
COPIED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "SeriesDate",
    "SeriesTime",
    "SeriesDescription",
    "SeriesNumber",
    "BodyPartExamined",
    "PatientPosition",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "AcquisitionDate",
    "AcquisitionTime",
    "ContentDate",
    "ContentTime",
    "KVP",
    "ConvolutionKernel",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
)
# Type 2 attributes: present, empty when unknown.
TYPE2 = (
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",
    "Manufacturer",
    "PositionReferenceIndicator",
)


def derived_uid(*parts: str) -> str:
    """A UID that is the same whenever ``parts`` are (pydicom's root, SHA-512 of the parts)."""
    return str(generate_uid(entropy_srcs=["groundlab-release", *parts]))


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def plane_geometry(affine: np.ndarray) -> dict[str, Any]:
    """DICOM plane attributes of a canonical affine (voxel (column, row, slice) -> RAS+ mm).

    Returns ``orientation`` (6 cosines), ``pixel_spacing`` [row spacing, column spacing], ``origin`` (LPS
    of voxel 0), ``step`` (LPS vector from one slice to the next) and ``thickness``."""
    lps = LPS_FROM_RAS @ np.asarray(affine, dtype=float)
    col_step, row_step, step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    dx, dy = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    if dx == 0 or dy == 0:
        raise ValueError("the affine has a zero-length in-plane axis")
    return {
        "orientation": [*(col_step / dx), *(row_step / dy)],
        "pixel_spacing": [dy, dx],
        "origin": lps[:3, 3],
        "step": step,
        "thickness": float(np.linalg.norm(step)),
    }


def _storage(array: np.ndarray) -> tuple[np.dtype, float, float]:
    """Stored dtype, slope and intercept for ``array`` (value = stored * slope + intercept).

    Integer values (in an integer or a float array) that fit int16 or uint16 are stored as they are;
    anything else is scaled onto uint16 over its finite range (NaN becomes the minimum)."""
    finite = array if array.dtype.kind in "biu" else array[np.isfinite(array)]
    if finite.size == 0:
        return np.dtype(np.int16), 1.0, 0.0
    lo, hi = float(finite.min()), float(finite.max())
    if array.dtype.kind in "biu" or np.array_equal(finite, np.round(finite)):
        if lo >= -32768 and hi <= 32767:
            return np.dtype(np.int16), 1.0, 0.0
        if lo >= 0 and hi <= 65535:
            return np.dtype(np.uint16), 1.0, 0.0
    return np.dtype(np.uint16), ((hi - lo) / 65535.0 if hi > lo else 1.0), lo


def _base_dataset(case: CaseRecord) -> Dataset:
    """The attributes shared by every instance of the rebuilt series."""
    image = case.image
    ds = Dataset()
    if image.dicom_header:
        header = header_from_json(image.dicom_header)
        for keyword in COPIED:
            if keyword in header and header[keyword].value not in (None, ""):
                ds[keyword] = copy.deepcopy(header[keyword])
    ds.PatientID = ds.get("PatientID") or case.patient_id
    ds.PatientName = ds.get("PatientName") or case.patient_id
    for keyword in TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, None)
    ds.StudyInstanceUID = image.study_uid or derived_uid("study", case.study_id or case.case_id)
    ds.SeriesInstanceUID = image.series_uid or derived_uid("series", case.case_id)
    ds.FrameOfReferenceUID = ds.get("FrameOfReferenceUID") or derived_uid(
        "frame-of-reference", str(ds.SeriesInstanceUID)
    )
    ds.Modality = image.modality or "OT"
    if ds.Modality == "CT":
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        for keyword in ("KVP", "AcquisitionNumber"):
            if keyword not in ds:
                setattr(ds, keyword, None)
    else:
        ds.SOPClassUID = SECONDARY_CAPTURE_IMAGE_STORAGE
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ConversionType = "WSD"
    ds.DerivationDescription = "Rebuilt from the de-identified canonical image of a dataset release"
    return ds


def write_series(case: CaseRecord, sink: Sink) -> tuple[list[Dataset], list[str]]:
    """Write one instance per slice; returns their headers (no pixel data), slice order, and paths."""
    image = case.image
    array = image.load()
    if array.ndim != 3:
        raise FormatError(f"{case.case_id}.image", f"expected a 3D array, got shape {list(array.shape)}")
    columns, rows, depth = (int(n) for n in array.shape)
    try:
        geometry = plane_geometry(image.affine)
    except ValueError as exc:
        raise FormatError(f"{case.case_id}.image", str(exc)) from exc
    dtype, slope, intercept = _storage(array)
    base = _base_dataset(case)
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = rows, columns
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 16, 15
    base.PixelRepresentation = 1 if dtype == np.int16 else 0
    base.RescaleIntercept, base.RescaleSlope = _ds(intercept), _ds(slope)
    if base.Modality != "CT":
        base.RescaleType = "US"
    base.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
    base.PixelSpacing = [_ds(v) for v in geometry["pixel_spacing"]]
    base.SliceThickness = _ds(geometry["thickness"])
    uids = list(image.sop_uids) if len(image.sop_uids) == depth else []
    if not uids:
        uids = [derived_uid("instance", str(base.SeriesInstanceUID), str(k)) for k in range(depth)]
    width = max(4, len(str(depth)))
    headers, files = [], []
    for k in range(depth):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = uids[k]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in geometry["origin"] + k * geometry["step"]]
        values = array[:, :, k].T
        if slope != 1.0 or intercept != 0.0:
            values = np.round((np.nan_to_num(values.astype(np.float64), nan=intercept) - intercept) / slope)
            values = np.clip(values, 0, 65535)
        ds.PixelData = np.ascontiguousarray(values, dtype=dtype.newbyteorder("<")).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        path = f"series/{case.case_id}/{k + 1:0{width}d}.dcm"
        sink.put_bytes(path, buf.getvalue())
        files.append(path)
        del ds.PixelData
        headers.append(ds)
    return headers, files
