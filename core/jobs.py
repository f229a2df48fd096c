"""Background jobs: a Job row records state; Celery only carries the job id.

``job_dispatch`` sends the task after the surrounding transaction commits. With no broker configured
(the embedded default) Celery runs the task in-process, except a job of the ``gpu`` queue, which runs in
a child process (``core.job_child``); a configured broker that is down raises
``BrokerUnavailable`` before anything is stored, so the caller can tell the user.

A running job holds a lease (``Job.lease_until``, ``JOB_LEASE_SECONDS``) that its process renews while
it lives (a heartbeat thread, and every progress report). ``jobs_reap`` fails the running jobs whose
lease lapsed (their process died: a killed worker, a restarted web process) and removes their raw
uploads; it runs every minute under Celery beat, at worker start, before a job is created and as
``manage.py jobs_reap``. A job's raw uploads are removed whenever it ends, in any state.
"""

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from core.errors import ServiceUnavailable, public_message
from core.job_child import job_start_child, runs_in_child
from core.models import Job, JobStatus, Project
from core.storage import project_key
from core.uploads import job_files_remove, job_scratch_root

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
    jobs_reap(sweep=False)  # a job left running by a dead process is failed before new work starts
    return Job.objects.create(project=project, kind=kind, params=params or {}, created_by=user)


def job_dispatch(*, job: Job, task, broker_checked: bool = False, **kwargs: Any) -> None:
    """Send ``task`` with the job id once the current transaction commits (ids only, no payloads).
    The broker is checked first unless the caller has just done so (``broker_checked``)."""
    if not broker_checked:
        broker_check()

    from config.celery import app

    def send() -> None:
        if app.conf.task_always_eager:
            if runs_in_child(task):  # a `gpu` job (models): a child process, never this (web) process
                job_start_child(job=job, task=task, kwargs=kwargs)
                return
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
        status=JobStatus.RUNNING,
        started_at=timezone.now(),
        attempts=F("attempts") + 1,
        lease_until=job_lease_until(),
    )
    return Job.objects.get(pk=job_id)


def job_progress(*, job_id: int, progress: float, message: str = "", counts: dict | None = None) -> None:
    fields: dict[str, Any] = {"progress": max(0.0, min(1.0, progress)), "lease_until": job_lease_until()}
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
        lease_until=None,
    )
    _job_files_remove(job_id)


def job_fail(*, job_id: int, reason: str, errors: list[dict] | None = None) -> None:
    fields: dict[str, Any] = {
        "status": JobStatus.FAILED,
        "message": reason[:500],
        "finished_at": timezone.now(),
    }
    if errors is not None:
        fields["errors"] = errors
    Job.objects.filter(pk=job_id).update(lease_until=None, **fields)
    _job_files_remove(job_id)


def job_run(*, job_id: int, body: Callable[[Job], tuple[dict, dict, list[dict]]]) -> None:
    """Run ``body(job)`` -> ``(result, counts, errors)``, recording the outcome on the job row."""
    job = job_start(job_id=job_id)
    try:
        with job_lease_kept(job_id=job_id):
            result, counts, errors = body(job)
    except Exception as exc:
        log.exception("job %s failed", job_id)  # the traceback: the log only
        job_fail(job_id=job_id, reason=public_message(exc), errors=[])
        raise
    job_succeed(job_id=job_id, result=result, counts=counts, errors=errors)


REAPED = "the process running it stopped (its lease lapsed); reaped, its uploaded files removed"


def job_lease_until(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=settings.JOB_LEASE_SECONDS)


class _LeaseThread(threading.Thread):
    fork_safe = True  # holds no lock a forked child could need (studies.services.scans forks beside it)


@contextmanager
def job_lease_kept(*, job_id: int) -> Iterator[None]:
    """Renew the job's lease every third of ``JOB_LEASE_SECONDS`` while the block runs (a daemon thread
    with its own database connection), so a long step that reports no progress is not reaped."""
    stop = threading.Event()
    interval = max(0.2, settings.JOB_LEASE_SECONDS / 3)

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    Job.objects.filter(pk=job_id, status=JobStatus.RUNNING).update(
                        lease_until=job_lease_until()
                    )
                except Exception as exc:  # a busy database: the next beat tries again
                    log.warning("lease of job %s not renewed: %s", job_id, exc)
        finally:
            connection.close()

    thread = _LeaseThread(target=beat, name=f"job-{job_id}-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def _job_files_remove(job_id: int) -> None:
    job = Job.objects.select_related("project").filter(pk=job_id).first()
    if job is not None:
        job_files_remove(job)


def _lapsed(now: datetime) -> Q:
    """Running jobs whose lease lapsed (or, from before leases, that started a lease ago)."""
    lease = timedelta(seconds=settings.JOB_LEASE_SECONDS)
    return Q(status=JobStatus.RUNNING) & (
        Q(lease_until__lt=now) | Q(lease_until__isnull=True, started_at__lt=now - lease)
    )


def jobs_reap(*, now: datetime | None = None, sweep: bool = True) -> list[int]:
    """Fail the running jobs whose lease lapsed (``REAPED``) and remove their raw uploads; returns their
    ids. With ``sweep``, also remove raw uploads that finished jobs left behind (a process that died
    between recording the end and removing them). Safe to run anywhere, any number of times at once:
    a job is failed by one conditional update."""
    now = now or timezone.now()
    reaped = []
    for pk in list(Job.objects.filter(_lapsed(now)).values_list("pk", flat=True)):
        updated = Job.objects.filter(_lapsed(now), pk=pk).update(
            status=JobStatus.FAILED, message=REAPED, finished_at=now, lease_until=None
        )
        if updated:
            log.warning("job %s reaped: %s", pk, REAPED)
            _job_files_remove(pk)
            reaped.append(pk)
    if sweep:
        _uploads_sweep()
    return reaped


def _uploads_sweep() -> None:
    """Raw uploads of jobs that are no longer pending or running: local scratch folders, storage folders."""
    live = set(
        Job.objects.filter(status__in=[JobStatus.PENDING, JobStatus.RUNNING]).values_list("pk", flat=True)
    )
    root = job_scratch_root()
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith("job-") and path.name[4:].isdigit() and int(path.name[4:]) not in live:
                shutil.rmtree(path, ignore_errors=True)
    for project in Project.objects.all():
        try:
            folders, _ = default_storage.listdir(project_key(project, "uploads"))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except Exception:
            log.exception("uploads of project %s could not be listed", project.slug)
            continue
        ended = Job.objects.filter(project=project, pk__in=[int(f) for f in folders if f.isdigit()]).exclude(
            pk__in=live
        )
        for job in ended.select_related("project"):
            job_files_remove(job)
