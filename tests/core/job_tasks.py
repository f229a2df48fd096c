"""Tasks for the job tests only (``tests/core/test_job_attempts.py``). A worker started with
``--include tests.core.job_tasks`` knows them; their names route them to the ``default`` queue."""

import os
import signal
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from core.jobs import JobTask, job_run

WORKER_ENV = "GROUNDLAB_TEST_WORKER"  # set in the test's worker: only there may a task kill its process


@shared_task(name="tests.jobs.kill_worker", base=JobTask)
def kill_worker(*, job_id: int) -> None:
    """Kills the process that runs it (as the out-of-memory killer would), every time it is delivered."""

    def body(job):
        if os.environ.get(WORKER_ENV) != "1":
            raise RuntimeError("kill_worker runs in the test's worker only")
        os.kill(os.getpid(), signal.SIGKILL)
        return {}, {}, []

    job_run(job_id=job_id, body=body)


@shared_task(name="tests.jobs.sleep", base=JobTask)
def sleep(*, job_id: int) -> None:
    """Sleeps ``params["seconds"]``; with ``params["past_soft_limit"]`` it sleeps on after the soft time
    limit (a body that swallows it), until the hard limit kills its process."""

    def body(job):
        deadline = time.monotonic() + job.params["seconds"]
        while time.monotonic() < deadline:
            try:
                time.sleep(max(0.0, deadline - time.monotonic()))
            except SoftTimeLimitExceeded:
                if not job.params.get("past_soft_limit"):
                    raise
        return {"slept": job.params["seconds"]}, {}, []

    job_run(job_id=job_id, body=body)


@shared_task(name="tests.jobs.soft_limit", base=JobTask)
def soft_limit(*, job_id: int) -> None:
    """Its body stops as the soft time limit stops a body in a worker (eager mode has no time limits)."""

    def body(job):
        raise SoftTimeLimitExceeded()

    job_run(job_id=job_id, body=body)


@shared_task(name="tests.jobs.pid", base=JobTask)
def pid(*, job_id: int) -> None:
    job_run(job_id=job_id, body=lambda job: ({"pid": os.getpid()}, {}, []))
