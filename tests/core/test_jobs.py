"""Job records: progress, success and failure are stored on the job row."""

import pytest

from core.jobs import job_create, job_progress, job_run
from core.models import Job

pytestmark = pytest.mark.django_db


def test_job_run_records_success_and_counts(project):
    job = job_create(project=project, kind="test")

    def body(j):
        job_progress(job_id=j.pk, progress=0.5, message="half")
        assert Job.objects.get(pk=j.pk).progress == 0.5
        return {"ok": True}, {"stored": 2}, [{"file": "x", "reason": "bad"}]

    job_run(job_id=job.pk, body=body)
    job.refresh_from_db()
    assert (job.status, job.progress, job.counts, job.result, job.attempts) == (
        "succeeded", 1.0, {"stored": 2}, {"ok": True}, 1,
    )  # fmt: skip
    assert job.errors == [{"file": "x", "reason": "bad"}] and job.finished_at is not None


def test_job_run_records_failure(project):
    job = job_create(project=project, kind="test")

    def body(j):
        raise ValueError("broken input")

    with pytest.raises(ValueError):
        job_run(job_id=job.pk, body=body)
    job.refresh_from_db()
    assert job.status == "failed" and job.message == "ValueError: broken input"
    assert job.errors == []  # the traceback is in the log only (tests/core/test_errors.py)


def test_progress_is_clamped(project):
    job = job_create(project=project, kind="test")
    job_progress(job_id=job.pk, progress=3.0)
    job.refresh_from_db()
    assert job.progress == 1.0
