"""Raw uploads (not de-identified yet) live no longer than their job: removed when it succeeds or fails, and
when the process running it dies (its lease lapses and the reaper fails it). The last test kills a real
ingest of a real CT series (``../shared/data``) with SIGKILL and looks at every file left on disk."""

import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from pydicom.data import get_testdata_file

from core.jobs import REAPED, job_create, job_run, jobs_reap
from core.models import Job, JobStatus
from core.uploads import job_scratch_dir, job_scratch_root, job_uploads_prefix
from tests.conftest import REPO


def _upload(client, slug, **fields):
    return client.post(reverse("upload-create", args=[slug]), fields, format="multipart")


def _raw_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _uploads_left(settings, project) -> list[Path]:
    return _raw_files(Path(settings.MEDIA_ROOT) / "projects" / project.slug / "uploads")


@pytest.mark.django_db(transaction=True)
def test_raw_uploads_are_removed_when_the_job_succeeds(project, manager, api_client, settings):
    with open(get_testdata_file("CT_small.dcm"), "rb") as fh:
        response = _upload(api_client(manager), project.slug, files=[fh])
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == "succeeded" and job.counts["scans_stored"] == 1
    assert _uploads_left(settings, project) == [] and _raw_files(job_scratch_root()) == []


@pytest.mark.django_db(transaction=True)
def test_raw_uploads_are_removed_when_the_job_fails(project, manager, api_client, settings):
    not_a_zip = io.BytesIO(b"these are not gaze recordings")
    not_a_zip.name = "gaze.zip"
    with open(get_testdata_file("CT_small.dcm"), "rb") as fh:
        response = _upload(api_client(manager), project.slug, files=[fh], gaze=not_a_zip)
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == "failed" and "gaze.zip" in job.message
    assert _uploads_left(settings, project) == [] and _raw_files(job_scratch_root()) == []


@pytest.mark.django_db
def test_the_reaper_fails_jobs_whose_lease_lapsed_and_removes_their_raw_uploads(project, settings):
    now = timezone.now()
    dead, alive, waiting = (job_create(project=project, kind="ingest_upload") for _ in range(3))
    Job.objects.filter(pk=dead.pk).update(
        status=JobStatus.RUNNING, started_at=now - timedelta(hours=1), lease_until=now - timedelta(seconds=1)
    )
    Job.objects.filter(pk=alive.pk).update(
        status=JobStatus.RUNNING, started_at=now - timedelta(hours=1), lease_until=now + timedelta(minutes=4)
    )
    for job in (dead, alive, waiting):
        default_storage.save(f"{job_uploads_prefix(job)}/00000_ct.dcm", ContentFile(b"DICM raw"))
        (job_scratch_dir(job.pk, create=True) / "files").mkdir()
        (job_scratch_dir(job.pk) / "files" / "ct.dcm").write_bytes(b"DICM raw")

    out = io.StringIO()
    call_command("jobs_reap", stdout=out)

    assert f"job {dead.pk}: {REAPED}" in out.getvalue() and "1 job(s) reaped" in out.getvalue()
    dead.refresh_from_db()
    assert (dead.status, dead.message, dead.lease_until) == ("failed", REAPED, None)
    assert not job_scratch_dir(dead.pk).exists()
    assert not default_storage.exists(f"{job_uploads_prefix(dead)}/00000_ct.dcm")
    for job in (alive, waiting):  # a live lease and a queued job keep their files
        job.refresh_from_db()
        assert job.status in ("running", "pending")
        assert default_storage.exists(f"{job_uploads_prefix(job)}/00000_ct.dcm")
        assert (job_scratch_dir(job.pk) / "files" / "ct.dcm").exists()
    assert jobs_reap() == []  # nothing twice


@pytest.mark.django_db
def test_the_sweep_removes_raw_uploads_that_ended_jobs_left_behind(project):
    job = job_create(project=project, kind="ingest_upload")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    default_storage.save(f"{job_uploads_prefix(job)}/00000_ct.dcm", ContentFile(b"DICM raw"))
    job_scratch_dir(job.pk, create=True)
    jobs_reap()
    assert not default_storage.exists(f"{job_uploads_prefix(job)}/00000_ct.dcm")
    assert not job_scratch_dir(job.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_long_step_without_progress_keeps_its_lease(project, settings):
    settings.JOB_LEASE_SECONDS = 1
    job = job_create(project=project, kind="test")
    seen = {}

    def body(j):
        time.sleep(2.5)  # no progress reported: the lease thread renews it
        seen["reaped"] = jobs_reap(sweep=False)
        seen["lease"] = Job.objects.get(pk=j.pk).lease_until
        return {}, {}, []

    job_run(job_id=job.pk, body=body)
    job.refresh_from_db()
    assert seen["reaped"] == [] and job.status == "succeeded"
    assert seen["lease"] > job.started_at + timedelta(seconds=2)


# A worker: an empty database, a project, an upload of a real CT series whose ingest job runs in this
# process (no broker: in-process, as the embedded default runs jobs).
_WORKER = """
import sys
from pathlib import Path

import django

django.setup()
from django.core.files import File
from django.core.management import call_command

call_command("migrate", verbosity=0)
from core.models import Role
from core.services import membership_set, project_create, user_create
from studies.services.uploads import UploadSpec, upload_create

project = project_create(slug="kill", name="Kill")
user = user_create(username="manager", password="pw-" + "x" * 12)
membership_set(project=project, user=user, role=Role.MANAGER)
files = [File(open(p, "rb"), name=p.name) for p in sorted(Path(sys.argv[1]).glob("*.dcm"))]
upload_create(project=project, spec=UploadSpec(files=files), user=user)
print("ingest finished: the test did not kill it in time", flush=True)
"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _job(db: Path) -> tuple | None:
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return conn.execute("SELECT id, status, message, lease_until FROM core_job").fetchone()
    except sqlite3.OperationalError:  # not migrated yet, or busy
        return None


@pytest.mark.slow
def test_a_worker_killed_mid_ingest_is_reaped_and_no_raw_file_remains(shared_data, tmp_path):
    series = shared_data / "ct" / "lungdx-a0002"
    raw = {_sha256(p) for p in series.glob("*.dcm")}
    assert len(raw) == 30
    db = tmp_path / "db.sqlite3"
    (tmp_path / "tmp").mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": f"sqlite:///{db}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "TMPDIR": str(tmp_path / "tmp"),  # any temporary file the worker makes is looked at too
        "JOB_LEASE_SECONDS": "6",
        "INGEST_WORKERS": "1",
        "CELERY_BROKER_URL": "",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(series)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lock = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        # Given a worker ingesting the upload: once its job runs, this test holds the database's write
        # lock (SQLite has one writer), so the worker stays mid-ingest at its next write
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and worker.poll() is None:
            row = _job(db)
            if row is not None and row[1] == "running":
                lock.execute("BEGIN IMMEDIATE")
                break
            time.sleep(0.002)
        else:
            pytest.fail(f"the job never ran: {worker.communicate(timeout=30)[0][-3000:]}")
        scratch = tmp_path / "media" / ".scratch" / "jobs" / f"job-{row[0]}"
        while time.monotonic() < deadline and len(list(scratch.glob("files/*.dcm"))) < 30:
            time.sleep(0.01)  # the worker copies the raw files to its disk before reading them
        left = {_sha256(p) for p in _raw_files(tmp_path) if p != db}
        assert raw <= left, "the raw files are stored and fetched while the job runs"

        # When it is killed mid-ingest
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
    job_id, status, _, lease = _job(db)
    assert status == "running"

    def reap() -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", "jobs_reap"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # Then the reaper leaves it while its lease holds, and fails it once the lease lapsed
    lease_until = datetime.fromisoformat(lease).replace(tzinfo=UTC)
    if lease_until > datetime.now(UTC) + timedelta(seconds=3):  # time for the reaper to start
        assert "0 job(s) reaped" in reap() and _job(db)[1] == "running"
    time.sleep(max(0.0, (lease_until - datetime.now(UTC)).total_seconds()) + 0.2)
    assert f"job {job_id}: {REAPED}" in reap()
    assert _job(db)[1:3] == ("failed", REAPED)
    # and no raw file remains anywhere under the worker's folders (storage, scratch, temp)
    left = {p: _sha256(p) for p in _raw_files(tmp_path) if p != db}
    assert not raw & set(left.values()), [str(p) for p, h in left.items() if h in raw]
    assert not list((tmp_path / "media" / "projects" / "kill" / "uploads").rglob("*.dcm"))
