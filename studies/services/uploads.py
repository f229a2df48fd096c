"""Uploads through the API: files are put in storage, then a Job ingests them on the default queue."""

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from core.jobs import broker_check, job_create, job_dispatch
from core.models import Job, Project
from core.storage import project_key, storage_all_or_nothing
from studies.ingest.types import IngestError


class UploadTooLarge(IngestError):
    pass


@dataclass
class UploadSpec:
    files: list[UploadedFile]
    reports_csv: UploadedFile | None = None
    gaze_archive: UploadedFile | None = None
    options: dict[str, Any] = field(default_factory=dict)


def upload_check_size(*, total_bytes: int) -> None:
    if total_bytes > settings.UPLOAD_MAX_BYTES:
        raise UploadTooLarge(
            "upload", f"{total_bytes} bytes exceed the upload limit of {settings.UPLOAD_MAX_BYTES} bytes"
        )


def upload_create(*, project: Project, spec: UploadSpec, user) -> Job:
    """Store the uploaded files and queue their ingest. Raises UploadTooLarge or BrokerUnavailable
    (nothing stored then)."""
    every = list(spec.files) + [f for f in (spec.reports_csv, spec.gaze_archive) if f is not None]
    upload_check_size(total_bytes=sum(f.size or 0 for f in every))
    broker_check()
    with storage_all_or_nothing() as keys, transaction.atomic():
        job = job_create(project=project, kind="ingest_upload", user=user, params=dict(spec.options))
        base = project_key(project, "uploads", str(job.pk))

        def put(f: UploadedFile, i: int) -> str:
            name = f"{base}/{i:05d}_{(f.name or 'file').replace('/', '_')[-120:]}"
            key = default_storage.save(name, f)
            keys.append(key)
            return key

        params = dict(spec.options)
        params["upload_keys"] = [put(f, i) for i, f in enumerate(spec.files)]
        params["upload_names"] = [f.name for f in spec.files]
        if spec.reports_csv is not None:
            params["reports_key"] = put(spec.reports_csv, len(keys))
        if spec.gaze_archive is not None:
            params["gaze_key"] = put(spec.gaze_archive, len(keys))
            params["gaze_name"] = spec.gaze_archive.name
        params["bytes"] = sum(f.size or 0 for f in every)
        job.params = params
        job.save(update_fields=["params"])
        from studies.tasks import ingest_upload

        job_dispatch(job=job, task=ingest_upload, broker_checked=True)
    return job
