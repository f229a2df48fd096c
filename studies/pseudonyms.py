"""Deterministic, keyed pseudonyms: patient pseudonyms, date shifts and UID remapping per project.

All derive from HMAC-SHA256 under the project's secret, so the same original value always maps to the
same pseudonym within a project and to unrelated ones across projects.
"""

import datetime as dt
import hashlib
import hmac

DATE_SHIFT_MIN_DAYS = 1
DATE_SHIFT_MAX_DAYS = 3 * 365


def keyed_hash(secret: str, kind: str, value: str) -> str:
    return hmac.new(secret.encode(), f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()


def patient_identity_hash(secret: str, patient_id: str) -> str:
    return keyed_hash(secret, "patient", patient_id.strip())


def patient_pseudonym(identity_hash: str) -> str:
    return "P" + identity_hash[:12].upper()


def date_shift_days(identity_hash: str) -> int:
    """Days to subtract from every date of this patient: 1 … 1095, fixed per patient and project."""
    span = DATE_SHIFT_MAX_DAYS - DATE_SHIFT_MIN_DAYS + 1
    return -(DATE_SHIFT_MIN_DAYS + int(identity_hash[12:20], 16) % span)


def uid_remap(secret: str, uid: str) -> str:
    """A new DICOM UID for ``uid``: ``2.25.<integer>`` (UUID-derived form), at most 64 characters."""
    digest = keyed_hash(secret, "uid", uid.strip())
    return "2.25." + str(int(digest[:32], 16))  # 128 bits -> at most 39 digits


def accession_hash(secret: str, accession: str) -> str:
    return keyed_hash(secret, "accession", accession.strip())


def shift_date(value: dt.date | None, days: int) -> dt.date | None:
    return None if value is None else value + dt.timedelta(days=days)


def parse_dicom_date(value: str | None) -> dt.date | None:
    if not value:
        return None
    text = str(value).strip()[:8]
    try:
        return dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        return None
