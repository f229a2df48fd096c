"""The embedded default's warm child for click jobs (``ml.interactive``): one per web process, started on the
first click (or when the review screen asks what a click does), serving the clicks one after the other.

Jobs of the ``gpu`` queue never run in the web process (``core.job_child``); a child per job would cost each
click ~4 s of CPU to start Python, Django and the task registry, against a region grow's fraction of a
second. So clicks go to one long-lived child, ``manage.py interactive_worker``, on the same database and
media folder: this process writes a job id per line on its stdin, the child runs the job (``task.apply``,
as a worker does: the job row records progress and outcome) and answers ``done <id>`` on its stdout. What
the child has loaded stays loaded (an interactive model: ``ml.engine.interactive`` keeps the last one).

The child ends when its stdin closes (this process ended), after ``INTERACTIVE_WORKER_IDLE_SECONDS``
(default 600) without a click, or when killed. A thread of this process reads its answers; when the child
is gone, the jobs it had started and not ended are failed ("its process stopped"), and those it had not
started yet go to a new child. A click job that runs past ``INTERACTIVE_TIME_LIMIT_SECONDS`` (default 120)
has its child killed and fails with the limit. Every answer path is in the job row, as with any job.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.db import connection

from core.models import Job, JobStatus

log = logging.getLogger(__name__)

PREFIX = "INTERACTIVE-WORKER:"  # the child's answer lines on its stdout


def idle_seconds() -> float:
    return float(getattr(settings, "INTERACTIVE_WORKER_IDLE_SECONDS", None) or
                 os.environ.get("INTERACTIVE_WORKER_IDLE_SECONDS") or 600)  # fmt: skip


def time_limit_seconds() -> float:
    return float(getattr(settings, "INTERACTIVE_TIME_LIMIT_SECONDS", None) or
                 os.environ.get("INTERACTIVE_TIME_LIMIT_SECONDS") or 120)  # fmt: skip


class _Worker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.sent: dict[int, float] = {}  # job id -> when it was sent to the current child
        self.ready = threading.Event()

    def start(self) -> subprocess.Popen:
        """The running child, started when there is none (call with the lock held)."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        from core.job_child import REPO, database_url

        env = dict(os.environ)
        env.pop("CELERY_BROKER_URL", None)
        env.update(
            DATABASE_URL=database_url(),
            MEDIA_ROOT=str(settings.MEDIA_ROOT),
            EMBEDDED_GPU_JOBS_IN_CHILD="false",
            DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings"),
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        )
        command = [sys.executable, str(REPO / "manage.py"), "interactive_worker", "--idle-seconds",
                   str(idle_seconds())]  # fmt: skip
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        log.info("interactive worker started: child process %s", proc.pid)
        self.proc = proc
        self.ready.clear()
        threading.Thread(target=self._read, args=(proc,), name="interactive-worker", daemon=True).start()
        threading.Thread(target=self._watch, args=(proc,), name="interactive-watch", daemon=True).start()
        return proc

    def submit(self, job_id: int) -> None:
        with self.lock:
            for _ in range(2):
                proc = self.start()
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(f"{job_id}\n")
                    proc.stdin.flush()
                except (BrokenPipeError, OSError):  # it just ended (idle): a new one
                    proc.wait()
                    continue
                self.sent[job_id] = time.monotonic()
                return
        _fail(job_id, "the interactive worker could not be started")

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if not line.startswith(PREFIX):
                    continue
                word, _, rest = line[len(PREFIX) :].strip().partition(" ")
                if word == "ready":
                    self.ready.set()
                elif word == "done":
                    with self.lock:
                        self.sent.pop(int(rest), None)
            code = proc.wait()
            self._orphans(proc, code)
        except Exception:
            log.exception("interactive worker %s: its answers could not be read", proc.pid)
        finally:
            connection.close()

    def _orphans(self, proc: subprocess.Popen, code: int) -> None:
        """The child ended: its started jobs fail, its unstarted ones go to a new child."""
        with self.lock:
            if self.proc is not proc:
                return
            self.proc = None
            left, self.sent = self.sent, {}
        if code not in (0, None):
            log.error("interactive worker %s exited with status %s", proc.pid, code)
        for job_id in left:
            status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
            if status == JobStatus.PENDING:
                self.submit(job_id)
            elif status == JobStatus.RUNNING:
                _fail(job_id, f"its process stopped (exit status {code})")

    def _watch(self, proc: subprocess.Popen) -> None:
        """Kill the child when a click job has run past the time limit (its job then fails with it)."""
        limit = time_limit_seconds()
        while proc.poll() is None:
            time.sleep(min(1.0, limit / 4))
            with self.lock:
                late = [j for j, t in self.sent.items() if time.monotonic() - t > limit]
            if late and proc.poll() is None:
                from core.jobs import job_fail_live, time_limit_reason

                for job_id in late:
                    job_fail_live(job_id, time_limit_reason(limit))
                log.error("interactive worker %s: job(s) %s ran past %s s; killed", proc.pid, late, limit)
                proc.kill()
                break
        connection.close()


def _fail(job_id: int, reason: str) -> None:
    from core.jobs import job_fail

    if Job.objects.filter(pk=job_id, status__in=[JobStatus.PENDING, JobStatus.RUNNING]).exists():
        job_fail(job_id=job_id, reason=reason)


_worker = _Worker()


def worker_submit(*, job_id: int) -> None:
    """Send a click job to the warm child (started when there is none)."""
    _worker.submit(job_id)


def worker_warm() -> str:
    """Start the warm child if there is none: ``"ready"``, ``"starting"`` or ``"unavailable"`` (this
    process's database cannot be shared: an in-memory SQLite database)."""
    from core.job_child import ChildUnavailable

    try:
        with _worker.lock:
            _worker.start()
    except ChildUnavailable:
        return "unavailable"
    return "ready" if _worker.ready.is_set() else "starting"


def worker_pid() -> int | None:
    proc = _worker.proc
    return proc.pid if proc is not None and proc.poll() is None else None


def worker_stop(timeout: float = 10.0) -> None:
    """End the child (its stdin closed: it finishes the job it runs, then exits)."""
    with _worker.lock:
        proc = _worker.proc
    if proc is None:
        return
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
