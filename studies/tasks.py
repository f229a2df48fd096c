"""Celery adapters for studies jobs: take a job id, load it, call the service, record the outcome."""

import os
import shutil
from pathlib import Path
from typing import Any

from celery import shared_task
from django.core.files.storage import default_storage

from core.jobs import JobTask, job_progress, job_run
from core.models import Job
from core.uploads import job_scratch_dir
from studies.services.ingest import GazeOptions, ReportOptions, ingest_counts, ingest_errors, ingest_run


@shared_task(name="studies.ingest_upload", base=JobTask)
def ingest_upload(*, job_id: int) -> None:
    """Ingest the files of an upload job (stored under ``job.params["upload_keys"]``). Raw files stay in
    the job's storage folder and its scratch folder, both removed when the job ends in any state
    (``core.jobs``), or by the reaper when this process dies first."""

    def body(job: Job):
        params = job.params
        tmp = job_scratch_dir(job.pk, create=True)
        # every raw file of this job, fetched or extracted, stays under its scratch folder
        local = _fetch(params.get("upload_keys", []), Path(tmp) / "files")
        reports = None
        if params.get("reports_key"):
            csv = _fetch([params["reports_key"]], Path(tmp) / "reports")[0]
            reports = ReportOptions(
                csv=csv,
                id_column=params.get("report_id_column"),
                text_columns=params.get("report_text_columns") or None,
                link=params.get("report_link", "id"),
                link_pattern=params.get("report_link_pattern"),
            )
        gaze = None
        if params.get("gaze_key"):
            archive = _fetch([params["gaze_key"]], Path(tmp) / "gaze")[0]
            gaze_dir = Path(tmp) / "gaze-extracted"
            from studies.ingest.files import zip_extract

            zip_extract(archive, gaze_dir, display=params.get("gaze_name", archive.name))
            gaze = GazeOptions(path=gaze_dir, format=params.get("gaze_format", "reflacx"))

        def progress(done: int, total: int, message: str) -> None:
            job_progress(job_id=job.pk, progress=done / total if total else 0.0, message=message)

        summary = ingest_run(
            project=job.project,
            paths=local,
            reports=reports,
            gaze=gaze,
            modality=params.get("modality", ""),
            study_pattern=params.get("study_pattern"),
            progress=progress,
            workdir=tmp,
        )
        summary = _without_folder(summary, f"{tmp}{os.sep}")  # names as uploaded, no server paths
        return summary, ingest_counts(summary), ingest_errors(summary)

    job_run(job_id=job_id, body=body)


def _without_folder(value: Any, folder: str) -> Any:
    """``value`` (a JSON-able summary) with ``folder`` taken out of every string in it."""
    if isinstance(value, str):
        return value.replace(folder, "")
    if isinstance(value, list):
        return [_without_folder(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: _without_folder(v, folder) for k, v in value.items()}
    return value


def _fetch(keys: list[str], dest: Path) -> list[Path]:
    """Copy stored upload objects to local files (the worker may be on another machine)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, key in enumerate(keys):
        target = dest / f"{i:05d}_{Path(key).name}"
        with default_storage.open(key, "rb") as src, open(target, "wb") as fh:
            shutil.copyfileobj(src, fh, 8 * 1024 * 1024)
        out.append(target)
    return out
