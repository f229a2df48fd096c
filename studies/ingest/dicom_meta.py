"""Series metadata kept on a Volume: PET SUV header fields, window presets, burned-in annotation.

Every value is a plain JSON type (str, float, int, list, dict) so that it can be stored as it is.
Dates and times stay raw DICOM strings (``YYYYMMDD``, ``HHMMSS.FFFFFF``); the caller shifts dates.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from studies.ingest.dicom_geometry import Frame
from studies.ingest.dicom_values import as_list, text
from studies.ingest.types import DicomFile

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC and multi-frame SC storage classes
PHILIPS_PET_CREATOR = "Philips PET Private Group"
# (7053,xx00) SUV scale factor, (7053,xx09) activity concentration scale factor
PHILIPS_FACTORS = {"SUVScaleFactor": 0x00, "ActivityConcentrationScaleFactor": 0x09}


def float_or_none(value: Any) -> float | None:
    try:
        out = float(text(value)) if not isinstance(value, int | float) else float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None  # NaN -> None


def _seconds(time_text: str) -> float:
    """HHMMSS.FFFFFF (any prefix of it) -> seconds since midnight; unparseable -> +inf."""
    t = time_text.strip().replace(":", "")
    try:
        hours = int(t[0:2]) if len(t) >= 2 else 0
        minutes = int(t[2:4]) if len(t) >= 4 else 0
        seconds = float(t[4:]) if len(t) > 4 else 0.0
    except ValueError:
        return float("inf")
    return hours * 3600 + minutes * 60 + seconds


def _philips_factors(ds: Dataset) -> dict[str, float]:
    try:
        block = ds.private_block(0x7053, PHILIPS_PET_CREATOR)
        tags = {name: block.get_tag(offset) for name, offset in PHILIPS_FACTORS.items()}
    except (KeyError, ValueError):  # creator missing or spelt otherwise: the block Philips uses
        tags = {name: 0x70531000 + offset for name, offset in PHILIPS_FACTORS.items()}
    out: dict[str, float] = {}
    for name, tag in tags.items():
        elem = ds.get(tag)
        value = float_or_none(elem.value) if elem is not None else None
        if value is not None:
            out[name] = value
    return out


def pet_meta(files: list[DicomFile]) -> dict[str, Any]:
    """The header fields an SUV computation needs, shaped like the cornerstonejs calculate-suv input.

    Numbers are floats (PatientWeight kg, PatientSize m, RadionuclideTotalDose Bq, RadionuclideHalfLife
    s, FrameReferenceTime and ActualFrameDuration ms), dates/times raw strings. AcquisitionDate/Time are
    the earliest over the instances (and FrameReferenceTime/ActualFrameDuration those of that instance).
    ``PhilipsPETPrivateGroup`` holds the private (7053,1000) SUV and (7053,1009) activity concentration
    scale factors where present.
    """
    first = files[0].header

    def earliest_key(f: DicomFile) -> tuple[str, float]:
        return text(f.header.get("AcquisitionDate")) or "99999999", _seconds(
            text(f.header.get("AcquisitionTime")) or "999999"
        )

    earliest = min(files, key=earliest_key).header
    radio: Dataset | None = None
    seq = first.get("RadiopharmaceuticalInformationSequence")
    if seq:
        radio = seq[0]

    def radio_get(keyword: str) -> Any:
        return radio.get(keyword) if radio is not None else None

    return {
        "Manufacturer": text(first.get("Manufacturer")),
        "PatientWeight": float_or_none(first.get("PatientWeight")),
        "PatientSize": float_or_none(first.get("PatientSize")),
        "PatientSex": text(first.get("PatientSex")),
        "Units": text(first.get("Units")),
        "DecayCorrection": text(first.get("DecayCorrection")),
        "CorrectedImage": [text(v) for v in as_list(first.get("CorrectedImage"))],
        "SeriesDate": text(first.get("SeriesDate")),
        "SeriesTime": text(first.get("SeriesTime")),
        "AcquisitionDate": text(earliest.get("AcquisitionDate")),
        "AcquisitionTime": text(earliest.get("AcquisitionTime")),
        "FrameReferenceTime": float_or_none(earliest.get("FrameReferenceTime")),
        "ActualFrameDuration": float_or_none(earliest.get("ActualFrameDuration")),
        "RadionuclideTotalDose": float_or_none(radio_get("RadionuclideTotalDose")),
        "RadionuclideHalfLife": float_or_none(radio_get("RadionuclideHalfLife")),
        "RadiopharmaceuticalStartTime": text(radio_get("RadiopharmaceuticalStartTime")),
        "RadiopharmaceuticalStartDateTime": text(radio_get("RadiopharmaceuticalStartDateTime")),
        "PhilipsPETPrivateGroup": _philips_factors(first),
    }


def window_meta(frame: Frame, invert_about: float | None = None) -> list[dict[str, Any]]:
    """Window presets of the first slice: ``[{"center", "width", "name"}]`` in output units.

    ``invert_about`` (MONOCHROME1 images, inverted on load): a center c becomes ``invert_about - c``.
    """
    out = []
    for center, width, name in frame.windows:
        if width <= 0:
            continue
        if invert_about is not None:
            center = invert_about - center
        out.append({"center": float(center), "width": float(width), "name": name})
    return out


def burned_in(files: list[DicomFile]) -> str:
    """YES if any instance says BurnedInAnnotation YES; UNKNOWN if it is missing from a secondary
    capture (SC SOP class, ConversionType present, or modality OT); else NO."""
    unknown = False
    for f in files:
        ds = f.header
        value = text(ds.get("BurnedInAnnotation")).upper()
        if value == "YES":
            return "YES"
        if value:
            continue
        sop_class = text(ds.get("SOPClassUID"))
        if sop_class.startswith(SECONDARY_CAPTURE_PREFIX) or "ConversionType" in ds or f.modality == "OT":
            unknown = True
    return "UNKNOWN" if unknown else "NO"
