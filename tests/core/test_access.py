"""Every read goes through a membership check: a user of project B gets 404 on project A's objects."""

import io

import pytest
from django.urls import reverse
from knox.models import AuthToken
from rest_framework.test import APIClient

from core.models import Role
from core.services import membership_set
from studies.models import PatientIdentity
from tests.factories import make_scan_tree

pytestmark = pytest.mark.django_db

DETAIL_ROUTES = [
    ("patient-detail", "patient"),
    ("study-detail", "study"),
    ("scan-detail", "scan"),
    ("scan-nifti", "scan"),
    ("scan-png", "scan"),
    ("scan-thumbnail", "scan"),
    ("report-detail", "report"),
    ("gaze-detail", "gaze"),
]
LIST_ROUTES = ["patient-list", "study-list", "scan-list", "report-list", "gaze-list"]


@pytest.mark.parametrize(("route", "key"), DETAIL_ROUTES)
def test_other_projects_objects_are_404(project, manager, outsider, api_client, route, key):
    tree = make_scan_tree(project)
    url = reverse(route, args=[tree[key].pk])
    assert api_client(outsider).get(url).status_code == 404
    if route not in {"scan-nifti", "scan-png", "scan-thumbnail"}:  # no file behind the factory's scan
        assert api_client(manager).get(url).status_code == 200


@pytest.mark.parametrize("route", LIST_ROUTES)
def test_lists_hold_only_own_projects(project, other_project, manager, outsider, api_client, route):
    make_scan_tree(project)
    own = make_scan_tree(other_project)
    body = api_client(outsider).get(reverse(route)).json()
    assert body["count"] == 1
    assert all(item["project"] == "beta" for item in body["results"])
    assert api_client(manager).get(reverse(route), {"project": "beta"}).json()["count"] == 0
    assert own["patient"].project.slug == "beta"


def test_project_and_job_endpoints_are_scoped(project, manager, outsider, api_client):
    from core.jobs import job_create

    job = job_create(project=project, kind="ingest_upload")
    assert api_client(outsider).get(reverse("project-detail", args=["alpha"])).status_code == 404
    assert api_client(outsider).get(reverse("job-detail", args=[job.pk])).status_code == 404
    assert api_client(outsider).get(reverse("job-list", args=["alpha"])).status_code == 404
    slugs = [p["slug"] for p in api_client(outsider).get(reverse("project-list")).json()["results"]]
    assert slugs == ["beta"]
    mine = api_client(manager).get(reverse("project-list")).json()["results"]
    assert [(p["slug"], p["role"]) for p in mine] == [("alpha", "manager")]
    assert api_client(manager).get(reverse("job-detail", args=[job.pk])).json()["status"] == "pending"


def test_upload_to_other_project_is_404_and_annotators_may_not_upload(
    project, annotator, outsider, api_client
):
    url = reverse("upload-create", args=["alpha"])
    assert api_client(outsider).post(url, {}, format="multipart").status_code == 404
    assert api_client(annotator).post(url, {}, format="multipart").status_code == 403


def test_identity_map_is_for_managers_only(project, manager, annotator, outsider, api_client):
    project.keep_identity_map = True  # else the map is empty (tests/studies/test_deid_secrets.py)
    project.save(update_fields=["keep_identity_map"])
    tree = make_scan_tree(project)
    PatientIdentity.objects.create(patient=tree["patient"], original_id="MRN-123", original_name="DOE^JANE")
    url = reverse("identity-map", args=["alpha"])
    assert api_client(annotator).get(url).status_code == 404
    assert api_client(outsider).get(url).status_code == 404
    rows = api_client(manager).get(url).json()["results"]
    assert rows == [
        {
            "patient_id": tree["patient"].pk,
            "pseudonym": tree["patient"].pseudonym,
            "original_id": "MRN-123",
            "original_name": "DOE^JANE",
            "original_birth_date": "",
            "date_shift_days": tree["patient"].date_shift_days,
        }
    ]


def test_anonymous_gets_401_or_403(project):
    make_scan_tree(project)
    assert APIClient().get(reverse("scan-list")).status_code in {401, 403}


def test_token_auth_for_scripts(project, make_user):
    user = make_user("script")
    membership_set(project=project, user=user, role=Role.RESEARCHER)
    make_scan_tree(project)
    response = APIClient().post(reverse("auth-token"), {"username": "script", "password": "pw-" + "x" * 12})
    token = response.json()["token"]
    stored = AuthToken.objects.get(user=user)  # knox keeps the token's digest and its first characters
    assert token.startswith(stored.token_key) and stored.digest != token
    client = APIClient(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(reverse("scan-list")).json()["count"] == 1
    assert APIClient(HTTP_AUTHORIZATION="Token wrong").get(reverse("scan-list")).status_code == 401


def test_session_login_for_the_browser(project, manager, client):
    make_scan_tree(project)
    assert client.get(reverse("scan-list")).status_code in {401, 403}
    # The login page (django-axes needs the request that authenticate() gets; client.login() passes none).
    login = client.post(reverse("review-login"), {"username": "manager", "password": "pw-" + "x" * 12})
    assert login.status_code == 302
    assert client.get(reverse("scan-list")).json()["count"] == 1
    assert b"alpha" in client.get("/").content


def test_list_endpoints_query_count_does_not_grow(
    project, manager, api_client, django_assert_max_num_queries
):
    for _ in range(3):
        make_scan_tree(project)
    client = api_client(manager)
    for route in LIST_ROUTES:
        with django_assert_max_num_queries(6):
            assert client.get(reverse(route)).status_code == 200
    for _ in range(10):
        make_scan_tree(project)
    for route in LIST_ROUTES:
        with django_assert_max_num_queries(6):
            assert client.get(reverse(route)).json()["count"] == 13


def test_openapi_schema_lists_the_endpoints(client, manager):
    client.force_login(manager)
    schema = client.get("/api/schema/").content.decode()
    for fragment in [
        "/api/projects/{slug}/uploads/",
        "/api/scans/{id}/nifti/",
        "/api/jobs/{id}/",
        "/api/gaze-recordings/",
    ]:
        assert fragment in schema
    assert client.get("/api/docs/").status_code == 200


def test_review_settings_by_managers_over_the_api_and_the_cli(
    project, manager, annotator, api_client, make_user
):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from core.models import Project

    url = reverse("project-detail", args=[project.slug])
    shown = api_client(annotator).get(url).json()
    assert (shown["qa_sample_rate"], shown["readers_per_finding"], shown["consensus_method"]) == (
        0.1, 1, "majority",
    )  # fmt: skip
    assert api_client(annotator).patch(url, {"readers_per_finding": 3}, format="json").status_code == 403
    bad = api_client(manager).patch(
        url, {"readers_per_finding": 0, "consensus_method": "vote"}, format="json"
    )
    assert bad.status_code == 400 and {"readers_per_finding", "consensus_method"} <= set(bad.json())
    done = api_client(manager).patch(
        url, {"readers_per_finding": 3, "consensus_method": "staple"}, format="json"
    )
    assert done.status_code == 200 and done.json()["readers_per_finding"] == 3
    project.refresh_from_db()
    assert (project.readers_per_finding, project.consensus_method) == (3, "staple")

    call_command("project_create", "triple", "--readers", "3", "--qa-rate", "0.25", stdout=io.StringIO())
    made = Project.objects.get(slug="triple")
    assert (made.readers_per_finding, made.qa_sample_rate) == (3, 0.25)
    with pytest.raises(CommandError, match="--qa-rate: must be between 0 and 1"):
        call_command("project_create", "broken", "--qa-rate", "2")
    assert not Project.objects.filter(slug="broken").exists()  # nothing half-made
