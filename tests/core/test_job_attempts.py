"""Jobs that end: each delivery of a job counts an attempt, and a job that stopped its worker
``JOB_MAX_ATTEMPTS`` times is failed with the reason instead of running again; soft and hard time limits
per queue fail the job with the limit; a web process reaps jobs whose process died.

The last tests use a real Celery worker process on Redis (and PostgreSQL, which it shares with the test):
a job that kills its worker's process (SIGKILL, as the out-of-memory killer would) is delivered again
until its attempts run out, then failed and acknowledged while the worker goes on with other jobs."""

import os
import runpy
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from config.celery import app
from core.job_child import job_child_wait
from core.jobs import (
    REAPED,
    JobTask,
    attempts_reason,
    job_create,
    job_dispatch,
    job_run,
    time_limit_reason,
)
from core.models import Job, JobStatus
from tests.conftest import REPO, need_service
from tests.core import job_tasks
from tests.ml import test_embedded_child


def _never(job):
    raise AssertionError("the body ran")


# --- attempts ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_delivery_that_finds_the_attempts_spent_fails_the_job_without_running_it(project, settings):
    settings.JOB_MAX_ATTEMPTS = 3
    # Given a job whose worker died during each of its 3 deliveries (left running, 3 attempts)
    job = job_create(project=project, kind="test")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, attempts=3, lease_until=timezone.now())
    # When it is delivered again, the body does not run and the task returns (its message is acknowledged)
    assert job_run(job_id=job.pk, body=_never) is None
    job.refresh_from_db()
    assert (job.status, job.attempts, job.lease_until) == ("failed", 3, None)
    assert job.message == "stopped its worker 3 times (out of memory or time limit?); not retried"
    assert job.message == attempts_reason(3) and job.finished_at is not None


@pytest.mark.django_db
def test_attempts_under_the_limit_run_and_count(project, settings):
    settings.JOB_MAX_ATTEMPTS = 3
    job = job_create(project=project, kind="test")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, attempts=2)
    job_run(job_id=job.pk, body=lambda j: ({"attempt": j.attempts}, {}, []))
    job.refresh_from_db()
    assert (job.status, job.attempts, job.result) == ("succeeded", 3, {"attempt": 3})


@pytest.mark.django_db
def test_an_ended_job_delivered_again_past_the_limit_keeps_its_outcome(project, settings):
    settings.JOB_MAX_ATTEMPTS = 2
    job = job_create(project=project, kind="test")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, attempts=2, message="done")
    job_run(job_id=job.pk, body=_never)
    job.refresh_from_db()
    assert (job.status, job.message, job.attempts) == ("succeeded", "done", 2)


@pytest.mark.django_db
def test_the_limit_also_holds_for_a_task_run_in_process(project, settings):
    settings.JOB_MAX_ATTEMPTS = 1
    job = job_create(project=project, kind="test")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, attempts=1)
    job_tasks.kill_worker.apply(kwargs={"job_id": job.pk})  # eager: would raise, not kill, if it ran
    job.refresh_from_db()
    assert job.status == "failed" and job.message == attempts_reason(1)


# --- time limits -------------------------------------------------------------------------------------


def test_every_job_task_has_its_queues_time_limits(settings):
    app.loader.import_default_modules()
    queues = {
        "studies.ingest_upload": "default",
        "labeling.run_labels": "default",
        "labeling.llm.run_labels": "llm",
        "ml.preannotate": "gpu",
        "ml.train_model": "gpu",
        "releases.run_export": "default",
    }
    for name, queue in queues.items():
        task = app.tasks[name]
        limits = settings.JOB_TIME_LIMITS[queue]
        assert (task.soft_time_limit, task.time_limit) == (limits["soft"], limits["hard"]), name
        assert isinstance(task, JobTask) and task.acks_late and task.reject_on_worker_lost, name
    # an unacknowledged job goes to another worker only after the longest hard limit
    hardest = max(limits["hard"] for limits in settings.JOB_TIME_LIMITS.values())
    assert app.conf.broker_transport_options["visibility_timeout"] > hardest


def test_time_limits_come_from_the_environment_and_a_soft_limit_past_the_hard_one_refuses_to_start(
    monkeypatch,
):
    path = str(REPO / "config" / "settings" / "celery.py")
    monkeypatch.setenv("JOB_SOFT_TIME_LIMIT_GPU", "600")
    limits = runpy.run_path(path)["JOB_TIME_LIMITS"]
    assert limits["gpu"] == {"soft": 600, "hard": 900}  # the hard limit: 5 minutes later unless set
    monkeypatch.setenv("JOB_TIME_LIMIT_LLM", "60")
    monkeypatch.setenv("JOB_SOFT_TIME_LIMIT_LLM", "120")
    with pytest.raises(ImproperlyConfigured, match="JOB_SOFT_TIME_LIMIT_LLM"):
        runpy.run_path(path)


@pytest.mark.django_db
def test_a_job_stopped_by_its_soft_time_limit_fails_with_the_limit(project, settings):
    job = job_create(project=project, kind="test")
    with pytest.raises(SoftTimeLimitExceeded):  # in-process (no time limits there): it propagates
        job_tasks.soft_limit.apply(kwargs={"job_id": job.pk})
    job.refresh_from_db()
    soft = settings.JOB_TIME_LIMITS["default"]["soft"]
    assert job.status == "failed" and job.message == f"ran past its time limit of {soft} s"


@pytest.mark.django_db
def test_a_hard_time_limit_fails_the_job_from_the_workers_main_process(project):
    job = job_create(project=project, kind="test")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, attempts=1)
    # the pool killed the process that ran it, so its body recorded nothing: Celery calls the hook
    exc = TimeLimitExceeded(7200.0)
    job_tasks.pid.on_failure(exc, "task-id", (), {"job_id": job.pk}, None)
    job.refresh_from_db()
    assert job.status == "failed" and job.message == "ran past its time limit of 7200 s"
    # a job that ended is left as it is
    job_tasks.pid.on_failure(ValueError("later"), "task-id", (), {"job_id": job.pk}, None)
    job.refresh_from_db()
    assert job.message == time_limit_reason(7200)


child_db = test_embedded_child.child_db  # fixtures: a database a child process can open, a small CT
ct = test_embedded_child.ct


@pytest.mark.django_db(transaction=True)
def test_a_gpu_job_in_a_child_process_is_killed_past_its_hard_limit(
    child_db, settings, project, manager, api_client, ct
):
    # Given jobs in-process, where a `gpu` job runs in a child process, and a 1 s hard limit for them
    app.loader.import_default_modules()  # the tasks keep the limits they were made with, not these
    assert app.tasks["ml.preannotate"].time_limit == settings.JOB_TIME_LIMITS["gpu"]["hard"]
    settings.JOB_TIME_LIMITS = {**settings.JOB_TIME_LIMITS, "gpu": {"soft": 0.5, "hard": 1}}
    # When a pre-annotation starts (the child needs longer than that to start Django alone)
    started = api_client(manager).post(
        reverse("scan-preannotate", args=[ct.pk]), {"generator": "lungs"}, format="json"
    )
    job_id = started.json()["job_id"]
    # Then the child is killed and the job failed with the limit
    assert job_child_wait(job_id, 120) in (None, -signal.SIGKILL)  # None: reaped already
    job = Job.objects.get(pk=job_id)
    assert job.status == "failed" and job.message == "ran past its time limit of 1 s"


# --- a web process reaps ------------------------------------------------------------------------------

# A web process of the embedded default: a job of an upload runs in it and the process dies (SIGKILL)
# mid-job, leaving the job running with its lease.
_DYING_WEB_PROCESS = """
import os, signal
import django

django.setup()
from django.core.management import call_command

call_command("migrate", verbosity=0)
from core.jobs import job_create, job_run
from core.services import project_create

job = job_create(project=project_create(slug="web", name="Web"), kind="ingest")
print(job.pk, flush=True)
job_run(job_id=job.pk, body=lambda job: os.kill(os.getpid(), signal.SIGKILL))
"""


def _job_row(db) -> tuple | None:
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return conn.execute("SELECT status, message, attempts FROM core_job").fetchone()
    except sqlite3.OperationalError:
        return None


@pytest.mark.slow
def test_a_web_server_started_after_a_web_process_died_mid_job_reaps_it(tmp_path):
    db = tmp_path / "db.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": f"sqlite:///{db}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "CELERY_BROKER_URL": "",
        "JOB_LEASE_SECONDS": "4",
        "JOB_REAP_INTERVAL_SECONDS": "1",
    }
    # Given a web process that died mid-job
    dead = subprocess.run(
        [sys.executable, "-c", _DYING_WEB_PROCESS], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert dead.returncode == -signal.SIGKILL, dead.stderr[-3000:]
    assert _job_row(db)[0] == "running"
    # When the web server starts again and nobody makes a request or a job
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", "127.0.0.1:0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (_job_row(db) or ("",))[0] == "running":
            time.sleep(0.2)
        row = _job_row(db)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    # Then its reaper fails the job once the lease lapsed
    assert row == ("failed", REAPED, 1), output[-3000:]


# --- a real worker -------------------------------------------------------------------------------------


def _database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _wait_ended(job_id: int, seconds: float) -> Job:
    deadline = time.monotonic() + seconds
    job = Job.objects.get(pk=job_id)
    while time.monotonic() < deadline and job.status in (JobStatus.PENDING, JobStatus.RUNNING):
        time.sleep(0.3)
        job.refresh_from_db()
    return job


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_job_that_kills_its_worker_ends_failed_and_the_worker_goes_on(
    project, celery_broker, settings, monkeypatch
):
    if connection.vendor != "postgresql":
        need_service("PostgreSQL", "the worker process needs a shared database: set DATABASE_URL")
    import redis

    # The limits travel with each task as its sender set them: 1 s soft, 3 s hard for the sleepers (as
    # the worker's); the killer gets a minute, so that its worker notices the dead process first (seconds)
    for task, soft, hard in (
        (job_tasks.sleep, 1, 3),
        (job_tasks.pid, 1, 3),
        (job_tasks.kill_worker, 60, 120),
    ):
        monkeypatch.setattr(task, "soft_time_limit", soft)
        monkeypatch.setattr(task, "time_limit", hard)
        monkeypatch.setattr(task, "_exec_options", None)
    env = dict(
        os.environ,
        DATABASE_URL=_database_url(),
        CELERY_BROKER_URL=celery_broker.conf.broker_url,
        MEDIA_ROOT=settings.MEDIA_ROOT,
        JOB_MAX_ATTEMPTS="3",
        JOB_SOFT_TIME_LIMIT_DEFAULT="1",
        JOB_TIME_LIMIT_DEFAULT="3",
        **{job_tasks.WORKER_ENV: "1"},
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default", "--concurrency", "1",
         "--include", "tests.core.job_tasks", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-l", "WARNING"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # Given a job that kills the process running it, a job that sleeps past its soft limit and one
        # that sleeps on past it (until the hard limit)
        killer = job_create(project=project, kind="test")
        sleeper = job_create(project=project, kind="test", params={"seconds": 30})
        stubborn = job_create(project=project, kind="test", params={"seconds": 30, "past_soft_limit": True})
        job_dispatch(job=killer, task=job_tasks.kill_worker)
        job_dispatch(job=sleeper, task=job_tasks.sleep)
        job_dispatch(job=stubborn, task=job_tasks.sleep)
        killer, sleeper, stubborn = (_wait_ended(j.pk, 120) for j in (killer, sleeper, stubborn))
        time.sleep(3)  # time for a delivery that should not happen
        for job in (killer, sleeper, stubborn):
            job.refresh_from_db()
        # Then the killer ran 3 times, the 4th delivery failed it with the reason and was acknowledged
        assert (killer.status, killer.attempts) == ("failed", 3), worker_output(worker)
        assert killer.message == "stopped its worker 3 times (out of memory or time limit?); not retried"
        # and the sleepers failed with their limits, once each (a time limit is not delivered again)
        assert (sleeper.status, sleeper.message, sleeper.attempts) == (
            "failed", "ran past its time limit of 1 s", 1,
        )  # fmt: skip
        assert (stubborn.status, stubborn.message, stubborn.attempts) == (
            "failed", "ran past its time limit of 3 s", 1,
        )  # fmt: skip
        broker = redis.Redis.from_url(celery_broker.conf.broker_url)
        assert broker.llen("default") == 0 and broker.hlen("unacked") == 0  # no message left
        # and the worker is alive and takes the next job
        assert worker.poll() is None
        after = job_create(project=project, kind="test")
        job_dispatch(job=after, task=job_tasks.pid)
        after = _wait_ended(after.pk, 60)
        assert after.status == "succeeded" and after.attempts == 1, worker_output(worker)
        assert after.result["pid"] != worker.pid and worker.poll() is None
    finally:
        if worker.poll() is None:
            worker.terminate()
        worker.communicate(timeout=30)


def worker_output(worker: subprocess.Popen) -> str:
    worker.terminate()
    return worker.communicate(timeout=30)[0][-4000:]
