"""Fault injection between the platform and a real Orthanc (tests/pacs/faults.py): the PACS down, slow,
answering 5xx or 4xx, a study deleted in the middle of an import, a response dropped in the middle of its
body. Each time the job names what failed and what was stored, and running it again completes the import
without duplicates."""

from __future__ import annotations

import pytest

from core.errors import ApplicationError
from pacs.client import PacsError
from pacs.models import PacsSource
from pacs.services import SourceSpec, source_create
from studies.models import Scan, ScanSource
from tests.pacs.conftest import load_ct
from tests.pacs.faults import TOKEN, Rule
from tests.pacs.test_import import run_import

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.PACS_RETRY_WAIT_MS = 10
    settings.PACS_REQUEST_TRIES = 3
    settings.PACS_TIMEOUT_SECONDS = 5


def bearer_source(project, proxy, token: str = TOKEN) -> PacsSource:
    spec = SourceSpec(name="proxied", base_url=proxy.url, auth="bearer", token=token)
    return source_create(project=project, spec=spec, user=None)


def wado_series(study_uid: str = r"[0-9.]+") -> str:
    """The WADO-RS retrieval of a series (not its QIDO-RS listing, which has a query or /instances)."""
    return rf"/studies/{study_uid}/series/[0-9.]+$"


def test_a_wrong_token_or_a_pacs_that_is_down_is_refused_on_save_and_nothing_is_stored(
    project, orthanc, fault_proxy
):
    with pytest.raises(PacsError) as refused:
        bearer_source(project, fault_proxy, token="wrong")
    assert "refused the credentials (HTTP 401" in refused.value.message and refused.value.status == 400
    down = SourceSpec(name="down", base_url="http://127.0.0.1:9/dicom-web", auth="none")
    with pytest.raises(PacsError) as unreachable:
        source_create(project=project, spec=down, user=None)
    assert "cannot be reached" in unreachable.value.message and unreachable.value.status == 503
    with pytest.raises(ApplicationError) as scheme:
        source_create(project=project, spec=SourceSpec(name="x", base_url="file:///etc/passwd"), user=None)
    assert scheme.value.field == "base_url"
    assert not PacsSource.objects.exists()


def test_the_pacs_going_down_fails_the_job_with_the_reason_and_a_rerun_completes(
    project, orthanc, fault_proxy, shared_data
):
    study = load_ct(orthanc)[0]
    source = bearer_source(project, fault_proxy)
    fault_proxy.stop()
    job, pacs_import = run_import(source, [study])
    assert job.status == "failed"
    assert "cannot be reached" in job.message and not Scan.objects.exists()
    fault_proxy.start()  # back, on a new port
    source.base_url = fault_proxy.url
    source.save(update_fields=["base_url"])
    job, _ = run_import(source, [study])
    assert job.status == "succeeded" and job.counts["series_stored"] == 1


def test_a_slow_pacs_is_waited_for_once_then_the_series_fails_named(project, orthanc, fault_proxy, settings):
    settings.PACS_TIMEOUT_SECONDS = 1
    study = load_ct(orthanc)[0]
    source = bearer_source(project, fault_proxy)
    fault_proxy.add(Rule(wado_series(), "slow", delay=2.5, times=1))  # one slow answer: tried again
    job, _ = run_import(source, [study])
    assert job.status == "succeeded" and job.counts["series_stored"] == 1, job.errors

    Scan.objects.all().delete()
    fault_proxy.add(Rule(wado_series(), "slow", delay=2.5, times=None))  # always slow
    job, pacs_import = run_import(source, [study])
    assert job.status == "succeeded"
    assert job.counts["series_failed"] == 1 and job.counts["series_stored"] == 0
    assert "did not answer within 1 s" in job.errors[0]["reason"]
    assert "(after 3 tries)" in job.errors[0]["reason"]
    assert pacs_import.outcome[study]["status"] == "failed"
    assert not Scan.objects.exists()


def test_5xx_is_retried_and_a_lasting_5xx_or_a_4xx_names_the_series(project, orthanc, fault_proxy):
    study = load_ct(orthanc)[0]
    source = bearer_source(project, fault_proxy)
    fault_proxy.add(Rule(wado_series(), "status", status=503, times=2))  # retried by the client
    job, _ = run_import(source, [study])
    assert job.status == "succeeded" and job.counts["series_stored"] == 1, job.errors

    Scan.objects.all().delete()
    fault_proxy.clear()
    fault_proxy.add(Rule(wado_series(), "status", status=500, times=None))
    job, _ = run_import(source, [study])
    assert job.counts["series_failed"] == 1
    assert "answered HTTP 500" in job.errors[0]["reason"] and job.errors[0]["file"].startswith("series 2.25.")

    fault_proxy.clear()
    fault_proxy.add(Rule(wado_series(), "status", status=503, times=None))  # the client's retries spent
    job, _ = run_import(source, [study])
    assert job.errors[0]["reason"].endswith("answered HTTP 503 Service Unavailable (after 3 tries)")

    fault_proxy.clear()
    fault_proxy.add(Rule(wado_series(), "status", status=400, times=None))
    job, _ = run_import(source, [study])
    assert "refused the request (HTTP 400" in job.errors[0]["reason"]
    assert "tries" not in job.errors[0]["reason"]  # a 4xx is not tried again
    assert not Scan.objects.exists()


def test_a_study_deleted_mid_import_is_named_the_others_stored_and_a_rerun_completes(
    project, orthanc, fault_proxy, shared_data
):
    first, second = load_ct(orthanc, copies=1)
    source = bearer_source(project, fault_proxy)
    rest = orthanc.rest()

    def delete_second() -> None:
        found = rest.post(f"{orthanc.url}/tools/lookup", data=second, timeout=30).json()
        rest.delete(f"{orthanc.url}/studies/{found[0]['ID']}", timeout=30)

    # the retrieval of the first study's series deletes the second study on the PACS
    fault_proxy.add(Rule(wado_series(first), "call", call=delete_second, times=1))
    from django.test import override_settings

    with override_settings(PACS_RETRIEVE_WORKERS=1, PACS_BATCH_INSTANCES=30):  # one series after the other
        job, pacs_import = run_import(source, [first, second])
    assert job.status == "succeeded"
    assert job.counts["series_stored"] == 1 and job.counts["series_failed"] == 1
    assert "not found on the source (HTTP 404; deleted since it was found?)" in job.errors[0]["reason"]
    assert pacs_import.outcome[first]["status"] == "done"
    assert pacs_import.outcome[second]["status"] == "failed"
    assert Scan.objects.count() == 1 and ScanSource.objects.count() == 30

    load_ct(orthanc, copies=1)  # the PACS has it again
    job, pacs_import = run_import(source, [first, second])
    assert job.counts == {
        "series_stored": 1,
        "series_duplicates": 1,
        "series_failed": 0,
        "instances_retrieved": 30,
        "bytes_retrieved": job.counts["bytes_retrieved"],
        "reports_linked": 0,
    }
    assert Scan.objects.count() == 2 and ScanSource.objects.count() == 60


def test_a_response_dropped_mid_body_stores_nothing_of_that_series_and_a_rerun_completes(
    project, orthanc, fault_proxy, shared_data
):
    first, second = load_ct(orthanc, copies=1)
    source = bearer_source(project, fault_proxy)
    fault_proxy.add(Rule(wado_series(second), "drop", times=None))
    job, pacs_import = run_import(source, [first, second])
    assert job.status == "succeeded"
    assert job.counts["series_stored"] == 1 and job.counts["series_failed"] == 1
    reason = job.errors[0]["reason"]
    assert "connection broke off" in reason or "malformed" in reason or "partial" in reason, reason
    assert pacs_import.outcome[second]["status"] == "failed"
    assert ScanSource.objects.count() == 30  # none of the dropped series' instances

    fault_proxy.clear()
    job, _ = run_import(source, [first, second])
    assert job.counts["series_stored"] == 1 and job.counts["series_duplicates"] == 1
    assert Scan.objects.count() == 2 and ScanSource.objects.count() == 60


def test_a_study_the_pacs_cannot_list_is_named_and_the_others_are_stored(
    project, orthanc, fault_proxy, shared_data
):
    first, second = load_ct(orthanc, copies=1)
    source = bearer_source(project, fault_proxy)
    # QIDO-RS of the second study's series answers 502 every time (retried by the client, then given up)
    listing = fault_proxy.add(Rule(rf"/studies/{second}/series\?", "status", status=502, times=None))
    job, pacs_import = run_import(source, [first, second])
    assert job.status == "succeeded" and listing.fired == 3  # PACS_REQUEST_TRIES
    assert job.counts["series_stored"] == 1
    assert job.errors == [
        {
            "file": "study 2 of 2",
            "reason": "study 2 of 2: the source answered HTTP 502 Bad Gateway (after 3 tries)",
        }
    ]
    assert (
        pacs_import.outcome[second]["status"] == "failed" and pacs_import.outcome[first]["status"] == "done"
    )
