"""Jobs through a real broker: a separate Celery worker process takes an ingest job from Redis; a broker
that is configured but down is an error the user sees (nothing stored)."""

import os
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.urls import reverse
from pydicom.data import get_testdata_file

from core.models import Job
from studies.models import Scan
from tests.conftest import REPO, celery_pools_reset, need_service


def _database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_separate_worker_process_takes_ingest_job_from_redis(
    project, manager, api_client, celery_broker, settings
):
    if connection.vendor != "postgresql":
        need_service("PostgreSQL", "the worker process needs a shared database: set DATABASE_URL")
    with open(get_testdata_file("CT_small.dcm"), "rb") as fh:
        response = api_client(manager).post(
            reverse("upload-create", args=[project.slug]), {"files": [fh]}, format="multipart"
        )
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    assert Job.objects.get(pk=job_id).status == "pending"  # queued, not run in-process

    env = dict(
        os.environ,
        DATABASE_URL=_database_url(),
        CELERY_BROKER_URL=celery_broker.conf.broker_url,
        MEDIA_ROOT=settings.MEDIA_ROOT,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default", "--concurrency", "1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        job = Job.objects.get(pk=job_id)
        while time.monotonic() < deadline and job.status in {"pending", "running"}:
            time.sleep(0.5)
            job.refresh_from_db()
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert job.status == "succeeded", f"job {job.status}: {job.message}\n{output[-3000:]}"
    assert job.counts["scans_stored"] == 1 and job.progress == 1.0
    scan = Scan.objects.get(project=project)
    assert job.result["scans"]["stored"][0]["id"] == scan.pk
    assert scan.modality == "CT" and scan.shape == [128, 128, 1]
    assert os.path.exists(os.path.join(settings.MEDIA_ROOT, scan.file.name))
    assert not any("uploads" in p for p, _, files in os.walk(settings.MEDIA_ROOT) if files)


@pytest.mark.django_db(transaction=True)
def test_broker_down_is_an_error_and_nothing_is_stored(project, manager, api_client, settings):
    from config.celery import app

    old = (app.conf.broker_url, app.conf.task_always_eager)
    app.conf.broker_url, app.conf.task_always_eager = "redis://127.0.0.1:1/0", False
    celery_pools_reset(app)
    try:
        with open(get_testdata_file("CT_small.dcm"), "rb") as fh:
            response = api_client(manager).post(
                reverse("upload-create", args=[project.slug]), {"files": [fh]}, format="multipart"
            )
    finally:
        app.conf.broker_url, app.conf.task_always_eager = old
        celery_pools_reset(app)
    assert response.status_code == 503
    assert "cannot be reached" in response.json()["detail"]
    assert Job.objects.count() == 0
    assert not any(files for _, _, files in os.walk(settings.MEDIA_ROOT))
