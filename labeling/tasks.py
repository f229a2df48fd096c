"""Celery adapters for label runs."""

from celery import shared_task

from core.jobs import JobTask, job_run


@shared_task(name="labeling.run_labels", base=JobTask)
def run_labels(*, job_id: int) -> None:
    from labeling.services import label_run_job

    job_run(job_id=job_id, body=lambda job: label_run_job(job=job))


@shared_task(name="labeling.llm.run_labels", base=JobTask)
def run_llm_labels(*, job_id: int) -> None:
    """The same, on the ``llm`` queue (many concurrent requests; routed by the ``labeling.llm.*`` name)."""
    from labeling.services import label_run_job

    job_run(job_id=job_id, body=lambda job: label_run_job(job=job))


@shared_task(name="labeling.run_gaze_labels", base=JobTask)
def run_gaze_labels(*, job_id: int) -> None:
    """Gaze labels of a project (``default`` queue)."""
    from labeling.gaze.service import gaze_run_job

    job_run(job_id=job_id, body=lambda job: gaze_run_job(job=job))
