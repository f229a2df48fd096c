"""Real parallel clients against a live, threaded server: the embedded SQLite default must give the same
answers as PostgreSQL when people act at once.

- Several saves of one finding naming the same version: exactly one 201, the rest 409 naming the version
  saved, no version lost or doubled.
- Several annotators asking for their next task (or reading) at once: each gets a different one, none a
  500.
- Two uploads of the same CT series at once: one stored copy; the other job reports it as a duplicate.

Each request thread of the server opens its own database connection. With SQLite (``make test``) the
in-memory test database is copied to a file first: an in-memory database is one connection that the
server's threads would share, so nothing would run at once. With ``DATABASE_URL`` (PostgreSQL, CI) the
same tests run on the test database as it is.
"""

import threading
from collections import Counter
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.test.testcases import LiveServerThread, _StaticFilesHandler
from knox.models import AuthToken

from annotation.models import Annotation, Finding, HistoryEvent, Reading, ReviewTask, Stage
from core.models import Job, Role
from core.services import membership_set
from studies.models import Scan, ScanSource
from tests.annotation.factories import review_case
from tests.conftest import sqlite_file_database

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REPORT = "There is a 14 mm nodule in the right upper lobe. Small left pleural effusion."
TIMEOUT = 120


@pytest.fixture(autouse=True)
def file_db(transactional_db, tmp_path):
    """SQLite: this test's database is a file (copied from the migrated, empty in-memory test database),
    opened by every thread in WAL mode with the settings' busy timeout and ``BEGIN IMMEDIATE``."""
    with sqlite_file_database(tmp_path):
        yield


@pytest.fixture
def server(file_db):
    """A threaded live server (a thread per request, each with its own database connection)."""
    thread = LiveServerThread("127.0.0.1", _StaticFilesHandler, connections_override={})
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield f"http://127.0.0.1:{thread.port}"
    thread.terminate()


def test_sqlite_connections_use_wal_a_busy_timeout_and_begin_immediate(file_db):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite settings (this run is on PostgreSQL)")
    with connection.cursor() as cursor:
        values = [cursor.execute(f"PRAGMA {name}").fetchone()[0] for name in ("journal_mode", "synchronous")]
        assert values == ["wal", 1]  # 1: NORMAL
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    assert connection.transaction_mode == "IMMEDIATE"


def _token(user) -> dict[str, str]:
    return {"Authorization": f"Token {AuthToken.objects.create(user)[1]}"}


def _at_once(calls) -> list[requests.Response]:
    """Run each ``call(session)`` in its own thread, all released together; their responses in order."""
    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i, call):
        with requests.Session() as session:
            barrier.wait()
            try:
                out[i] = call(session)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                out[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert all(isinstance(r, requests.Response) for r in out), out
    return out


def _statuses(responses) -> Counter:
    return Counter(r.status_code for r in responses)


def _members(make_user, project, role, n: int, prefix: str) -> list:
    users = [make_user(f"{prefix}{i}") for i in range(n)]
    for user in users:
        membership_set(project=project, user=user, role=role)
    return users


def test_concurrent_saves_of_one_finding_make_one_version_and_409s(
    server, project, make_user, annotator, tmp_path
):
    scan = review_case(project, tmp_path, findings=REPORT)
    headers = _token(annotator)
    opened = requests.get(
        f"{server}/api/projects/{project.slug}/next-task/", params={"stage": "annotate"}, headers=headers
    )
    assert opened.status_code == 200, opened.text
    task_id = opened.json()["task"]["id"]
    finding = Finding.objects.get(task__pk=task_id)
    first = finding.current_version
    url = f"{server}/api/tasks/{task_id}/annotations/"
    x, y, z = scan.shape
    for round_ in range(3):
        # Given the finding at version `base`, when 8 saves naming it arrive at once (two tabs, retries)
        base = first + round_
        boxes = [[0, 0, 0, 2 + i % (x - 2), 2 + i % (y - 2), z] for i in range(8)]
        bodies = [{"base_version": base, "kind": "box", "box": box} for box in boxes]
        calls = [lambda s, b=b: s.post(url, json=b, headers=headers, timeout=TIMEOUT) for b in bodies]
        responses = _at_once(calls)
        # then exactly one is saved, as version base + 1; the others are 409 naming that version
        assert _statuses(responses) == {201: 1, 409: 7}, [(r.status_code, r.text[:300]) for r in responses]
        (saved,) = [r for r in responses if r.status_code == 201]
        assert saved.json()["version"] == base + 1
        for refused in (r for r in responses if r.status_code == 409):
            body = refused.json()
            assert body["field"] == "base_version" and body["yours"] == base
            assert body["current"]["version"] == base + 1
        finding.refresh_from_db()
        assert finding.current_version == base + 1
    versions = list(
        Annotation.objects.filter(finding=finding).order_by("version").values_list("version", flat=True)
    )
    assert versions == list(range(1, first + 4)), versions  # contiguous: none lost, none twice
    assert HistoryEvent.objects.filter(finding=finding, action="annotation_saved").count() == 3


def test_annotators_asking_at_once_get_different_tasks(server, project, make_user, tmp_path):
    review_case(project, tmp_path, findings=REPORT)
    # a case with 15 open findings (the report's, and more on the same scan)
    model = Finding.objects.filter(project=project).first()
    for i in range(15 - Finding.objects.filter(project=project).count()):
        extra = Finding.objects.create(
            project=project, study=model.study, scan=model.scan, report=model.report, text=f"finding {i}"
        )
        ReviewTask.objects.create(project=project, finding=extra)
    annotators = _members(make_user, project, Role.ANNOTATOR, 5, "ann")
    headers = [_token(user) for user in annotators]
    url = f"{server}/api/projects/{project.slug}/next-task/"
    taken: list[int] = []
    for _round in range(3):
        # When five annotators ask for their next task at the same moment
        responses = _at_once(
            [
                lambda s, h=h: s.get(url, params={"stage": "annotate"}, headers=h, timeout=TIMEOUT)
                for h in headers
            ]
        )
        # then each gets one, and no two the same
        assert _statuses(responses) == {200: 5}, [(r.status_code, r.text[:300]) for r in responses]
        ids = [r.json()["task"]["id"] for r in responses]
        assert len(set(ids)) == 5 and not set(ids) & set(taken), (ids, taken)
        for task_id, user in zip(ids, annotators, strict=True):
            assert ReviewTask.objects.get(pk=task_id).assignee_id == user.pk
        taken += ids
        # and, each done with theirs (rejected: no finding there), they ask again
        done = _at_once(
            [
                lambda s, h=h, t=t: s.post(
                    f"{server}/api/tasks/{t}/submit/", json={"decision": "reject"}, headers=h, timeout=TIMEOUT
                )
                for h, t in zip(headers, ids, strict=True)
            ]
        )
        assert _statuses(done) == {200: 5}, [(r.status_code, r.text[:300]) for r in done]
    assert ReviewTask.objects.filter(project=project, stage=Stage.REVIEW).count() == 15
    claims = HistoryEvent.objects.filter(project=project, action="claimed")
    assert claims.count() == 15 and len({e.task_id for e in claims}) == 15


def test_readers_asking_at_once_get_different_readings(server, project, make_user, tmp_path):
    project.readers_per_finding = 3
    project.save()
    review_case(project, tmp_path, findings=REPORT)  # two findings, three readings each
    readings = Reading.objects.filter(project=project)
    assert readings.count() == 6
    readers = _members(make_user, project, Role.ANNOTATOR, 6, "reader")
    url = f"{server}/api/projects/{project.slug}/next-reading/"
    # When six readers ask for their next reading at the same moment
    headers = [_token(user) for user in readers]
    responses = _at_once([lambda s, h=h: s.get(url, headers=h, timeout=TIMEOUT) for h in headers])
    # then each takes a different one
    assert _statuses(responses) == {200: 6}, [(r.status_code, r.text[:300]) for r in responses]
    assert len({r.json()["reading"]["id"] for r in responses}) == 6
    assert sorted(readings.values_list("reader_id", flat=True)) == sorted(u.pk for u in readers)


def test_two_uploads_of_one_series_at_once_store_one_copy(server, project, manager, shared_data, _media_root):
    series = sorted((shared_data / "ct" / "lungdx-a0002").glob("*.dcm"))
    headers = _token(manager)
    url = f"{server}/api/projects/{project.slug}/uploads/"

    def upload(session):
        files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in series]
        return session.post(url, files=files, headers=headers, timeout=TIMEOUT)

    # When the same 30-slice CT series is uploaded twice at the same moment (jobs in-process)
    responses = _at_once([upload, upload])
    assert _statuses(responses) == {202: 2}, [(r.status_code, r.text[:300]) for r in responses]
    jobs = [Job.objects.get(pk=r.json()["id"]) for r in responses]
    # then both jobs succeed: one stored the series, the other reports it as a duplicate, no error
    assert [j.status for j in jobs] == ["succeeded", "succeeded"], [
        (j.status, j.message, j.errors) for j in jobs
    ]
    scans = sorted((j.result["scans"] for j in jobs), key=lambda s: len(s["stored"]), reverse=True)
    assert [len(s["stored"]) for s in scans] == [1, 0], scans
    assert [len(s["duplicates"]) for s in scans] == [0, 1], scans
    assert [s["errors"] for s in scans] == [[], []], scans
    stored = Scan.objects.get(project=project)
    assert scans[1]["duplicates"][0]["scan_id"] == stored.pk
    assert ScanSource.objects.filter(scan=stored).count() == len(series)
    # one stored copy: the scan's files and nothing else (no second image, no raw upload left)
    files = sorted(
        p.relative_to(_media_root).as_posix()
        for p in Path(_media_root).rglob("*")
        if p.is_file() and ".scratch" not in p.parts
    )
    assert files == sorted([stored.file.name, stored.thumbnail.name, stored.meta["header_file"]]), files
