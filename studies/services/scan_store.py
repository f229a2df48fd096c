"""Storing one read scan unit: patient and study (de-identified), files and rows, all or nothing.

Each ScanSource row of a 3D DICOM scan made of single-frame instances records the slice its instance
became (``slice_index``: k of the canonical array's ``[:, :, k]``), so an export can give every slice its
own (remapped) SOP Instance UID; multi-frame instances and 2D images get none."""

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import IntegrityError, connection, transaction

from core.models import Project
from core.storage import (
    project_key,
    sha256_bytes,
    storage_all_or_nothing,
    storage_put_file,
    storage_save_bytes,
)
from studies import pseudonyms
from studies.ingest.dicom_identity import DicomIdentity, dicom_identity
from studies.ingest.load import LoadedScan as Loaded
from studies.ingest.types import DicomFile, IngestError
from studies.models import Patient, PatientIdentity, Scan, ScanSource, SourceFormat, Study
from studies.scrub import identifier_hashes, scrub_plain


class AlreadyStored(IngestError):
    """The unit was stored by another ingest (at the same time, or since this one looked)."""


@dataclass
class Unit:
    """One series (DICOM) or image file (others) to read and store. ``dicom`` holds the series' headers
    while they are needed for reading; ``identity`` or ``first_header`` what de-identification needs."""

    kind: str  # dicom, nifti, png, jpeg
    label: str
    paths: list[Path]
    displays: list[str]
    series_uid: str  # remapped
    checksums: list[str]
    sop_uids: list[str]  # remapped; empty for non-DICOM
    dicom: list[DicomFile] = field(default_factory=list)
    modality: str = ""
    first_header: Any = None  # the first file's header when ``dicom`` is not kept
    identity: DicomIdentity | None = None  # computed already (by a folder worker)
    loaded: "Loaded | IngestError | None" = None  # read already (by a folder worker)


def scan_summary(scan: Scan) -> dict[str, Any]:
    return {
        "id": scan.pk,
        "series_uid": scan.series_uid,
        "name": scan.name,
        "modality": scan.modality,
        "shape": scan.shape,
        "spacing": scan.spacing,
        "affine": scan.affine,
        "dtype": scan.dtype,
        "file": scan.file.name,
        "study_id": scan.study_id,
        "patient": scan.study.patient.pseudonym,
        "warnings": scan.warnings,
        "burned_in_annotation": scan.burned_in_annotation,
    }


def _shift_dicom_dates(meta: dict[str, Any], days: int) -> dict[str, Any]:
    """Shift DA (``...Date``) and the date part of DT (``...DateTime``) strings in a metadata dict."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, dict):
            out[key] = _shift_dicom_dates(value, days)
        elif isinstance(value, str) and (key.endswith("Date") or key.endswith("DateTime")) and value:
            date = pseudonyms.parse_dicom_date(value)
            shifted = pseudonyms.shift_date(date, days)
            out[key] = (shifted.strftime("%Y%m%d") + value.strip()[8:]) if shifted else ""
        else:
            out[key] = value
    return out


def _patient_for(project: Project, key: str, identity: dict[str, str] | None) -> Patient:
    identity_hash = pseudonyms.patient_identity_hash(project.deid_secret, key)
    defaults = {
        "pseudonym": pseudonyms.patient_pseudonym(identity_hash),
        "date_shift_days": pseudonyms.date_shift_days(identity_hash),
    }
    try:
        with transaction.atomic():
            patient, _ = Patient.objects.get_or_create(
                project=project, identity_hash=identity_hash, defaults=defaults
            )
    except IntegrityError:  # created concurrently by another ingest
        patient = Patient.objects.get(project=project, identity_hash=identity_hash)
    if project.keep_identity_map and identity is not None:
        PatientIdentity.objects.update_or_create(
            patient=patient,
            defaults={
                "original_id": identity.get("patient_id", "")[:128],
                "original_name": identity.get("patient_name", "")[:256],
                "original_birth_date": identity.get("birth_date", "")[:16],
            },
        )
    return patient


def _study_for(
    project: Project, patient: Patient, study_uid: str, defaults: dict[str, Any], hashes: list[str]
) -> Study:
    try:
        with transaction.atomic():
            study, _ = Study.objects.get_or_create(
                project=project, study_uid=study_uid, defaults={"patient": patient, **defaults}
            )
    except IntegrityError:
        study = Study.objects.get(project=project, study_uid=study_uid)
    if study.patient_id != patient.pk:
        raise IngestError("", "study belongs to another patient in this project", "StudyInstanceUID")
    if hashes and not set(hashes) <= set(study.identifier_hashes):
        study.identifier_hashes = sorted(set(study.identifier_hashes) | set(hashes))
        study.save(update_fields=["identifier_hashes"])
    return study


def _dicom_identity(project: Project, unit: Unit, loaded: Loaded) -> tuple[Study, str, bytes]:
    """Patient, study and de-identified header of a DICOM unit: (study, name, gzipped header JSON).

    Study and series descriptions are kept, cleaned of the header's identifiers (PS3.15 Clean
    Descriptors option); the stored header follows the basic profile, which removes them."""
    ident = unit.identity
    if ident is None:
        first = unit.first_header
        if first is None:  # a series spread over folders: its first file is read again
            from studies.ingest.dicom import dicom_read_headers

            files, errors = dicom_read_headers(unit.paths[:1])
            if errors:
                raise errors[0]
            first = files[0].header
        ident = dicom_identity(first, secret=project.deid_secret)
    identity = ident.identity
    tokens = identity.get("scrub_tokens", ())
    loaded.series_description = scrub_plain(loaded.series_description, tokens=tokens)[0]
    patient = _patient_for(project, ident.patient_key, identity)
    secret = project.deid_secret
    date = pseudonyms.parse_dicom_date(identity.get("study_date"))
    accession = identity.get("accession") or ""
    study = _study_for(
        project,
        patient,
        pseudonyms.uid_remap(secret, identity.get("study_uid") or f"{ident.patient_key}:nostudy"),
        {
            "study_date": pseudonyms.shift_date(date, patient.date_shift_days),
            "modality": loaded.modality,
            "description": ident.study_description,
            "accession_hash": pseudonyms.accession_hash(secret, accession) if accession else "",
        },
        identifier_hashes(secret, tokens),
    )
    name = unit.paths[0].name.removesuffix(".dcm") if len(unit.paths) == 1 else ""
    return study, name, ident.header_gz


def _file_identity(
    project: Project, unit: Unit, loaded: Loaded, study_pattern: str | None
) -> tuple[Study, str]:
    name = unit.paths[0].name
    for suffix in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    key = name
    if study_pattern:
        match = re.search(study_pattern, unit.paths[0].name)
        if match:
            key = match.group(1) if match.groups() else match.group(0)
    patient = _patient_for(project, f"file:{key}", None)
    study = _study_for(
        project,
        patient,
        pseudonyms.uid_remap(project.deid_secret, f"file-study:{key}"),
        {"modality": loaded.modality, "external_id": key},
        [],
    )
    return study, name


def unit_stored_scan(*, project: Project, unit: Unit) -> Scan | None:
    """The scan that already holds this unit: same (remapped) series UID, else one of its SOP instances."""
    existing = Scan.objects.filter(project=project, series_uid=unit.series_uid).first()
    if existing is None and unit.sop_uids:
        source = ScanSource.objects.filter(project=project, sop_uid__in=unit.sop_uids).first()
        existing = source.scan if source else None
    return existing


def _series_lock(project: Project, series_uid: str) -> None:
    """Held until the transaction ends, so a second ingest of the same series waits here and then finds it
    stored (instead of storing its files beside the first's and failing on the unique constraint).
    PostgreSQL: an advisory lock per project and series. SQLite: nothing to take, its transactions begin
    IMMEDIATE (``config/settings/database.py``) and so run one at a time already."""
    if connection.vendor == "postgresql":
        digest = hashlib.sha256(f"groundlab-scan:{project.pk}:{series_uid}".encode()).digest()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)]
            )


def _slice_indices(project: Project, loaded: Loaded) -> dict[str, int]:
    """Remapped SOP Instance UID -> the slice (k of the stored array's ``[:, :, k]``) its single-frame
    instance became; empty for 2D scans, and when the read did not give one UID per slice."""
    uids = loaded.slice_uids
    if len(loaded.shape) != 3 or len(uids) != loaded.shape[2]:
        return {}
    secret = project.deid_secret
    return {pseudonyms.uid_remap(secret, uid): k for k, uid in enumerate(uids) if uid}


def _source_rows(project: Project, scan: Scan, unit: Unit, loaded: Loaded) -> list[ScanSource]:
    """One row per source file; a second copy of a DICOM instance (same SOP Instance UID and bytes, which
    the reader ignores) adds none."""
    slice_of = _slice_indices(project, loaded) if unit.kind == "dicom" else {}
    rows: list[ScanSource] = []
    seen: set[str] = set()
    for sop, checksum in zip(unit.sop_uids or [""] * len(unit.checksums), unit.checksums):
        if sop and sop in seen:
            continue
        seen.add(sop)
        rows.append(
            ScanSource(
                project=project, scan=scan, sop_uid=sop, checksum=checksum, slice_index=slice_of.get(sop)
            )
        )
    return rows


def scan_store(*, project: Project, unit: Unit, loaded: Loaded, study_pattern: str | None = None) -> Scan:
    """Store one read unit: rows and files together, or nothing (files removed on failure). A unit that
    another ingest stored meanwhile raises ``AlreadyStored`` (nothing written)."""
    base = project_key(project, "scans", unit.series_uid)
    try:
        with storage_all_or_nothing() as keys, transaction.atomic():
            _series_lock(project, unit.series_uid)
            existing = unit_stored_scan(project=project, unit=unit)
            if existing is not None:
                raise AlreadyStored(unit.label, f"stored as scan {existing.pk} by another ingest meanwhile")
            if unit.kind == "dicom":
                study, name, header = _dicom_identity(project, unit, loaded)
                date_shift = study.patient.date_shift_days
                meta = _shift_dicom_dates(loaded.meta, date_shift)
                meta["instances"] = len(unit.sop_uids)
                header_key = storage_save_bytes(f"{base}/header.json.gz", header)
                keys.append(header_key)
                meta["header_file"] = header_key
                source_format = SourceFormat.DICOM
            else:
                study, name = _file_identity(project, unit, loaded, study_pattern)
                meta = dict(loaded.meta)
                source_format = unit.kind
            file_size = loaded.nifti_path.stat().st_size
            file_key = storage_put_file(f"{base}/{loaded.nifti_path.name}", loaded.nifti_path)
            keys.append(file_key)
            thumb_key = storage_save_bytes(f"{base}/thumbnail.png", loaded.thumbnail)
            keys.append(thumb_key)
            scan = Scan.objects.create(
                project=project,
                study=study,
                series_uid=unit.series_uid,
                name=name[:256],
                modality=loaded.modality[:16],
                source_format=source_format,
                series_description=loaded.series_description[:256],
                ndim=len(loaded.shape),
                shape=loaded.shape,
                spacing=loaded.spacing,
                affine=loaded.affine,
                dtype=loaded.dtype,
                file=file_key,
                file_size=file_size,
                thumbnail=thumb_key,
                source_checksum=sha256_bytes("".join(sorted(unit.checksums)).encode()),
                burned_in_annotation=loaded.burned_in_annotation,
                warnings=loaded.warnings,
                meta=meta,
            )
            ScanSource.objects.bulk_create(_source_rows(project, scan, unit, loaded))
    except IngestError as exc:
        if not exc.file:
            exc.file = unit.label
        raise
    except IntegrityError as exc:  # an instance of it stored by another ingest under another series UID
        raise AlreadyStored(unit.label, f"already being stored by another ingest ({exc})") from exc
    scan.study = study
    return scan
