"""One application error mapped once: users read messages naming the field, never a traceback, a server
path or a broker's password; bad query parameters and bodies are 400s naming the field, never 500s."""

import io
import logging

import numpy as np
import pytest
from django.http import HttpResponse
from django.urls import path, reverse
from PIL import Image
from rest_framework.views import APIView

from annotation.models import Stage
from annotation.services import task_claim
from core.errors import ApplicationError, Conflict, public_message
from core.jobs import job_create, job_run
from core.models import Job, Role
from core.services import membership_set
from tests.annotation.factories import radiograph_case, review_case

pytestmark = pytest.mark.django_db


class _Broken(APIView):
    def get(self, request):
        raise RuntimeError("cannot open /srv/groundlab/var/media/projects/alpha/secret.nii")


class _Refused(APIView):
    def get(self, request):
        raise Conflict("someone saved version 3 since", field="base_version", extra={"current": 3})


def _page(request):
    return HttpResponse("ok")


urlpatterns = [path("broken/", _Broken.as_view()), path("refused/", _Refused.as_view()), path("", _page)]


@pytest.mark.urls(__name__)
def test_an_unhandled_error_is_a_500_without_detail_and_is_logged(manager, api_client, caplog):
    with caplog.at_level(logging.ERROR, logger="groundlab.errors"):
        response = api_client(manager).get("/broken/")
    assert response.status_code == 500
    body = response.json()
    assert "incident" in body["detail"] and "/srv" not in response.content.decode()
    assert "Traceback" not in response.content.decode() and "RuntimeError" not in response.content.decode()
    assert any("/srv/groundlab" in r.exc_text or "" for r in caplog.records if r.exc_text)


@pytest.mark.urls(__name__)
def test_an_application_error_carries_its_status_field_and_extra(manager, api_client):
    response = api_client(manager).get("/refused/")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "someone saved version 3 since",
        "field": "base_version",
        "base_version": "someone saved version 3 since",
        "current": 3,
    }


def test_a_failed_job_stores_a_message_without_traceback_or_server_path(project, manager, api_client):
    job = job_create(project=project, kind="test")

    def body(j):
        raise FileNotFoundError("[Errno 2] No such file or directory: '/srv/groundlab/var/media/x/y.nii'")

    with pytest.raises(FileNotFoundError):
        job_run(job_id=job.pk, body=body)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.message == "FileNotFoundError: [Errno 2] No such file or directory: '<path>'"
    assert job.errors == []
    # a row stored before tracebacks went to the log only: its traceback is not served either
    legacy = job_create(project=project, kind="test")
    Job.objects.filter(pk=legacy.pk).update(
        errors=[{"traceback": 'File "/srv/app/core/jobs.py", line 3'}, {"file": "a.dcm", "reason": "bad"}]
    )
    served = api_client(manager).get(reverse("job-detail", args=[legacy.pk]))
    assert served.json()["errors"] == [{"file": "a.dcm", "reason": "bad"}]
    assert "/srv/app" not in served.content.decode()


def test_public_message_keeps_application_messages_and_cuts_paths():
    assert public_message(ApplicationError("not a NIfTI", field="mask")) == "mask: not a NIfTI"
    assert public_message(OSError("C:\\data\\x.nii missing")) == "OSError: <path> missing"
    assert public_message(ValueError("3/4 done")) == "ValueError: 3/4 done"


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_is_down_is_a_503_without_its_address_or_password(project, manager, api_client):
    from config.celery import app
    from tests.studies.test_worker import celery_pools_reset

    old = (app.conf.broker_url, app.conf.task_always_eager)
    app.conf.broker_url, app.conf.task_always_eager = "redis://:s3cret-broker-pw@127.0.0.1:1/0", False
    celery_pools_reset(app)
    try:
        response = api_client(manager).post(
            reverse("label-runs", args=[project.slug]), {"labeler": "rules"}, format="json"
        )
    finally:
        app.conf.broker_url, app.conf.task_always_eager = old
        celery_pools_reset(app)
    assert response.status_code == 503
    text = response.content.decode()
    assert "cannot be reached" in response.json()["detail"]
    assert "s3cret" not in text and "127.0.0.1" not in text and "redis://" not in text


@pytest.fixture
def ct_task(project, annotator, tmp_path):
    scan = review_case(project, tmp_path, findings="There is a 14 mm nodule in the right upper lobe.")
    task = task_claim(task_id=scan.findings.first().task.pk, user=annotator, stages=(Stage.ANNOTATE,))
    return task


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "points", "points": [[None, 1, 2]]}, "points"),
        ({"kind": "points", "points": [["a", 1, 2]]}, "points"),
        ({"kind": "points", "points": [[1, 2]]}, "points"),
        ({"kind": "points", "points": 7}, "points"),
        ({"kind": "box", "box": [0, 0, 0, "x", 4, 2]}, "box"),
        ({"kind": "box", "box": [0, 0, 0, None, 4, 2]}, "box"),
        ({"kind": "box", "box": [0, 0, 0, "1e999", 4, 2]}, "box"),
    ],
)
def test_bad_geometry_is_a_400_naming_the_field(ct_task, annotator, api_client, body, field):
    response = api_client(annotator).post(
        reverse("task-annotations", args=[ct_task.pk]),
        {"base_version": ct_task.finding.current_version, **body},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_a_corrupt_png_mask_is_a_400_naming_the_field(project, annotator, api_client, tmp_path):
    scan = radiograph_case(project, tmp_path)
    task = task_claim(task_id=scan.findings.first().task.pk, user=annotator, stages=(Stage.ANNOTATE,))
    good = io.BytesIO()
    Image.fromarray(np.zeros((160, 200), np.uint8)).save(good, format="PNG")
    corrupt = good.getvalue()[:40] + b"\x00" * 30  # a PNG signature and header, then garbage
    upload = io.BytesIO(corrupt)
    upload.name = "mask.png"
    response = api_client(annotator).post(
        reverse("task-annotations", args=[task.pk]),
        {"base_version": task.finding.current_version, "kind": "mask", "mask": upload},
        format="multipart",
    )
    assert response.status_code == 400, response.content
    assert "mask" in response.json()


@pytest.mark.parametrize(
    ("route", "args", "query", "field"),
    [
        ("history-list", [], {"finding": "abc"}, "finding"),
        ("finding-list", [], {"scan": "abc"}, "scan"),
        ("scan-list", [], {"study": "x"}, "study"),
        ("proposal-list", [], {"run": "1;drop"}, "run"),
        ("active-learning", ["alpha"], {"seed": "abc", "strategy": "random"}, "seed"),
        ("gaze-heatmap-list", [], {"run": "abc"}, "run"),
    ],
)
def test_bad_query_parameters_are_400s_naming_them(project, manager, api_client, route, args, query, field):
    response = api_client(manager).get(reverse(route, args=args), query)
    assert response.status_code == 400, (route, response.status_code, response.content[:200])
    assert field in response.json()


def test_role_refusals_are_403_with_a_message(project, make_user, api_client):
    researcher = make_user("res")
    membership_set(project=project, user=researcher, role=Role.RESEARCHER)
    response = api_client(researcher).post(reverse("findings-from-proposals", args=[project.slug]))
    assert response.status_code == 403 and "managers" in response.json()["detail"]
