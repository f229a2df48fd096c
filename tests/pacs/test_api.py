"""The PACS API and page, as a manager uses them against a real Orthanc: a source registered (checked on
save, credentials encrypted at rest and never returned or logged), a search, an import job followed to its
end; everyone else gets 404. And ``manage.py pacs_import``."""

from __future__ import annotations

import json
import logging
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from pacs.crypto import credentials_decrypt
from pacs.models import PacsImport, PacsSource
from studies.models import Scan
from tests.pacs.conftest import ACCESSION
from tests.pacs.orthanc import PASSWORD, USER

pytestmark = pytest.mark.django_db


def test_a_manager_registers_searches_and_imports_through_the_api(
    project,
    manager,
    annotator,
    outsider,
    api_client,
    orthanc,
    ct_in_orthanc,
    caplog,
    django_capture_on_commit_callbacks,
):
    caplog.set_level(logging.DEBUG)
    client = api_client(manager)
    base = "/api/projects/alpha/pacs"
    body = {
        "name": "hospital",
        "base_url": orthanc.dicomweb + "/",
        "auth": "basic",
        "username": USER,
        "password": "wrong",
    }
    refused = client.post(f"{base}/sources/", body, format="json")
    assert refused.status_code == 400 and "refused the credentials" in refused.json()["detail"]
    assert not PacsSource.objects.exists()

    body["password"] = PASSWORD
    made = client.post(f"{base}/sources/", body, format="json")
    assert made.status_code == 201, made.json()
    out = made.json()
    assert out["has_credentials"] is True and out["base_url"] == orthanc.dicomweb
    assert "password" not in out and "username" not in out and "credentials" not in out
    stored = PacsSource.objects.get()
    assert PASSWORD not in stored.credentials and USER not in stored.credentials  # encrypted at rest
    assert credentials_decrypt(stored.credentials) == {"username": USER, "password": PASSWORD}
    listed = client.get(f"{base}/sources/").json()["results"]
    assert PASSWORD not in json.dumps(listed)

    # a change of name alone keeps the credentials and needs no check
    renamed = client.patch(f"{base}/sources/{stored.pk}/", {"name": "pacs-1"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "pacs-1"
    assert credentials_decrypt(PacsSource.objects.get().credentials)["password"] == PASSWORD
    bad_url = client.patch(f"{base}/sources/{stored.pk}/", {"base_url": "ftp://x/"}, format="json")
    assert bad_url.status_code == 400 and bad_url.json()["field"] == "base_url"

    found = client.get(f"{base}/sources/{stored.pk}/studies/", {"accession": ACCESSION, "modality": "ct"})
    assert found.status_code == 200 and [s["study_uid"] for s in found.json()] == [ct_in_orthanc]
    assert client.get(f"{base}/sources/{stored.pk}/studies/", {"study_date": "2007-04"}).status_code == 400

    with django_capture_on_commit_callbacks(execute=True):
        started = client.post(
            f"{base}/imports/",
            {"source": stored.pk, "study_uids": [ct_in_orthanc], "modality": "CT"},
            format="json",
        )
    assert started.status_code == 202, started.json()
    detail = client.get(f"{base}/imports/{started.json()['id']}/").json()
    assert detail["status"] == "succeeded" and detail["progress"] == 1.0
    assert detail["counts"]["series_stored"] == 1 and detail["outcome"][ct_in_orthanc]["status"] == "done"
    assert Scan.objects.filter(project=project).count() == 1
    # the job (members read it) shows no original UID
    job = client.get(f"/api/jobs/{detail['job']}/").json()
    assert ct_in_orthanc not in json.dumps(job)
    assert PASSWORD not in caplog.text  # never logged

    # nobody but the project's managers sees any of it
    for user in (annotator, outsider):
        other = api_client(user)
        assert other.get(f"{base}/sources/").status_code == 404
        assert other.get(f"{base}/sources/{stored.pk}/studies/", {"accession": ACCESSION}).status_code == 404
        assert other.get(f"{base}/imports/{detail['id']}/").status_code == 404


def test_the_page_is_the_managers_and_loads_its_script(project, manager, annotator):
    browser = Client()
    browser.force_login(manager)
    page = browser.get("/pacs/alpha/")
    assert page.status_code == 200
    assert b"pacs/pacs.js" in page.content and b'data-slug="alpha"' in page.content
    browser.force_login(annotator)
    assert browser.get("/pacs/alpha/").status_code == 404


def test_manage_py_pacs_import_by_accession_and_modality(project, orthanc, ct_in_orthanc):
    from pacs.services import SourceSpec, source_create

    spec = SourceSpec(
        name="hospital", base_url=orthanc.dicomweb, auth="basic", username=USER, password=PASSWORD
    )
    source_create(project=project, spec=spec, user=None)
    out = StringIO()
    call_command(
        "pacs_import", "--project", "alpha", "--source", "hospital", "--accession", ACCESSION,
        "--modality", "CT", "--json", stdout=out, stderr=StringIO(),
    )  # fmt: skip
    summary = json.loads(out.getvalue())
    assert summary["status"] == "succeeded" and summary["counts"]["series_stored"] == 1
    assert PacsImport.objects.get().study_uids == [ct_in_orthanc]
    again = StringIO()
    call_command(
        "pacs_import", "--project", "alpha", "--source", "hospital", "--accession", ACCESSION, stdout=again
    )
    assert "series_duplicates: 1" in again.getvalue() and Scan.objects.count() == 1
