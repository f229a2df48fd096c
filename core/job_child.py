"""In the embedded default (no broker, Celery tasks run in-process) a job of the ``gpu`` queue runs in a
child process, never in the process that dispatched it (the web server): ``manage.py job_exec``.

Jobs of that queue load registered models (TorchScript is code the JIT runs; any model file exercises
deserialisers) and hold large arrays; in the full setup they run on a ``gpu`` worker, here in a child
that uses the parent's database (``DATABASE_URL`` built from the current connection) and media folder
(``MEDIA_ROOT``). The child is not waited for: the request that started the job returns at once and the
job row records progress and outcome, as with a worker. A thread of the parent reaps the child and fails
the job when the child exited without ending it (a crash before or while loading); a parent that dies
leaves a running job whose lease lapses, which ``core.jobs.jobs_reap`` fails. The child records its pid
on the job's result (``result["pid"]``) once the job ended. A child that runs past its queue's hard time
limit (``JOB_TIME_LIMITS``) is killed and its job failed with the limit, as a worker's pool would.

``EMBEDDED_GPU_JOBS_IN_CHILD=false`` runs them in-process again (the tests do: their in-memory SQLite
database cannot be shared with a child).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection

from core.models import Job, JobStatus

log = logging.getLogger(__name__)

CHILD_QUEUES = ("gpu",)
REPO = Path(__file__).resolve().parent.parent

_children: dict[int, tuple[subprocess.Popen, threading.Thread]] = {}  # by job id, until reaped
_lock = threading.Lock()


class ChildUnavailable(Exception):
    """This process's database cannot be reached from another process (an in-memory SQLite database)."""


def task_queue(name: str) -> str:
    """The queue ``CELERY_TASK_ROUTES`` sends task ``name`` to."""
    from config.celery import app

    return app.amqp.router.route({}, name)["queue"].name


def runs_in_child(task: Any) -> bool:
    """Whether an in-process ``task`` runs in a child process instead (a ``gpu`` queue task, unless
    ``EMBEDDED_GPU_JOBS_IN_CHILD`` is off)."""
    return (
        bool(getattr(settings, "EMBEDDED_GPU_JOBS_IN_CHILD", True)) and task_queue(task.name) in CHILD_QUEUES
    )


def database_url() -> str:
    """``DATABASE_URL`` of the current connection (the test database's under tests), for a child."""
    db = connection.settings_dict
    engine = db["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        if connection.is_in_memory_db():
            raise ChildUnavailable("an in-memory SQLite database cannot be shared with a child process")
        timeout = (db.get("OPTIONS") or {}).get("timeout")
        return (
            "sqlite:///" + quote(str(Path(db["NAME"]).resolve())) + (f"?timeout={timeout}" if timeout else "")
        )
    if engine in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
        user = quote(db.get("USER") or "", safe="")
        password = quote(db.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = quote(db.get("HOST") or "", safe="")
        port = f":{db['PORT']}" if db.get("PORT") else ""
        options = {
            k: v for k, v in (db.get("OPTIONS") or {}).items() if isinstance(v, str | int) and v is not True
        }
        query = "&".join(f"{quote(str(k))}={quote(str(v), safe='')}" for k, v in options.items())
        return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}" + (f"?{query}" if query else "")
    raise ChildUnavailable(f"a child process cannot be given a {engine} database")


def job_start_child(*, job: Job, task: Any, kwargs: dict[str, Any]) -> subprocess.Popen | None:
    """Start ``manage.py job_exec`` for ``task`` on ``job`` and return at once (a thread reaps the
    child); ``None``, with the job failed, when no child can be given this database."""
    try:
        url = database_url()
    except ChildUnavailable as exc:
        log.error("job %s (%s) not started: %s", job.pk, task.name, exc)
        from core.jobs import job_fail  # here: core.jobs imports this module

        job_fail(job_id=job.pk, reason=f"not started: {exc}; set EMBEDDED_GPU_JOBS_IN_CHILD=false")
        return None
    env = dict(os.environ)
    env.pop("CELERY_BROKER_URL", None)  # the child runs its own jobs in-process too ...
    env.update(
        DATABASE_URL=url,
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        EMBEDDED_GPU_JOBS_IN_CHILD="false",  # ... in itself: it is not the web process
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings"),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    )
    command = [
        sys.executable,
        str(REPO / "manage.py"),
        "job_exec",
        "--task",
        task.name,
        "--job-id",
        str(job.pk),
    ]
    if kwargs:
        command += ["--kwargs", json.dumps(kwargs)]
    # Same process group: stopping the server (Ctrl-C) stops its jobs, whose leases then lapse.
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL)
    log.info("job %s (%s) runs in child process %s", job.pk, task.name, proc.pid)
    limits = settings.JOB_TIME_LIMITS.get(task_queue(task.name)) or {}
    reaper = threading.Thread(
        target=_reap, args=(job.pk, proc, limits.get("hard")), name=f"job-{job.pk}-child", daemon=True
    )
    with _lock:
        _children[job.pk] = (proc, reaper)
    reaper.start()
    return proc


def job_child_wait(job_id: int, timeout: float | None = None) -> int | None:
    """Wait until the child this process started for job ``job_id`` has exited and been reaped: its exit
    status, or ``None`` when there is none (none started, or reaped already). ``subprocess.TimeoutExpired``
    after ``timeout`` seconds."""
    with _lock:
        child = _children.get(job_id)
    if child is None:
        return None
    proc, reaper = child
    reaper.join(timeout)
    if reaper.is_alive():
        raise subprocess.TimeoutExpired(proc.args, timeout or 0)
    return proc.returncode


def _reap(job_id: int, proc: subprocess.Popen, hard_limit: float | None = None) -> None:
    """Wait for the child; kill it past ``hard_limit`` seconds; fail its job when it exited without ending
    it."""
    try:
        code = proc.wait(timeout=hard_limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        try:
            from core.jobs import job_fail_live, time_limit_reason  # here: core.jobs imports this module

            if job_fail_live(job_id, time_limit_reason(hard_limit)):
                log.error("job %s: its child process %s ran past %s s; killed", job_id, proc.pid, hard_limit)
        except Exception:
            log.exception("job %s: the time limit of its child process could not be recorded", job_id)
    try:
        if code != 0:
            from core.jobs import job_fail  # here: core.jobs imports this module

            live = Job.objects.filter(pk=job_id, status__in=[JobStatus.PENDING, JobStatus.RUNNING])
            if live.exists():
                log.error("job %s: its child process %s exited with status %s", job_id, proc.pid, code)
                job_fail(job_id=job_id, reason=f"its process stopped (exit status {code})")
    except Exception:
        log.exception("job %s: the end of its child process could not be recorded", job_id)
    finally:
        connection.close()
        with _lock:
            _children.pop(job_id, None)
