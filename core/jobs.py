"""Background jobs: a Job row records state; Celery only carries the job id.

``job_dispatch`` sends the task after the surrounding transaction commits. With no broker configured
(the embedded default) Celery runs the task in-process, except a job of the ``gpu`` queue, which runs in
a child process (``core.job_child``); a configured broker that is down raises
``BrokerUnavailable`` before anything is stored, so the caller can tell the user.

A running job holds a lease (``Job.lease_until``, ``JOB_LEASE_SECONDS``) that its process renews while
it lives (a heartbeat thread, and every progress report). ``jobs_reap`` fails the running jobs whose
lease lapsed (their process died: a killed worker, a restarted web process) and removes their raw
uploads; it runs every minute under Celery beat, at worker start, before a job is created, in every
web process (at its start, then every ``JOB_REAP_INTERVAL_SECONDS``: ``jobs_reaper_start``) and as
``manage.py jobs_reap``. A job's raw uploads are removed whenever it ends, in any state.

Jobs end. Tasks that run jobs derive from ``JobTask``: acknowledged late, so a job whose worker dies is
delivered again; each delivery counts an attempt (``Job.attempts``), and a delivery that finds
``JOB_MAX_ATTEMPTS`` already fails the job (``attempts_reason``) without running it and is acknowledged.
Each queue has a soft and a hard time limit (``JOB_TIME_LIMITS``, ``config.celery.QueueTimeLimits``);
either fails the job (``time_limit_reason``): the soft one in ``job_run``, the hard one (its process
killed by the pool) in ``JobTask.on_failure``, in the worker's main process.
"""

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from celery import Task, current_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
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
    """Run ``body(job)`` -> ``(result, counts, errors)``, recording the outcome on the job row. A delivery
    that finds the job started ``JOB_MAX_ATTEMPTS`` times already (its worker died each time) fails it
    without running ``body`` and returns, so that the message is acknowledged and not delivered again."""
    if _attempts_spent(job_id):
        return
    job = job_start(job_id=job_id)
    try:
        with job_lease_kept(job_id=job_id):
            result, counts, errors = body(job)
    except SoftTimeLimitExceeded:
        reason = time_limit_reason(_soft_time_limit())
        log.error("job %s failed: %s", job_id, reason)
        job_fail(job_id=job_id, reason=reason, errors=[])
        raise
    except Exception as exc:
        log.exception("job %s failed", job_id)  # the traceback: the log only
        job_fail(job_id=job_id, reason=public_message(exc), errors=[])
        raise
    job_succeed(job_id=job_id, result=result, counts=counts, errors=errors)


LIVE = (JobStatus.PENDING, JobStatus.RUNNING)


def attempts_reason(attempts: int) -> str:
    return f"stopped its worker {attempts} times (out of memory or time limit?); not retried"


def time_limit_reason(seconds: float | None) -> str:
    return f"ran past its time limit of {seconds:g} s" if seconds else "ran past its time limit"


def _attempts_spent(job_id: int) -> bool:
    """Whether this delivery of the job must not run: it started ``JOB_MAX_ATTEMPTS`` times already. A job
    still pending or running is failed with ``attempts_reason`` (one conditional update)."""
    limit = settings.JOB_MAX_ATTEMPTS
    attempts = Job.objects.filter(pk=job_id).values_list("attempts", flat=True).first()
    if not limit or attempts is None or attempts < limit:
        return False
    reason = attempts_reason(attempts)
    if job_fail_live(job_id, reason):
        log.error("job %s failed: %s", job_id, reason)
    else:
        log.warning("job %s delivered again after it ended (%s attempts); not run", job_id, attempts)
    return True


def job_fail_live(job_id: int, reason: str) -> bool:
    """Fail the job unless it has ended already; whether it was failed here."""
    updated = Job.objects.filter(pk=job_id, status__in=LIVE).update(
        status=JobStatus.FAILED, message=reason[:500], finished_at=timezone.now(), lease_until=None
    )
    if updated:
        _job_files_remove(job_id)
    return bool(updated)


def _soft_time_limit() -> float | None:
    """The soft time limit of the task this process runs now (its message's, else the task's)."""
    task = current_task._get_current_object()
    if task is None:
        return None
    limits = getattr(task.request, "timelimit", None) or (None, None)
    return limits[1] or task.soft_time_limit


class JobTask(Task):
    """The base of the tasks that run a job (keyword ``job_id``): ``shared_task(base=JobTask)``.

    Acknowledged after it ran (a worker that dies leaves it to be delivered again, each delivery an
    attempt: ``job_run``), never retried by Celery itself. ``on_failure`` records what the body could not:
    a hard time limit, where the pool killed the process running it (the worker's main process calls it),
    or an error before the body ran. A job that has ended already is left as it is."""

    acks_late = True
    max_retries = 0

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        job_id = (kwargs or {}).get("job_id")
        if job_id is None:
            return
        if isinstance(exc, TimeLimitExceeded):
            seconds = exc.args[0] if exc.args and isinstance(exc.args[0], int | float) else self.time_limit
            reason = time_limit_reason(seconds)
        else:
            reason = public_message(exc)
        if job_fail_live(job_id, reason):
            log.error("job %s failed: %s", job_id, reason)


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


class _ReaperThread(threading.Thread):
    fork_safe = True  # like the lease thread: a forked child uses no database connection


_reaper: _ReaperThread | None = None
_reaper_lock = threading.Lock()


def jobs_reaper_start(*, interval: float | None = None) -> threading.Thread | None:
    """Reap now and then every ``interval`` seconds (``JOB_REAP_INTERVAL_SECONDS``; 0: never) in a daemon
    thread of this process, once per process. Web processes start it (``config.wsgi``, ``config.asgi``):
    with jobs in-process (the embedded default) a job left running by a web process that died is failed
    once its lease lapsed, with no worker, beat or new job needed."""
    global _reaper
    interval = settings.JOB_REAP_INTERVAL_SECONDS if interval is None else interval
    if interval <= 0:
        return None
    with _reaper_lock:
        if _reaper is None or not _reaper.is_alive():
            _reaper = _ReaperThread(target=_reap_every, args=(interval,), name="jobs-reaper", daemon=True)
            _reaper.start()
        return _reaper


def _reap_every(interval: float) -> None:
    sweep = True  # the first pass also removes what ended jobs left behind
    while True:
        try:
            jobs_reap(sweep=sweep)
            sweep = False
        except Exception as exc:  # a database not migrated yet, or busy: the next pass tries again
            log.warning("jobs not reaped: %s", exc)
        finally:
            connection.close()
        time.sleep(interval)


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
