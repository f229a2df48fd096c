"""Celery adapters for review work (``default`` queue)."""

from celery import shared_task

from annotation.findings import findings_job
from annotation.loop import loop_job
from core.jobs import JobTask, job_run

FINDINGS_TASK = "annotation.findings_from_proposals"


@shared_task(name=FINDINGS_TASK, base=JobTask)
def findings_from_proposals(*, job_id: int) -> None:
    """Findings and review tasks of a finished label run (``Project.findings_after_label_run``: the run
    dispatches it by this name, ``labeling.services.findings_follow``), each starting from the region
    proposal that fits it."""
    job_run(job_id=job_id, body=lambda job: findings_job(job=job))


LOOP_TASK = "annotation.learning_loop"  # routed to the `gpu` queue (config/settings/celery.py)


@shared_task(name=LOOP_TASK, base=JobTask)
def learning_loop(*, job_id: int) -> None:
    """One turn of the learning loop (``annotation/loop.py``): train from accepted findings, then, with a
    better version, score the open cases and re-order the queue. Delivered again, training resumes."""
    job_run(job_id=job_id, body=lambda job: loop_job(job=job))
