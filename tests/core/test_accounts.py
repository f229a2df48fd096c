"""Accounts: password validators, failed logins locked out per user and address (django-axes), API tokens
that expire and can be revoked (django-rest-knox), original identifiers in the admin for managers only."""

import runpy
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from core.errors import ApplicationError
from core.models import Role
from core.services import membership_set, user_create
from studies.models import PatientIdentity
from tests.conftest import REPO
from tests.factories import make_scan_tree

pytestmark = pytest.mark.django_db

PASSWORD = "pw-" + "x" * 12  # the make_user fixture's
ADDRESS_A, ADDRESS_B = "192.0.2.10", "192.0.2.20"


# --- passwords ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("Xy7-short", "too short"),
        ("password1234", "too common"),
        ("8203948571029384", "entirely numeric"),
        ("meredith-grey-1", "too similar to the username"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(password, reason):
    with pytest.raises(ApplicationError) as refused:
        user_create(username="meredith-grey", password=password)
    assert refused.value.field == "password" and reason in refused.value.message
    assert user_create(username="meredith-grey", password="correct horse battery staple").pk


# --- failed logins -----------------------------------------------------------------------------------------
def _review_login(client, username, password, address):
    return client.post(
        reverse("review-login"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def test_failed_logins_lock_out_that_user_from_that_address(settings, client, manager, annotator):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        assert _review_login(client, "manager", "wrong password", ADDRESS_A).status_code == 200
    assert _review_login(client, "manager", "wrong password", ADDRESS_A).status_code == 429  # the limit
    # Given three failures: the right password from that address is refused, with the reason
    locked = _review_login(client, "manager", PASSWORD, ADDRESS_A)
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    assert "_auth_user_id" not in client.session
    # the admin's login page shares the count
    admin_login = client.post(
        reverse("admin:login"), {"username": "manager", "password": PASSWORD}, REMOTE_ADDR=ADDRESS_A
    )
    assert admin_login.status_code == 429
    # the same user from another address, and another user from that address, still log in
    assert _review_login(client, "manager", PASSWORD, ADDRESS_B).status_code == 302
    client.logout()
    assert _review_login(client, "annotator", PASSWORD, ADDRESS_A).status_code == 302


def test_token_endpoint_counts_failures_and_answers_429_when_locked_out(settings, manager):
    settings.AXES_FAILURE_LIMIT = 2
    url = reverse("auth-token")
    api = APIClient()
    bad = api.post(url, {"username": "manager", "password": "nope"}, REMOTE_ADDR=ADDRESS_A)
    assert bad.status_code == 400 and bad.json()["field"] == "password"
    assert (
        api.post(url, {"username": "manager", "password": "nope"}, REMOTE_ADDR=ADDRESS_A).status_code == 429
    )
    locked = api.post(
        url, {"username": "manager", "password": PASSWORD}, format="json", REMOTE_ADDR=ADDRESS_A
    )
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.json()["detail"]
    assert not AuthToken.objects.filter(user=manager).exists()
    elsewhere = api.post(url, {"username": "manager", "password": PASSWORD}, REMOTE_ADDR=ADDRESS_B)
    assert elsewhere.status_code == 200 and elsewhere.json()["token"]


def test_proxy_header_gives_the_address_only_when_configured(settings, client, manager):
    settings.AXES_FAILURE_LIMIT = 2
    proxy = "172.18.0.5"  # every request comes from the proxy; X-Real-IP names the client
    for client_address in ("203.0.113.1", "203.0.113.2"):
        client.post(
            reverse("review-login"),
            {"username": "manager", "password": "wrong"},
            REMOTE_ADDR=proxy,
            HTTP_X_REAL_IP=client_address,
        )
    # Not configured (the default): the header is ignored, both failures came from the proxy's address
    refused = client.post(
        reverse("review-login"),
        {"username": "manager", "password": PASSWORD},
        REMOTE_ADDR=proxy,
        HTTP_X_REAL_IP="203.0.113.3",
    )
    assert refused.status_code == 429
    # Configured (CLIENT_IP_HEADER=HTTP_X_REAL_IP): a new client address behind the proxy logs in
    settings.AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_REAL_IP", "REMOTE_ADDR")
    allowed = client.post(
        reverse("review-login"),
        {"username": "manager", "password": PASSWORD},
        REMOTE_ADDR=proxy,
        HTTP_X_REAL_IP="203.0.113.4",
    )
    assert allowed.status_code == 302


def test_login_limits_and_token_lifetime_come_from_the_environment(monkeypatch):
    for name, value in {
        "LOGIN_FAILURE_LIMIT": "7",
        "LOGIN_COOLOFF_MINUTES": "30",
        "CLIENT_IP_HEADER": "HTTP_X_REAL_IP",
        "API_TOKEN_TTL_HOURS": "2",
        "PASSWORD_MIN_LENGTH": "14",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEBUG", "1")
    ns = runpy.run_path(str(REPO / "config" / "settings" / "security.py"))
    assert (ns["AXES_FAILURE_LIMIT"], ns["AXES_COOLOFF_TIME"]) == (7, timedelta(minutes=30))
    assert ns["AXES_LOCKOUT_PARAMETERS"] == [["username", "ip_address"]]
    assert ns["AXES_IPWARE_META_PRECEDENCE_ORDER"] == ("HTTP_X_REAL_IP", "REMOTE_ADDR")
    assert ns["REST_KNOX"]["TOKEN_TTL"] == timedelta(hours=2)
    assert ns["AUTH_PASSWORD_VALIDATORS"][1]["OPTIONS"] == {"min_length": 14}


# --- API tokens --------------------------------------------------------------------------------------------
def _token(username="manager", address=ADDRESS_A) -> dict:
    response = APIClient().post(
        reverse("auth-token"), {"username": username, "password": PASSWORD}, REMOTE_ADDR=address
    )
    assert response.status_code == 200, response.content
    return response.json()


def _projects_status(token: str) -> int:
    return APIClient(HTTP_AUTHORIZATION=f"Token {token}").get(reverse("project-list")).status_code


def test_tokens_expire(settings, manager):
    made = _token()
    expiry = timezone.datetime.fromisoformat(made["expiry"])
    ttl = settings.REST_KNOX["TOKEN_TTL"]
    assert abs(expiry - (timezone.now() + ttl)) < timedelta(minutes=1)
    assert _projects_status(made["token"]) == 200
    # When its time is up the token no longer works
    AuthToken.objects.filter(user=manager).update(expiry=timezone.now() - timedelta(seconds=1))
    assert _projects_status(made["token"]) == 401


def test_a_token_is_revoked_alone_or_with_all_of_its_users(manager, annotator):
    first, second, third = _token()["token"], _token()["token"], _token()["token"]
    others = _token("annotator")["token"]
    revoke = APIClient(HTTP_AUTHORIZATION=f"Token {first}").post(reverse("auth-token-revoke"))
    assert revoke.status_code == 204
    assert (_projects_status(first), _projects_status(second)) == (401, 200)
    revoke_all = APIClient(HTTP_AUTHORIZATION=f"Token {second}").post(reverse("auth-token-revoke-all"))
    assert revoke_all.status_code == 204
    assert (_projects_status(second), _projects_status(third)) == (401, 401)
    assert _projects_status(others) == 200
    # From a browser session: revoke-all works (say, after a token leaked); revoke needs the token itself
    session = APIClient()
    session.force_login(annotator)
    no_token = session.post(reverse("auth-token-revoke"))
    assert no_token.status_code == 400 and no_token.json()["field"] == "token"
    assert _projects_status(others) == 200
    assert session.post(reverse("auth-token-revoke-all")).status_code == 204
    assert _projects_status(others) == 401


# --- original identifiers in the admin ---------------------------------------------------------------------
@pytest.fixture
def identities(project, other_project):
    rows = {}
    for proj, mrn in ((project, "MRN-ALPHA-1"), (other_project, "MRN-BETA-2")):
        patient = make_scan_tree(proj)["patient"]
        rows[proj.slug] = PatientIdentity.objects.create(
            patient=patient, original_id=mrn, original_name="DOE"
        )
    return rows


def test_admin_shows_original_identifiers_to_the_projects_managers_only(
    client, make_user, project, identities
):
    changelist = reverse("admin:studies_patientidentity_changelist")

    def change_page(slug):
        return reverse("admin:studies_patientidentity_change", args=[identities[slug].pk])

    # A staff member who manages alpha: alpha's identifiers, not beta's, and only to read
    staff_manager = make_user("staff-manager", is_staff=True)
    membership_set(project=project, user=staff_manager, role=Role.MANAGER)
    client.force_login(staff_manager)
    listing = client.get(changelist)
    assert listing.status_code == 200
    assert b"MRN-ALPHA-1" in listing.content and b"MRN-BETA-2" not in listing.content
    assert client.get(change_page("alpha")).status_code == 200
    assert client.get(change_page("beta")).status_code == 302  # "does not exist" for them
    assert b"MRN-BETA-2" not in client.get(change_page("beta"), follow=True).content
    client.post(change_page("alpha"), {"original_id": "CHANGED"})
    assert PatientIdentity.objects.get(pk=identities["alpha"].pk).original_id == "MRN-ALPHA-1"

    # A staff member who annotates alpha: none
    staff_annotator = make_user("staff-annotator", is_staff=True)
    membership_set(project=project, user=staff_annotator, role=Role.ANNOTATOR)
    client.force_login(staff_annotator)
    assert client.get(changelist).status_code == 403
    assert client.get(change_page("alpha")).status_code in (302, 403)
    assert b"MRN-ALPHA-1" not in client.get(reverse("admin:index")).content

    # A superuser: all
    client.force_login(make_user("root", is_superuser=True))
    everything = client.get(changelist).content
    assert b"MRN-ALPHA-1" in everything and b"MRN-BETA-2" in everything
