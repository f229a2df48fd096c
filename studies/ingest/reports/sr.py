"""Plain-text report files and DICOM Structured Reports."""

import codecs
from pathlib import Path
from typing import Any

from pydicom.multival import MultiValue

from studies.ingest.reports.common import (
    SECTIONS,
    SR_HEADINGS,
    ReportData,
    clean,
    decode_text,
    join,
    norm_heading,
    report_sections,
)
from studies.ingest.types import IngestError
from studies.scrub import identifier_tokens

MAX_TEXT_BYTES = 5 * 1024 * 1024


def read_report_text(path: str | Path) -> ReportData:
    """A plain-text report file: ``external_id`` is the file stem, sections come from its headings."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise IngestError(path, f"larger than {MAX_TEXT_BYTES // 1024 // 1024} MB: not a report")
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(path, f"cannot read: {exc}") from exc
    if b"\x00" in data and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise IngestError(path, "binary file, not report text")
    text, fallback = decode_text(data)
    text = clean(text)
    if not text:
        raise IngestError(path, "empty report")
    parsed = report_sections(text)
    report = ReportData(
        external_id=path.stem,
        source="text",
        source_name=path.name,
        raw_text=text,
        sections={name: parsed[name] for name in SECTIONS},
        extra=dict(parsed["extra"]),
        link_keys={"file": path.name},
    )
    if fallback:
        report.warnings.append(f"{path.name}: not UTF-8; read as cp1252/latin-1")
    return report


# ------------------------------------------------------------------------------------------ DICOM SR

_SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_MAX_DEPTH = 64
_HEADER_NAMES = (
    "PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord",
    "OperatorsName", "RequestingPhysician",
)  # fmt: skip


def _concept(item: Any, keyword: str = "ConceptNameCodeSequence") -> str:
    seq = item.get(keyword)
    if seq:
        return str(seq[0].get("CodeMeaning", "") or seq[0].get("CodeValue", "")).strip()
    return ""


def _values(ds: Any, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple | MultiValue):
        return [str(v) for v in value if str(v).strip()]
    return [str(value)]


def _item_text(item: Any, value_type: str) -> str:
    if value_type == "TEXT":
        return clean(str(item.get("TextValue", "")))
    if value_type == "CODE":
        return _concept(item, "ConceptCodeSequence")
    if value_type == "NUM":
        seq = item.get("MeasuredValueSequence")
        if seq:
            unit = _concept(seq[0], "MeasurementUnitsCodeSequence")
            return f"{seq[0].get('NumericValue', '')} {unit}".strip()
    return ""


class _SrWalk:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sections = {name: "" for name in SECTIONS}
        self.extra: dict[str, str] = {}
        self.names: list[str] = []

    def add(self, target: str, text: str) -> None:
        if target.startswith("extra:"):
            key = target.removeprefix("extra:")
            self.extra[key] = join(self.extra.get(key, ""), text)
        else:
            self.sections[target] = join(self.sections[target], text)

    def walk(self, items: Any, target: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        for item in items or []:
            value_type = str(item.get("ValueType", "")).upper()
            relation = str(item.get("RelationshipType", "")).upper()
            name = _concept(item)
            if value_type == "PNAME":
                self.names.append(str(item.get("PersonName", "")))
                continue
            if relation == "HAS OBS CONTEXT":
                continue
            mapped = SR_HEADINGS.get(norm_heading(name))
            here = mapped or target
            if value_type == "CONTAINER":
                if name:
                    self.lines.append(f"\n{name.upper()}:")
                self.walk(item.get("ContentSequence"), here, depth + 1)
                continue
            text = _item_text(item, value_type)
            if text:
                self.lines.append(f"{name}: {text}" if name else text)
                self.add(here, text)
            self.walk(item.get("ContentSequence"), here, depth + 1)


def read_report_sr(path: str | Path) -> ReportData:
    """A DICOM Structured Report (Basic/Enhanced/Comprehensive Text SR).

    Walks ContentSequence recursively: container concept names become headings (Findings, Impression,
    History ... map to sections; unknown ones inherit their parent's section, findings at the top);
    TEXT, CODE and NUM values are the text; observation context is left out. ``external_id`` is the
    AccessionNumber, else the SOPInstanceUID (originals: the service pseudonymises them).
    ``scrub_tokens``: patient and physician names, patient ids, birth date, accession, person names in
    the content tree.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError) as exc:
        raise IngestError(path, f"not a readable DICOM file: {exc}") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if not (sop_class.startswith(_SR_CLASS_PREFIX) or str(ds.get("Modality", "")) == "SR"):
        raise IngestError(
            path, f"not a DICOM Structured Report (Modality {ds.get('Modality', '?')}, SOP class {sop_class})"
        )
    if "ContentSequence" not in ds:
        raise IngestError(path, "structured report without content", "ContentSequence")
    walker = _SrWalk()
    try:
        walker.walk(ds.ContentSequence, "findings", 0)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise IngestError(path, f"malformed SR content tree: {exc}", "ContentSequence") from exc
    title = _concept(ds)
    raw_text = clean("\n".join([title.upper(), *walker.lines] if title else walker.lines))
    if not any(walker.sections.values()) and not walker.extra:
        raise IngestError(path, "structured report without text", "ContentSequence")
    accession = str(ds.get("AccessionNumber", "") or "").strip()
    sop_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    if not accession and not sop_uid:
        raise IngestError(path, "neither AccessionNumber nor SOPInstanceUID", "SOPInstanceUID")
    names = [v for kw in _HEADER_NAMES for v in _values(ds, kw)]
    for observer in ds.get("VerifyingObserverSequence") or []:
        names += _values(observer, "VerifyingObserverName")
    ids = [*_values(ds, "PatientID"), *_values(ds, "OtherPatientIDs"), accession]
    for other in ds.get("OtherPatientIDsSequence") or []:
        ids += _values(other, "PatientID")
    tokens = identifier_tokens(names=names + walker.names, ids=ids, dates=_values(ds, "PatientBirthDate"))
    link_keys = {"file": path.name, "sop_uid": sop_uid}
    if accession:
        link_keys["accession"] = accession
    if ds.get("StudyInstanceUID"):
        link_keys["study_uid"] = str(ds.StudyInstanceUID).strip()
    extra: dict[str, Any] = dict(walker.extra)
    if title:
        extra["title"] = title
    return ReportData(
        external_id=accession or sop_uid,
        source="dicom-sr",
        source_name=path.name,
        raw_text=raw_text,
        sections=walker.sections,
        extra=extra,
        link_keys=link_keys,
        scrub_tokens=tokens,
    )
