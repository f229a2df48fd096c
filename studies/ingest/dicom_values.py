"""Reading DICOM element values quickly and strictly.

pydicom converts an element's raw bytes on first access; for the few numbers, codes and UIDs the reader
needs from every slice that conversion costs more than parsing the header. Where an element is still
raw, these helpers decode ASCII-only value representations (DS, IS, UI, CS, DA, TM, DT, AS) and binary
integers (US, SS, UL, SL) directly; anything else goes through pydicom. The header is left as it was.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement

from studies.ingest.types import DicomFile, IngestError

_TAGS: dict[str, int] = {}
_VRS: dict[int, str] = {}
_ASCII_TEXT = {"UI", "CS", "DA", "TM", "DT", "AS"}
_INTEGERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}


def _tag(keyword: str) -> int:
    tag = _TAGS.get(keyword)
    if tag is None:
        found = tag_for_keyword(keyword)
        if found is None:
            raise KeyError(keyword)
        tag = _TAGS[keyword] = int(found)
    return tag


def _vr(elem: RawDataElement, tag: int) -> str:
    if elem.VR:
        return str(elem.VR)
    vr = _VRS.get(tag)
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        _VRS[tag] = vr
    return vr


def _element(ds: Any, keyword: str) -> tuple[Any, int]:
    if ds is None:
        return None, 0
    tag = _tag(keyword)
    return ds.get_item(tag), tag


def raw(ds: Any, keyword: str) -> Any:
    """A DS/IS element's value, None when absent: the strings of its raw bytes while pydicom has not
    converted it yet, else pydicom's value."""
    elem, tag = _element(ds, keyword)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        if _vr(elem, tag) in ("DS", "IS") and isinstance(elem.value, bytes):
            value = elem.value.decode("latin-1").strip(" \x00")
            return value.split("\\") if value else None
        return ds[tag].value
    return elem.value


def raw_int(ds: Any, keyword: str) -> int | None:
    """An integer element's (first) value, None when absent, empty or not an integer."""
    elem, tag = _element(ds, keyword)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        vr = _vr(elem, tag)
        code = _INTEGERS.get(vr)
        if code is not None:
            size = struct.calcsize(code)
            if len(elem.value) < size:
                return None
            return struct.unpack_from(("<" if elem.is_little_endian else ">") + code, elem.value)[0]
        if vr == "IS":
            value = elem.value.decode("latin-1").strip(" \x00").split("\\")[0]
            return _to_int(value)
    value = ds[tag].value if isinstance(elem, RawDataElement) else elem.value
    if isinstance(value, list | tuple) or (hasattr(value, "__iter__") and not isinstance(value, str | bytes)):
        value = next(iter(value), None)
    return _to_int(value)


def _to_int(value: Any) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def raw_text(ds: Any, keyword: str) -> str:
    """A string element's value, stripped ('' when absent). ASCII-only VRs are decoded directly; others
    (LO, SH, PN ...) through pydicom, which applies the character set."""
    elem, tag = _element(ds, keyword)
    if elem is None:
        return ""
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes) and _vr(elem, tag) in _ASCII_TEXT:
        return elem.value.decode("ascii", "replace").strip(" \x00")
    return text(ds[tag].value if isinstance(elem, RawDataElement) else elem.value)


def text(value: Any) -> str:
    """A DICOM value as a stripped string ('' when absent)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").rstrip("\x00")
    return str(value).strip()


def as_list(value: Any) -> list[Any]:
    """A DICOM value as a list: multi-values as their items, a single value as one item, None as []."""
    if value is None:
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def numbers(value: Any, count: int, file: DicomFile | Any, field_name: str) -> tuple[float, ...] | None:
    """``count`` finite floats from a DICOM multi-value, None when absent or empty; IngestError if bad."""
    items = [v for v in as_list(value) if not (isinstance(v, str) and not v.strip())]
    if not items:
        return None
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError) as exc:
        raise IngestError(_path(file), f"{field_name} is not numeric: {value!r}", field_name) from exc
    if len(out) != count or not all(math.isfinite(v) for v in out):
        raise IngestError(_path(file), f"{field_name} must hold {count} numbers, got {value!r}", field_name)
    return out


def number(value: Any, file: DicomFile | Any, field_name: str, default: float | None = None) -> float | None:
    got = numbers(value, 1, file, field_name)
    return default if got is None else got[0]


def _path(file: Any) -> str:
    return str(getattr(file, "path", file))
