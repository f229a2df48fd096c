"""A label run whose worker process is killed (SIGKILL) mid-run resumes without duplicate proposals.

The worker is a real Celery worker taking the run's job from Redis; it is killed while labeling, a new
worker gets the unacknowledged job again (acks_late, visibility timeout shortened for the test) and
finishes the run from where it stopped."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.db.models import Count

from core.jobs import job_create, job_dispatch
from labeling.models import FindingProposal, LabelRun, RunReport
from labeling.services import label_run_get_or_create
from studies.models import Report
from tests.conftest import REPO, need_service

SENTENCES = [
    "The heart is enlarged. There is a small right pleural effusion. No pneumothorax.",
    "Lungs are clear. No focal consolidation, effusion or pneumothorax.",
    "Possible left lower lobe atelectasis. Cannot exclude pneumonia.",
    "Stable 1.2 cm nodule in the right upper lobe. Sternotomy wires. Old left rib fracture.",
]
N = int(os.environ.get("KILL_TEST_REPORTS", "3000"))  # 10000 for the full-size check


def _database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _worker(env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default", "--concurrency", "1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killed_worker_resumes_run_without_duplicates(project, celery_broker, settings):
    if connection.vendor != "postgresql":
        need_service("PostgreSQL", "the worker process needs a shared database: set DATABASE_URL")
    Report.objects.bulk_create(
        Report(
            project=project, external_id=f"r{i}", source="csv", raw_text=t, findings=t, checksum=f"{i:064d}"
        )
        for i, t in ((i, SENTENCES[i % len(SENTENCES)]) for i in range(N))
    )
    run = label_run_get_or_create(project=project, labeler="rules")
    job = job_create(project=project, kind="label_run", params={"run_id": run.pk, "report_ids": None})
    from labeling.tasks import run_labels

    job_dispatch(job=job, task=run_labels)
    env = dict(
        os.environ,
        DATABASE_URL=_database_url(),
        CELERY_BROKER_URL=celery_broker.conf.broker_url,
        CELERY_VISIBILITY_TIMEOUT="3",
        MEDIA_ROOT=settings.MEDIA_ROOT,
    )
    first = _worker(env)
    try:
        started = _wait(lambda: RunReport.objects.filter(run=run).count() >= N // 5, 300)
        assert started, "the first worker did not start labeling"
    finally:
        os.kill(first.pid, signal.SIGKILL)  # no warm shutdown: the job stays unacknowledged
        out = first.communicate(timeout=30)[0]
    # the prefork child may outlive its parent for a moment; make sure nothing labels any more
    time.sleep(1)
    partial = RunReport.objects.filter(run=run).count()
    assert 0 < partial < N, out[-2000:]

    second = _worker(env)
    try:
        finished = _wait(lambda: RunReport.objects.filter(run=run, ok=True).count() == N, 600)
        _wait(lambda: LabelRun.objects.get(pk=run.pk).status == "succeeded", 30)
    finally:
        second.terminate()
        out = second.communicate(timeout=30)[0]
    assert finished, (
        f"resumed run did not finish: {RunReport.objects.filter(run=run).count()} of {N}\n{out[-2000:]}"
    )
    run.refresh_from_db()
    assert (run.status, run.done, run.failed) == ("succeeded", N, 0)
    duplicates = (
        FindingProposal.objects.filter(run=run)
        .values("report_id", "code", "section", "start", "end", "assertion")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not duplicates.exists()
    per_report = {
        i: FindingProposal.objects.filter(run=run, report__external_id=f"r{i}").count() for i in range(4)
    }
    for i in range(4, N, 997):  # same text, same proposals, whichever worker labeled it
        assert (
            FindingProposal.objects.filter(run=run, report__external_id=f"r{i}").count() == per_report[i % 4]
        )
    job.refresh_from_db()
    assert job.attempts >= 2
