"""A training job whose worker is killed (SIGKILL) resumes from its last checkpoint on another worker.

Real Celery workers on the ``gpu`` queue (here on the CPU) take the job from Redis; the first is killed
after a checkpoint, the unacknowledged job is delivered again (acks_late, visibility timeout shortened)
and the second continues from the checkpointed step instead of starting over."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection

from ml.models import ModelVersion, TrainingRun
from ml.training import training_run_create, training_run_start
from tests.conftest import REPO, need_service
from tests.labeling.test_kill_resume import _database_url, _wait
from tests.ml.test_training import labelled  # noqa: F401 - the fixture


def _worker(env) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            "gpu",
            "--concurrency",
            "1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killed_training_worker_resumes_from_the_checkpoint(project, labelled, celery_broker, settings):  # noqa: F811
    if connection.vendor != "postgresql":
        need_service("PostgreSQL", "the worker process needs a shared database: set DATABASE_URL")
    with celery_broker.connection_for_write() as conn:
        conn.default_channel.queue_purge("gpu")
    parent, proposals = labelled
    params = {"steps": 400, "checkpoint_every": 5, "batch_size": 2, "val_fraction": 0.34}
    run = training_run_create(parent=parent, proposal_ids=[p.pk for p in proposals], params=params)
    job = training_run_start(run=run)
    env = dict(
        os.environ,
        DATABASE_URL=_database_url(),
        CELERY_BROKER_URL=celery_broker.conf.broker_url,
        CELERY_VISIBILITY_TIMEOUT="3",
        MEDIA_ROOT=settings.MEDIA_ROOT,
        ML_DEVICE="cpu",
        OMP_NUM_THREADS="1",
    )
    first = _worker(env)
    try:
        assert _wait(lambda: TrainingRun.objects.get(pk=run.pk).step >= 10, 300), "training did not start"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        out = first.communicate(timeout=30)[0]
    time.sleep(1)
    killed_at = TrainingRun.objects.get(pk=run.pk).step
    assert 10 <= killed_at < 400, out[-2000:]
    second = _worker(env)
    try:
        done = _wait(lambda: TrainingRun.objects.get(pk=run.pk).status in {"succeeded", "failed"}, 900)
    finally:
        second.terminate()
        out = second.communicate(timeout=60)[0]
    run.refresh_from_db()
    assert done and run.status == "succeeded", (run.status, run.error, out[-2000:])
    assert run.metrics["resumed_from"] >= killed_at and run.metrics["steps"] == 400
    job.refresh_from_db()
    assert job.attempts >= 2
    assert (
        ModelVersion.objects.filter(parent=parent).count() <= 1
    )  # one new version at most, not one per attempt
