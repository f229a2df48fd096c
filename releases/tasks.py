"""Celery adapters for freezing and exporting releases (``default`` queue)."""

from celery import shared_task

from core.jobs import JobTask, job_run


@shared_task(name="releases.run_export", base=JobTask)
def run_export(*, job_id: int) -> None:
    from releases.services import export_job

    job_run(job_id=job_id, body=lambda job: export_job(job=job))


@shared_task(name="releases.run_freeze", base=JobTask)
def run_freeze(*, job_id: int) -> None:
    from releases.services import freeze_job

    job_run(job_id=job_id, body=lambda job: freeze_job(job=job))
