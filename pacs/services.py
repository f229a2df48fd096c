"""PACS sources (register, change, check, remove), the search of a source (QIDO-RS) and the start of an
import job. Callers have read the project through ``pacs.selectors`` (managers only).

Credentials are encrypted before they are stored (``pacs.crypto``) and appear in no return value, log line
or job row. A source is checked on save: one QIDO-RS query (``limit=1``) with its own auth and TLS setting;
a source that does not answer is not saved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ApplicationError, Conflict
from core.jobs import broker_check, job_create, job_dispatch
from core.models import Project
from pacs.client import PacsError, base_url_check, client_for, pacs_call
from pacs.crypto import credentials_encrypt
from pacs.models import AuthKind, PacsImport, PacsSource

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
DATE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")


@dataclass
class SourceSpec:
    """What a manager enters. ``username``/``password`` (basic) or ``token`` (bearer): write-only."""

    name: str | None = None
    base_url: str | None = None
    auth: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    verify_tls: bool | None = None
    store_back: bool | None = None


def _credentials(auth: str, spec: SourceSpec, keep: bool) -> dict[str, str] | None:
    """The credentials ``spec`` gives for ``auth`` (None: keep the stored ones, when ``keep`` allows)."""
    if auth == AuthKind.NONE:
        return {}
    if auth == AuthKind.BASIC:
        if spec.username is None and spec.password is None and keep:
            return None
        if not spec.username or spec.password is None:
            raise ApplicationError("basic auth needs a username and a password", field="password")
        return {"username": spec.username, "password": spec.password}
    if spec.token is None and keep:
        return None
    if not spec.token:
        raise ApplicationError("bearer auth needs a token", field="token")
    return {"token": spec.token}


def _apply(source: PacsSource, spec: SourceSpec, *, creating: bool) -> None:
    if spec.name is not None or creating:
        name = (spec.name or "").strip()
        if not NAME.match(name):
            raise ApplicationError("a short name: lower-case letters, digits and dashes", field="name")
        source.name = name
    if spec.base_url is not None or creating:
        source.base_url = base_url_check(spec.base_url or "")
    auth_changed = spec.auth is not None and spec.auth != source.auth
    if spec.auth is not None:
        if spec.auth not in AuthKind.values:
            raise ApplicationError(f"auth is one of {', '.join(AuthKind.values)}", field="auth")
        source.auth = spec.auth
    creds = _credentials(source.auth, spec, keep=not creating and not auth_changed)
    if creds is not None:
        source.credentials = credentials_encrypt(creds)
    if spec.verify_tls is not None:
        source.verify_tls = bool(spec.verify_tls)
    if spec.store_back is not None:
        if spec.store_back and not source.project.keep_identity_map:
            raise ApplicationError(
                "store-back needs the project's identity map (keep_identity_map): the PACS knows the series "
                "only by their original UIDs, which the platform keeps only there",
                field="store_back",
            )
        source.store_back = bool(spec.store_back)


def source_check(*, source: PacsSource) -> str:
    """One QIDO-RS query to ``source``; raises ``PacsError`` naming what failed; returns what it found."""
    client = client_for(source, tries=1)
    with pacs_call(f"source {source.name}"):
        found = client.search_for_studies(limit=1, fields=["StudyInstanceUID"])
    return f"answered QIDO-RS ({'studies found' if found else 'no studies yet'})"


def source_create(*, project: Project, spec: SourceSpec, user) -> PacsSource:
    """A new source of ``project``, checked first (a source that does not answer is not saved)."""
    source = PacsSource(project=project, created_by=user)
    _apply(source, spec, creating=True)
    return _checked_save(source)


def source_update(*, source: PacsSource, spec: SourceSpec) -> PacsSource:
    """Change ``source``; checked again when where or how it is reached changed."""
    before = (source.base_url, source.auth, source.credentials, source.verify_tls)
    _apply(source, spec, creating=False)
    if (source.base_url, source.auth, source.credentials, source.verify_tls) != before:
        return _checked_save(source)
    source.save()
    return source


def source_check_now(*, source: PacsSource) -> PacsSource:
    """Check ``source`` and record the outcome on it (ok or the reason); the check itself is what
    succeeded, so a source that is down is recorded, not raised."""
    try:
        source.check_message, source.check_ok = source_check(source=source), True
    except PacsError as exc:
        source.check_message, source.check_ok = exc.message[:500], False
    source.checked_at = timezone.now()
    source.save(update_fields=["check_message", "check_ok", "checked_at", "updated_at"])
    return source


def _checked_save(source: PacsSource) -> PacsSource:
    source.check_message = source_check(source=source)
    source.checked_at, source.check_ok = timezone.now(), True
    try:
        with transaction.atomic():
            source.save()
    except IntegrityError as exc:
        raise Conflict(f"the project has a source named {source.name} already", field="name") from exc
    return source


def source_delete(*, source: PacsSource) -> None:
    source.delete()


# --- search -------------------------------------------------------------------------------------------------

SEARCH_FIELDS = {
    # query parameter -> (QIDO-RS attribute, wildcard around the value)
    "patient_id": ("PatientID", False),
    "patient_name": ("PatientName", True),
    "accession": ("AccessionNumber", False),
    "study_date": ("StudyDate", False),
    "modality": ("ModalitiesInStudy", False),
    "description": ("StudyDescription", True),
    "study_uid": ("StudyInstanceUID", False),
}
RETURNED = [
    "StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber", "StudyDate", "StudyDescription",
    "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
]  # fmt: skip
SEARCH_LIMIT = 200


def search_filters(values: dict[str, Any]) -> dict[str, str]:
    """QIDO-RS filters from a manager's search (``SEARCH_FIELDS`` keys); 400 naming a bad one."""
    filters: dict[str, str] = {}
    for key, (attribute, wildcard) in SEARCH_FIELDS.items():
        value = str(values.get(key) or "").strip()
        if not value:
            continue
        if any(c in value for c in "\\\r\n"):
            raise ApplicationError("no backslashes or line breaks", field=key)
        if key == "study_date" and not DATE.match(value):
            raise ApplicationError("a date YYYYMMDD or a range YYYYMMDD-YYYYMMDD", field=key)
        if key == "study_uid" and not UID.match(value):
            raise ApplicationError("a DICOM UID (digits and dots)", field=key)
        if key == "modality":
            value = value.upper()
        filters[attribute] = f"*{value}*" if wildcard and "*" not in value else value
    return filters


def _value(item: dict, keyword: str) -> Any:
    from pydicom.datadict import tag_for_keyword

    tag = f"{tag_for_keyword(keyword):08X}"
    values = (item.get(tag) or {}).get("Value") or []
    if not values:
        return ""
    if keyword == "PatientName":
        first = values[0]
        return first.get("Alphabetic", "") if isinstance(first, dict) else str(first)
    if keyword == "ModalitiesInStudy":
        return [str(v) for v in values]
    return values[0]


def studies_search(*, source: PacsSource, filters: dict[str, str]) -> list[dict[str, Any]]:
    """Studies of ``source`` matching ``filters`` (``search_filters``), at most ``SEARCH_LIMIT``."""
    client = client_for(source)
    with pacs_call(f"search of source {source.name}"):
        found = client.search_for_studies(search_filters=filters, fields=RETURNED, limit=SEARCH_LIMIT)
    return [
        {
            "study_uid": _value(item, "StudyInstanceUID"),
            "patient_id": _value(item, "PatientID"),
            "patient_name": _value(item, "PatientName"),
            "accession": _value(item, "AccessionNumber"),
            "study_date": _value(item, "StudyDate"),
            "description": _value(item, "StudyDescription"),
            "modalities": _value(item, "ModalitiesInStudy") or [],
            "series": _value(item, "NumberOfStudyRelatedSeries") or None,
            "instances": _value(item, "NumberOfStudyRelatedInstances") or None,
        }
        for item in found
    ]


# --- import -------------------------------------------------------------------------------------------------


def import_create(
    *, source: PacsSource, study_uids: list[str], modality: str = "", user=None, dispatch: bool = True
) -> PacsImport:
    """An import job of ``study_uids`` from ``source`` (only series of ``modality`` when given), sent to
    the ``default`` queue after commit. ``BrokerUnavailable`` when the broker is down (nothing made)."""
    uids = list(dict.fromkeys(u.strip() for u in study_uids if u and u.strip()))
    if not uids:
        raise ApplicationError("pick at least one study", field="study_uids")
    for uid in uids:
        if not UID.match(uid) or len(uid) > 64:
            raise ApplicationError(f"not a DICOM UID: {uid[:70]!r}", field="study_uids")
    modality = (modality or "").strip().upper()
    if modality and not re.match(r"^[A-Z0-9]{1,16}$", modality):
        raise ApplicationError("a DICOM modality such as CT", field="modality")
    if dispatch:
        broker_check()
    with transaction.atomic():
        # the job row holds no original UID (every member reads jobs); the import row does (managers only)
        job = job_create(
            project=source.project, kind="pacs_import", user=user, params={"source": source.name}
        )
        pacs_import = PacsImport.objects.create(
            project=source.project,
            source=source,
            job=job,
            study_uids=uids,
            modality=modality,
            created_by=user,
        )
        job.params = {"source": source.name, "pacs_import": pacs_import.pk, "studies": len(uids)}
        job.save(update_fields=["params"])
        if dispatch:
            from pacs.tasks import pacs_import_task

            job_dispatch(job=job, task=pacs_import_task, broker_checked=True)
    return pacs_import
