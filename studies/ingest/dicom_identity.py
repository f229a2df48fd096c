"""The de-identified identity of a DICOM series, computed from its first header without the database
(so worker processes can do it): the patient key, the de-identified header (gzipped DICOM JSON) and
the study description cleaned of identifiers. Pseudonyms and date shifts are keyed hashes of the
patient key, the same values the calling process stores on the Patient row."""

import gzip
import json
from dataclasses import dataclass
from typing import Any

from studies import pseudonyms
from studies.deid import deidentify_header, header_identity, header_to_json
from studies.scrub import scrub_plain


@dataclass
class DicomIdentity:
    identity: dict[str, Any]  # header_identity(): original ids, dates and scrub tokens
    patient_key: str
    study_description: str  # cleaned of the header's identifiers
    header_gz: bytes  # gzipped JSON of the de-identified header (basic profile)


def dicom_patient_key(identity: dict[str, Any]) -> str:
    """What identifies the patient: PatientID, else the study (one pseudonymous patient per study). Not
    PatientName: anonymisers write the same placeholder (``ANONYMOUS``) into every file they clear, which
    would join everyone's studies into one patient. The study UID is the file's own, or the one
    ``dicom_series`` derived for a series without one."""
    return identity.get("patient_id") or f"study:{identity.get('study_uid', '')}"


def dicom_identity(header: Any, *, secret: str) -> DicomIdentity:
    identity = header_identity(header)
    key = dicom_patient_key(identity)
    identity_hash = pseudonyms.patient_identity_hash(secret, key)
    deidentified = deidentify_header(
        header,
        secret=secret,
        pseudonym=pseudonyms.patient_pseudonym(identity_hash),
        date_shift_days=pseudonyms.date_shift_days(identity_hash),
    )
    tokens = identity.get("scrub_tokens", ())
    return DicomIdentity(
        identity=identity,
        patient_key=key,
        study_description=scrub_plain(str(header.get("StudyDescription", "")), tokens=tokens)[0][:256],
        header_gz=gzip.compress(json.dumps(header_to_json(deidentified)).encode(), compresslevel=6),
    )
