"""With jobs in-process (no broker: the embedded default, as in the web server), a job of the ``gpu`` queue
runs in a child process (``manage.py job_exec``) on the same database and media folder: a model, TorchScript
included, is never loaded in the process that dispatched the job, and the request does not wait for it.

The child needs a database it can open: PostgreSQL (CI) as it is; with SQLite (``make test``) the shared
in-memory test database is copied into a file that this process then uses too, for the test's length."""

import logging
import os
import signal

import dj_database_url
import pytest
import torch
from django.db import connection
from django.urls import reverse

from core.job_child import database_url, job_child_wait, runs_in_child
from core.models import Job
from labeling.models import RegionProposal
from ml.models import ModelVersion
from tests.conftest import sqlite_file_database
from tests.ml import test_api
from tests.ml.test_api import _upload

pytestmark = pytest.mark.django_db(transaction=True)
WAIT_S = 300
ct = test_api.ct  # a small stored CT (fixture)


@pytest.fixture
def child_db(transactional_db, settings, tmp_path):
    """Jobs of the ``gpu`` queue in a child (conftest turns that off), on a database it can open."""
    settings.EMBEDDED_GPU_JOBS_IN_CHILD = True
    with sqlite_file_database(tmp_path):
        yield


@pytest.fixture
def tripwire(monkeypatch):
    """``torch.jit.load`` of this process raises (the only stand-in here): it must not be called."""
    calls = []

    def load(*args, **kwargs):
        calls.append(args)
        raise AssertionError("torch.jit.load ran in the process that dispatched the job")

    monkeypatch.setattr(torch.jit, "load", load)
    return calls


def _child_pids(caplog) -> dict[int, int]:
    """Job id -> pid of its child process, from this process's log."""
    return {
        r.args[0]: r.args[2]
        for r in caplog.records
        if r.name == "core.job_child" and "child process" in r.msg
    }


def test_gpu_jobs_and_only_they_go_to_a_child(settings):
    import labeling.tasks
    import ml.tasks

    settings.EMBEDDED_GPU_JOBS_IN_CHILD = True
    assert runs_in_child(ml.tasks.preannotate) and runs_in_child(ml.tasks.validate_model)
    assert runs_in_child(ml.tasks.train_model) and runs_in_child(ml.tasks.score_cases)
    assert not runs_in_child(labeling.tasks.run_labels)


def test_the_child_gets_this_process_database(child_db):
    parsed = dj_database_url.parse(database_url())
    for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST"):
        assert str(parsed[key] or "") == str(connection.settings_dict.get(key) or ""), key
    assert str(parsed["PORT"] or "") == str(connection.settings_dict.get("PORT") or "")


def test_preannotation_with_torchscript_runs_in_a_child_not_in_the_web_process(
    child_db,
    tripwire,
    project,
    manager,
    api_client,
    ct,
    caplog,
):
    caplog.set_level(logging.INFO, logger="core.job_child")
    client = api_client(manager)
    # Given a TorchScript model registered over the API (its validation job: a child too)
    registered = _upload(client, project)
    assert registered.status_code == 202 and registered.json()["status"] == "validating"
    assert job_child_wait(registered.json()["job_id"], WAIT_S) == 0
    version = ModelVersion.objects.get(pk=registered.json()["id"])
    assert version.status == "ready", version.error

    # When a pre-annotation job with it is started over the API
    started = client.post(
        reverse("scan-preannotate", args=[ct.pk]), {"generator": "model:soft"}, format="json"
    )
    assert started.status_code == 202
    job_id = started.json()["job_id"]
    assert Job.objects.get(pk=job_id).status in ("pending", "running")  # the request did not wait
    assert job_child_wait(job_id, WAIT_S) == 0

    # Then it ran in another process, which loaded the model; this one never called torch.jit.load
    job = Job.objects.get(pk=job_id)
    assert job.status == "succeeded", job.message
    pid = job.result["pid"]
    assert pid != os.getpid() and pid == _child_pids(caplog)[job_id]
    assert Job.objects.get(pk=version.job_id).result["pid"] not in (None, os.getpid(), pid)
    assert tripwire == []
    # and the proposals were stored, on the database and media folder this process reads
    (proposal,) = RegionProposal.objects.filter(scan=ct, source="model")
    assert proposal.label == "soft_tissue" and proposal.model_version_id == version.pk
    assert [p["id"] for p in job.result["proposals"]] == [proposal.pk]
    listed = client.get(reverse("region-proposal-list"), {"scan": ct.pk, "source": "model"}).json()
    assert [p["id"] for p in listed["results"]] == [proposal.pk]
    assert client.get(reverse("region-proposal-mask-file", args=[proposal.pk])).status_code == 200


def test_a_child_that_dies_fails_its_job(child_db, project, manager, api_client, ct, caplog):
    caplog.set_level(logging.INFO, logger="core.job_child")
    started = api_client(manager).post(
        reverse("scan-preannotate", args=[ct.pk]), {"generator": "lungs"}, format="json"
    )
    job_id = started.json()["job_id"]
    os.kill(_child_pids(caplog)[job_id], signal.SIGKILL)
    assert job_child_wait(job_id, WAIT_S) in (None, -signal.SIGKILL)  # None: reaped already
    job = Job.objects.get(pk=job_id)
    assert job.status == "failed" and job.message == "its process stopped (exit status -9)"
