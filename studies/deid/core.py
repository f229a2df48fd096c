"""De-identification of DICOM headers (PS3.15 Annex E basic profile), identity extraction, JSON form.

Pure functions on pydicom Datasets; nothing here touches the database or storage. The attribute table and
the options applied are in ``studies.deid.profile``.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from studies import scrub
from studies.deid.profile import (
    AGE_CAP,
    AGE_CAP_YEARS,
    BASIC_PROFILE,
    BIRTH_TAGS,
    METHOD_CODES,
    REMOVED_GROUP_RANGES,
    SAFE_PRIVATE,
    STANDARD_CODING_SCHEMES,
    D,
    K,
    X,
    Z,
)
from studies.pseudonyms import uid_remap

DICOM_UID_ROOT = "1.2.840.10008."
PIXEL_TAGS: frozenset[BaseTag] = frozenset(
    Tag(tag_for_keyword(k)) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
)
# UI attributes that name software or coding schemes, never a patient, study or instance.
_UID_KEEP: frozenset[BaseTag] = frozenset(
    Tag(tag_for_keyword(k))
    for k in (
        "ImplementationClassUID",
        "TransferSyntaxUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
    )
)
_PATIENT_NAME = Tag(0x0010, 0x0010)
_PATIENT_ID = Tag(0x0010, 0x0020)
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_MAX_LEN = {"AE": 16, "CS": 16, "SH": 16}
_CODING_SCHEME = Tag(0x0008, 0x0102)  # CodingSchemeDesignator
_AGE = re.compile(r"(\d+)\s*([DWMYdwmy]?)")
_YEARS_PER_UNIT = {
    "D": Fraction(100, 36525),
    "W": Fraction(700, 36525),
    "M": Fraction(1, 12),
    "Y": Fraction(1),
}
METHOD_DESCRIPTION = [
    "DICOM PS3.15 E.1 Basic Profile",
    "Retain Longitudinal Modified Dates",
    "Retain Patient Characteristics",
    "Retain Safe Private: Philips SUV",
]


# --- Public API -------------------------------------------------------------------------------------


def deidentify_header(ds: Dataset, *, secret: str, pseudonym: str, date_shift_days: int) -> Dataset:
    """A de-identified copy of ``ds`` (the input is not changed).

    PixelData (and float pixel data) are dropped: pixels are stored separately. The file meta is kept with
    MediaStorageSOPInstanceUID remapped like SOPInstanceUID. PatientName and PatientID become
    ``pseudonym``; every date is shifted by ``date_shift_days`` (negative: earlier); every non-standard UID
    is replaced by ``uid_remap(secret, uid)``, so that the same UID maps to the same new one in every file
    of the project. Ages (AS) of 90 years or more become ``090Y`` (``age_capped``); code items of private
    or local coding schemes are dropped, and a code sequence left empty with them
    (``private_coding_scheme``).
    """
    out = Dataset()
    for elem in ds:
        if elem.tag not in PIXEL_TAGS:
            out.add(copy.deepcopy(elem))
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.file_meta = FileMetaDataset(copy.deepcopy(meta))
        _clean(out.file_meta, _Context(secret, date_shift_days), top=False)

    _clean(out, _Context(secret, date_shift_days), top=True)
    out.PatientName = pseudonym
    out.PatientID = pseudonym
    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    out.DeidentificationMethod = METHOD_DESCRIPTION
    out.DeidentificationMethodCodeSequence = Sequence([_code_item(v, m) for v, m in METHOD_CODES])
    return out


def header_identity(ds: Dataset) -> dict[str, Any]:
    """The original identifiers of ``ds``, for the caller to key patients and studies and to scrub reports.

    ``scrub_tokens`` is a sorted list of the tokens of ``scrub.identifier_tokens`` over the patient's
    names and ids, the accession number, the physicians' and operators' names and the birth date.
    """
    names = [
        *_strings(ds, "PatientName"),
        *_strings(ds, "OtherPatientNames"),
        *_strings(ds, "ReferringPhysicianName"),
        *_strings(ds, "PerformingPhysicianName"),
        *_strings(ds, "NameOfPhysiciansReadingStudy"),
        *_strings(ds, "OperatorsName"),
    ]
    other_ids = [*_strings(ds, "OtherPatientIDs")]
    for item in ds.get("OtherPatientIDsSequence") or []:
        other_ids += _strings(item, "PatientID")
    ids = [*_strings(ds, "PatientID"), *_strings(ds, "AccessionNumber"), *other_ids]
    birth = _text(ds, "PatientBirthDate")
    return {
        "patient_id": _text(ds, "PatientID"),
        "patient_name": _text(ds, "PatientName"),
        "birth_date": birth,
        "accession": _text(ds, "AccessionNumber"),
        "study_uid": _text(ds, "StudyInstanceUID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "sop_uid": _text(ds, "SOPInstanceUID"),
        "study_date": _text(ds, "StudyDate"),
        "scrub_tokens": sorted(scrub.identifier_tokens(names=names, ids=ids, dates=[birth])),
    }


def age_capped(value: str) -> str:
    """An Age String (``nnnD``, ``nnnW``, ``nnnM``, ``nnnY``; a unit-less number is years) with ages of
    ``AGE_CAP_YEARS`` (90) years or more written as ``090Y``, whatever their unit: HIPAA Safe Harbor (45
    CFR 164.514(b)(2)(i)(C)) keeps ages over 89 only as one category, "90 or older". Younger ages are
    returned as given (a whole year counts: ``1079M`` is 89 years 11 months and stays); a value that is
    not an age is emptied."""
    match = _AGE.fullmatch(value.strip())
    if match is None:
        return ""
    count, unit = int(match[1]), (match[2] or "Y").upper()
    return AGE_CAP if count * _YEARS_PER_UNIT[unit] >= AGE_CAP_YEARS else value


def private_coding_scheme(designator: str) -> bool:
    """Whether a Coding Scheme Designator names a private, local or otherwise non-standard coding scheme.

    DICOM PS3.3 Section 8.2: designators beginning with "99" and the designator "L" are private or local
    coding schemes (HL7 v2 Table 0396; PS3.16 Chapter 8 likewise: "local or private coding schemes shall
    be identified by an alphanumeric identifier beginning with the characters "99""). ``LOCAL`` and any
    designator that is not in PS3.16 Table 8-1 (``profile.STANDARD_CODING_SCHEMES``), an empty one
    included, count as private too."""
    text = designator.strip()
    return text.startswith("99") or text not in STANDARD_CODING_SCHEMES


def burned_in_status(ds: Dataset) -> str:
    """``YES`` when BurnedInAnnotation says so; ``UNKNOWN`` when a secondary capture does not say; else
    ``NO``."""
    value = _text(ds, "BurnedInAnnotation").upper()
    if value == "YES":
        return "YES"
    if value == "NO":
        return "NO"
    sop_class = _text(ds, "SOPClassUID")
    if not sop_class and getattr(ds, "file_meta", None) is not None:
        sop_class = _text(ds.file_meta, "MediaStorageSOPClassUID")
    secondary = (
        sop_class.startswith("1.2.840.10008.5.1.4.1.1.7")
        or "ConversionType" in ds
        or _text(ds, "Modality").upper() == "OT"
    )
    return "UNKNOWN" if secondary else "NO"


def header_to_json(ds: Dataset, *, bulk_limit: int = 64 * 1024) -> dict[str, Any]:
    """The DICOM JSON model of ``ds`` (PS3.18 F.2) without bulk data: pixel data, and binary elements
    (OB, OW, UN …) longer than ``bulk_limit`` bytes, are left out, in nested sequences too."""
    return _without_bulk(ds, bulk_limit).to_json_dict()


def header_from_json(data: dict[str, Any]) -> Dataset:
    return Dataset.from_json(data)


# --- The walk ---------------------------------------------------------------------------------------


class _Context:
    def __init__(self, secret: str, shift_days: int):
        self.secret = secret
        self.shift = dt.timedelta(days=shift_days)
        self._uids: dict[str, str] = {}

    def uid(self, value: str) -> str:
        value = str(value).strip().rstrip("\x00")
        if not value or value.startswith(DICOM_UID_ROOT) or UID(value).name != value:
            return value
        if value not in self._uids:
            self._uids[value] = uid_remap(self.secret, value)
        return self._uids[value]


def _clean(ds: Dataset, ctx: _Context, *, top: bool) -> None:
    """De-identify ``ds`` in place (a copy owned by ``deidentify_header``), recursing into sequences."""
    creators = _private_creators(ds)
    for tag in list(ds.keys()):
        tag = Tag(tag)
        if tag.is_private:
            if not _keep_private(tag, creators):
                del ds[tag]
            continue
        if any(lo <= tag.group <= hi for lo, hi in REMOVED_GROUP_RANGES):
            del ds[tag]
            continue
        elem = ds[tag]
        action = _action(tag, elem.VR)
        if action == X:
            del ds[tag]
            continue
        if action == Z:
            elem.value = elem.empty_value
            continue
        if action == D:
            elem.value = _dummy(elem)
            continue
        if elem.VR == "SQ" and elem.value:
            elem.value = [item for item in elem.value if not _private_code(item)]
            if not elem.value:  # a code sequence that held private codes only
                del ds[tag]
                continue
        _by_vr(elem, ctx, top=top)


def _action(tag: BaseTag, vr: str) -> str:
    action = BASIC_PROFILE.get(tag, K)
    if vr in ("DA", "DT", "TM") and tag not in BIRTH_TAGS and action != X:
        return K  # Retain Longitudinal Temporal Information With Modified Dates: shifted below
    return action


def _by_vr(elem: DataElement, ctx: _Context, *, top: bool) -> None:
    vr = elem.VR
    if vr == "SQ":
        for item in elem.value:
            _clean(item, ctx, top=False)
    elif vr == "UI" and elem.tag not in _UID_KEEP:
        _map_values(elem, ctx.uid)
    elif vr == "DA":
        _map_values(elem, lambda v: _shift_da(v, ctx.shift))
    elif vr == "DT":
        _map_values(elem, lambda v: _shift_dt(v, ctx.shift))
    elif vr == "AS":
        _map_values(elem, age_capped)
    elif vr == "PN" and not (top and elem.tag == _PATIENT_NAME):
        elem.value = elem.empty_value  # any person name the table does not list


def _map_values(elem: DataElement, fn: Callable[[str], str]) -> None:
    value = elem.value
    if value is None or value == "":
        return
    if isinstance(value, MultiValue | list | tuple):
        elem.value = [fn(str(v)) for v in value]
    else:
        elem.value = fn(str(value))


def _shift_da(value: str, shift: dt.timedelta) -> str:
    """``YYYYMMDD`` shifted; a range ``A-B`` shifted on both ends; anything unreadable emptied."""
    text = value.strip()
    if "-" in text:
        return "-".join(_shift_da(part, shift) if part else "" for part in text.split("-"))
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day + shift).strftime("%Y%m%d")


def _shift_dt(value: str, shift: dt.timedelta) -> str:
    """``YYYY[MM[DD[HH…]]][&ZZXX]``: the date part shifted, time and offset kept. Year or month precision
    is shifted from its first day and cut back to the same precision."""
    text = value.strip()
    if not text or not text[:4].isdigit():
        return ""
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits >= 8:
        day = _shift_da(text[:8], shift)
        return day + text[8:] if day else ""
    if digits not in (4, 6):
        return ""
    shifted = _shift_da((text[:digits] + "0101")[:8], shift)
    return shifted[:digits] + text[digits:] if shifted else ""


def _dummy(elem: DataElement) -> Any:
    vr = elem.VR
    if vr == "SQ":
        return []
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "IS", "DS"):
        return 0 if vr not in ("DS", "IS") else "0"
    if vr in _BINARY_VRS:
        return b""
    if vr == "PN":
        return "ANONYMIZED"
    if vr == "AS":
        return "000Y"
    return _DUMMY_TEXT[: _DUMMY_MAX_LEN.get(vr, 64)]


def _private_code(item: Dataset) -> bool:
    """Whether a sequence item is a code (it has a Coding Scheme Designator) of a private scheme."""
    if _CODING_SCHEME not in item:
        return False
    return private_coding_scheme(str(item[_CODING_SCHEME].value or ""))


# --- Private elements -------------------------------------------------------------------------------


def _private_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    """(group, block) -> private creator, for the private blocks reserved in ``ds`` (this level only)."""
    creators = {}
    for elem in ds:
        tag = elem.tag
        if tag.is_private and 0x0010 <= tag.element <= 0x00FF:
            value = elem.value.decode("latin-1") if isinstance(elem.value, bytes) else elem.value
            creators[(tag.group, tag.element)] = str(value or "").strip()
    return creators


def _keep_private(tag: BaseTag, creators: dict[tuple[int, int], str]) -> bool:
    """Whether a private element is in ``SAFE_PRIVATE`` (creators of safe blocks are kept too)."""
    if 0x0010 <= tag.element <= 0x00FF:
        creator = creators.get((tag.group, tag.element), "")
        return any(g == tag.group and c == creator for g, c, _ in SAFE_PRIVATE)
    if tag.element < 0x1000:
        return False
    creator = creators.get((tag.group, tag.element >> 8), "")
    return (tag.group, creator, tag.element & 0xFF) in SAFE_PRIVATE


# --- Small helpers ----------------------------------------------------------------------------------


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _strings(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    values: Iterable[Any] = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(v).strip() for v in values if str(v).strip()]


def _text(ds: Dataset, keyword: str) -> str:
    values = _strings(ds, keyword)
    return "\\".join(values)


def _without_bulk(ds: Dataset, limit: int) -> Dataset:
    out = Dataset()
    for elem in ds:
        if elem.tag in PIXEL_TAGS:
            continue
        if elem.VR == "SQ":
            new = DataElement(elem.tag, "SQ", Sequence([_without_bulk(item, limit) for item in elem.value]))
            out.add(new)
        elif elem.VR in _BINARY_VRS and elem.value is not None and len(elem.value) > limit:
            continue
        else:
            out.add(copy.deepcopy(elem))
    return out
