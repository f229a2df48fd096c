"""Background jobs: a Job row records state; Celery only carries the job id.

``job_dispatch`` sends the task after the surrounding transaction commits. With no broker configured
(the embedded default) Celery runs the task in-process; a configured broker that is down raises
``BrokerUnavailable`` before anything is stored, so the caller can tell the user.
"""

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.errors import ServiceUnavailable, public_message
from core.models import Job, JobStatus, Project

log = logging.getLogger(__name__)


class BrokerUnavailable(ServiceUnavailable):
    """The configured Celery broker cannot be reached (503). The message names no URL or password: the
    log has the broker's address (password masked) and the cause."""

    def __init__(self, message: str = ""):
        super().__init__(
            message
            or "The task broker cannot be reached, so the job was not started. Ask the operator to start "
            "it (or to unset CELERY_BROKER_URL to run jobs in-process).",
            field="broker",
        )


def broker_check() -> None:
    """Raise ``BrokerUnavailable`` unless tasks run in-process or the broker answers."""
    from config.celery import app

    if app.conf.task_always_eager:
        return
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # kombu raises several kinds
        log.error("the task broker at %s cannot be reached: %s", _masked(app.conf.broker_url), exc)
        raise BrokerUnavailable() from exc


def _masked(url: str | None) -> str:
    """A broker URL with its password replaced by ``***`` (for the log)."""
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url or "") or ""


def job_create(*, project: Project, kind: str, params: dict | None = None, user=None) -> Job:
    return Job.objects.create(project=project, kind=kind, params=params or {}, created_by=user)


def job_dispatch(*, job: Job, task, broker_checked: bool = False, **kwargs: Any) -> None:
    """Send ``task`` with the job id once the current transaction commits (ids only, no payloads).
    The broker is checked first unless the caller has just done so (``broker_checked``)."""
    if not broker_checked:
        broker_check()

    from config.celery import app

    def send() -> None:
        if app.conf.task_always_eager:
            try:
                task.apply(kwargs={"job_id": job.pk, **kwargs})
            except Exception:  # in-process: the job row already records the failure
                log.exception("job %s failed in-process", job.pk)
            return
        try:
            task.apply_async(kwargs={"job_id": job.pk, **kwargs})
        except Exception as exc:
            log.error("job %s could not be queued at %s: %s", job.pk, _masked(app.conf.broker_url), exc)
            job_fail(job_id=job.pk, reason="could not be queued: the task broker cannot be reached")
            raise BrokerUnavailable() from exc

    transaction.on_commit(send)


def job_start(*, job_id: int) -> Job:
    Job.objects.filter(pk=job_id).update(
        status=JobStatus.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1
    )
    return Job.objects.get(pk=job_id)


def job_progress(*, job_id: int, progress: float, message: str = "", counts: dict | None = None) -> None:
    fields: dict[str, Any] = {"progress": max(0.0, min(1.0, progress))}
    if message:
        fields["message"] = message[:500]
    if counts is not None:
        fields["counts"] = counts
    Job.objects.filter(pk=job_id).update(**fields)


def job_succeed(*, job_id: int, result: dict, counts: dict, errors: list[dict]) -> None:
    Job.objects.filter(pk=job_id).update(
        status=JobStatus.SUCCEEDED,
        progress=1.0,
        result=result,
        counts=counts,
        errors=errors,
        finished_at=timezone.now(),
        message="done",
    )


def job_fail(*, job_id: int, reason: str, errors: list[dict] | None = None) -> None:
    fields: dict[str, Any] = {
        "status": JobStatus.FAILED,
        "message": reason[:500],
        "finished_at": timezone.now(),
    }
    if errors is not None:
        fields["errors"] = errors
    Job.objects.filter(pk=job_id).update(**fields)


def job_run(*, job_id: int, body: Callable[[Job], tuple[dict, dict, list[dict]]]) -> None:
    """Run ``body(job)`` -> ``(result, counts, errors)``, recording the outcome on the job row."""
    job = job_start(job_id=job_id)
    try:
        result, counts, errors = body(job)
    except Exception as exc:
        log.exception("job %s failed", job_id)  # the traceback: the log only
        job_fail(job_id=job_id, reason=public_message(exc), errors=[])
        raise
    job_succeed(job_id=job_id, result=result, counts=counts, errors=errors)
