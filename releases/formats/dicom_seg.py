"""DICOM: the de-identified source series rebuilt from the canonical image, plus one DICOM SEG per case.

Files::

    series/<case_id>/<nnnn>.dcm   one single-frame instance per slice k (nnnn = k + 1, 4 digits at least)
    seg/<case_id>.dcm             a BINARY Segmentation (highdicom) of those instances, one segment per
                                  mask label; absent when the case has no mask label
    index.json                    cases, their files, UIDs and segment numbers <-> label ids

Source series: slice ``k`` is the canonical array's ``[:, :, k]`` (columns = X, rows = Y), so file
``0001.dcm`` is slice 0 of the NIfTI. CT becomes CT Image Storage, any other modality Secondary Capture
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

SEG: segment ``n`` is the ``n``-th mask label (label order); label = the finding text (64 characters
at most; a context label's: the anatomy's name, e.g. "Left lung"), SegmentDescription = the full text
(1024 at most), TrackingID = the label id, TrackingUID derived from the case and label, display colour
``PALETTE[n - 1]`` (cycling). Category and type (with a laterality modifier, an anatomic region) say
what the segment is, from ``releases.formats.dicom_codes``: an anatomy code (context labels: the lungs
generator's left_lung / right_lung, ...) -> SCT Anatomical Structure / Lung + Left, ...; a ReXGroundingCT
category or CheXpert observation -> SCT Morphologically Abnormal Structure / its concept (Mass, Nodule,
Pleural effusion, Ground glass opacity, ...); no exact concept -> Lesion, the text saying what.
Algorithm type MANUAL for labels from a human, AUTOMATIC (with an algorithm identification from the
provenance) otherwise. Empty frames are omitted.

Reproducible: exporting a release again writes the same bytes. The SEG's UIDs (series, instance,
dimension organization) are derived from the source series and the release (name, version); its dates
and times (Series, Content, Instance Creation, highdicom's Contributing Equipment entry) are the release's
freeze time in UTC (``ReleaseMeta.frozen_at``, whole seconds; 2000-01-01 00:00:00 for a release without
one), never the clock.

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

import copy
import datetime
import io
import json
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from releases.formats.common import check_unique, mask_on_grid, scratch_file, split_labels
from releases.formats.dicom_codes import SegmentCodes, segment_codes
from releases.records import (
    REPORT_ONLY_FIELDS,
    CaseRecord,
    ExportSummary,
    FormatError,
    LabelRecord,
    ReleaseMeta,
    Sink,
    label_dict,
)
from studies.deid.core import header_from_json

NAME = "dicom-seg"
LABEL_KINDS = ("mask", "none")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SOFTWARE = "groundlab releases dicom-seg 1"
# RecommendedDisplayCIELabValue of segment n: colour n of this list (readers that find none, such as
# dcmqi in 3D Slicer, give every segment the same default colour)
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
)  # fmt: skip
NO_FREEZE = datetime.datetime(
    2000, 1, 1
)  # the SEG's dates when the release has no freeze time (never the clock)

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
        sources, files = _write_series(case, sink)
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
            seg = _segmentation(case, masks, sources, meta)
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
            entry["segments"] = [_segment_entry(n, label) for n, label in enumerate(masks, start=1)]
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


def _segment_entry(n: int, label: LabelRecord) -> dict[str, Any]:
    coded = _codes(label)
    return {
        "segment_number": n,
        "label_id": label.label_id,
        "text": label.text,
        "category": label.category,
        "code": label.code,
        "role": label.role,
        "source": label.source,
        "algorithm_type": _algorithm_type(label).value,
        "property_category": _coded(coded.category),
        "property_type": _coded(coded.type),
        "property_type_modifier": _coded(coded.modifier) if coded.modifier is not None else None,
        "anatomic_region": _coded(coded.region) if coded.region is not None else None,
        "coded_exactly": coded.exact,
    }


# --- Source series ---------------------------------------------------------------------------------------


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


def _write_series(case: CaseRecord, sink: Sink) -> tuple[list[Dataset], list[str]]:
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


# --- Segmentation -----------------------------------------------------------------------------------------


def _algorithm_type(label: LabelRecord) -> hd.seg.SegmentAlgorithmTypeValues:
    if label.source == "human":
        return hd.seg.SegmentAlgorithmTypeValues.MANUAL
    return hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC


def _text(value: str, limit: int) -> str:
    """``value`` as a DICOM LO/ST value: no backslash or control characters, at most ``limit`` characters."""
    value = re.sub(r"[\x00-\x1f\x7f]+", " ", value.replace("\\", "/")).strip()
    return value[:limit].rstrip()


def _first(provenance: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
    """The first non-empty value of ``keys`` in ``provenance``, as text ("" when none)."""
    for key in keys:
        value = (provenance or {}).get(key)
        if value not in (None, ""):
            return str(value)
    return ""


def _coded(code) -> dict[str, str]:
    return {"scheme": code.scheme_designator, "value": code.value, "meaning": code.meaning}


def _codes(label: LabelRecord) -> SegmentCodes:
    return segment_codes(code=label.code, category=label.category, text=label.text, role=label.role)


def _segment(n: int, case: CaseRecord, label: LabelRecord) -> hd.seg.SegmentDescription:
    algorithm = _algorithm_type(label)
    identification = None
    if algorithm != hd.seg.SegmentAlgorithmTypeValues.MANUAL:
        # the release's provenance: weak labels name a labeler / model, model proposals a source and version
        name = _first(label.provenance, ("model", "labeler", "source", "generator"))
        name = name or f"groundlab {label.source}"
        version = _first(label.provenance, ("model_version", "prompt_version", "version")) or "unknown"
        identification = hd.AlgorithmIdentificationSequence(
            name=_text(name, 64) or label.source,
            family=codes.DCM.ArtificialIntelligence,
            version=_text(version, 64) or "unknown",
        )
    coded = _codes(label)
    text = coded.name if label.role == "context" and coded.name else label.text
    description = hd.seg.SegmentDescription(
        segment_number=n,
        segment_label=_text(text, 64) or _text(label.label_id, 64) or f"finding {n}",
        segmented_property_category=coded.category,
        segmented_property_type=coded.type,
        algorithm_type=algorithm,
        algorithm_identification=identification,
        tracking_uid=derived_uid("tracking", case.case_id, label.label_id),
        tracking_id=_text(label.label_id, 64),
        anatomic_regions=[coded.region] if coded.region is not None else None,
        display_color=hd.color.CIELabColor.from_rgb(*PALETTE[(n - 1) % len(PALETTE)]),
    )
    if coded.modifier is not None:
        item = description.SegmentedPropertyTypeCodeSequence[0]
        item.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept.from_code(coded.modifier)]
    return description


def segment_description(n: int, case_id: str, label: LabelRecord) -> hd.seg.SegmentDescription:
    """Segment ``n`` of ``label`` as this export writes it (codes, colour, algorithm, tracking from
    ``case_id``): the PACS store-back (``pacs.storeback``) describes its segments with it too."""
    return _segment(n, _CaseId(case_id), label)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _CaseId:
    case_id: str


def _stamp(meta: ReleaseMeta) -> datetime.datetime:
    """When the SEG was made, as written into it: the release's freeze (UTC, whole seconds), else a fixed
    date, never the clock, so that exporting a release again writes the same bytes."""
    if meta.frozen_at is None:
        return NO_FREEZE
    stamp = meta.frozen_at
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(datetime.UTC).replace(tzinfo=None)
    return stamp.replace(microsecond=0)


def _segmentation(
    case: CaseRecord, masks: list[LabelRecord], sources: list[Dataset], meta: ReleaseMeta
) -> hd.seg.Segmentation:
    columns, rows, depth = (int(n) for n in case.image.shape)
    pixels = np.zeros((depth, rows, columns, len(masks)), dtype=bool)  # frames (Z, rows = Y, columns = X)
    for s, label in enumerate(masks):
        pixels[..., s] = mask_on_grid(case, label).transpose(2, 1, 0)
    series_uid = str(sources[0].SeriesInstanceUID)
    release = [meta.name, str(meta.version)]
    stamp = _stamp(meta)
    with warnings.catch_warnings():
        # pseudonyms are single-component person names, as the de-identification writes them
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_segment(n, case, label) for n, label in enumerate(masks, start=1)],
            series_instance_uid=derived_uid("seg-series", series_uid, *release),
            series_number=1000,
            sop_instance_uid=derived_uid("seg-instance", series_uid, *release),
            instance_number=1,
            manufacturer="groundlab",
            manufacturer_model_name="groundlab releases",
            software_versions=SOFTWARE,
            device_serial_number="0",
            content_label="FINDINGS",
            content_description=_text(f"{meta.name} v{meta.version}", 64),
            series_description=_text(f"Segmentation {meta.name} v{meta.version}", 64),
            content_date=stamp.date(),
            content_time=stamp.time(),
            series_date=stamp.date(),
            series_time=stamp.time(),
            omit_empty_frames=bool(pixels.any()),
        )
    _pin_clock_and_random(seg, stamp)
    for item, label in zip(seg.SegmentSequence, masks):
        item.SegmentDescription = _text(label.text, 1024)
    return seg


def _pin_clock_and_random(seg: hd.seg.Segmentation, stamp: datetime.datetime) -> None:
    """Replace what highdicom 0.28 takes from the clock or a random UID (``base.py``: instance creation
    date and time; ``base_content.ContributingEquipment.for_highdicom``: its contribution date-time;
    ``image.py``: the Dimension Organization UID) by the stamp and a UID derived from the SEG's own."""
    seg.InstanceCreationDate = stamp.strftime("%Y%m%d")
    seg.InstanceCreationTime = stamp.strftime("%H%M%S")
    for item in seg.get("ContributingEquipmentSequence", []):
        if item.get("ManufacturerModelName") == "highdicom":
            item.ContributionDateTime = stamp.strftime("%Y%m%d%H%M%S")
    dimension_uid = derived_uid("seg-dimension-organization", str(seg.SOPInstanceUID))
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = dimension_uid
    for item in seg.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = dimension_uid
