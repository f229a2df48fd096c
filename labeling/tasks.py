"""Celery adapters for label runs."""

from celery import shared_task

from core.jobs import job_run


@shared_task(name="labeling.run_labels", acks_late=True, max_retries=0)
def run_labels(*, job_id: int) -> None:
    from labeling.services import label_run_job

    job_run(job_id=job_id, body=lambda job: label_run_job(job=job))


@shared_task(name="labeling.llm.run_labels", acks_late=True, max_retries=0)
def run_llm_labels(*, job_id: int) -> None:
    """The same, on the ``llm`` queue (many concurrent requests; routed by the ``labeling.llm.*`` name)."""
    from labeling.services import label_run_job

    job_run(job_id=job_id, body=lambda job: label_run_job(job=job))


@shared_task(name="labeling.run_gaze_labels", acks_late=True, max_retries=0)
def run_gaze_labels(*, job_id: int) -> None:
    """Gaze labels of a project (``default`` queue)."""
    from labeling.gaze.service import gaze_run_job

    job_run(job_id=job_id, body=lambda job: gaze_run_job(job=job))
