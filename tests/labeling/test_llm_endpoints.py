"""LLM endpoints come from the server's settings only: a run picks one by name. A URL or key in a run's params
is refused before anything is stored or sent; a key is never stored on a run, in the reply cache or a job,
and never returned by the API. Real loopback chat-completions servers: one configured as ``default``, one
as ``second``, and an attacker's that must never hear a request."""

import importlib
import json
from io import StringIO

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from config.settings.llm import llm_endpoints_from_env
from core.errors import ApplicationError
from core.models import Job
from labeling.llm import LLMLabeler
from labeling.models import LabelRun, LLMCacheEntry
from labeling.services import label_run_get_or_create
from studies.models import Report
from tests.labeling.llm_server import LLMServer, echo_responder

pytestmark = pytest.mark.django_db

KEY = "sk-default-secret-0123456789"
SECOND_KEY = "sk-second-secret-9876543210"
STOLEN = ("api_key", "base_url", KEY, SECOND_KEY, "127.0.0.1")


def _server():
    return LLMServer(responder=echo_responder).start()


@pytest.fixture
def default_server():
    server = _server()
    yield server
    server.stop()


@pytest.fixture
def second_server():
    server = _server()
    yield server
    server.stop()


@pytest.fixture
def attacker():
    """Somebody else's server: a run must never send it the report text or the server's key."""
    server = _server()
    yield server
    server.stop()


@pytest.fixture
def endpoints(settings, default_server, second_server):
    """Two endpoints in the server's settings: ``default`` (LLM_BASE_URL, ...) and ``second``."""
    settings.LLM_BASE_URL = default_server.base_url
    settings.LLM_MODEL = "default-model"
    settings.LLM_API_KEY = KEY
    settings.LLM_MODELS = []
    settings.LLM_ENDPOINTS = {
        "second": {
            "base_url": second_server.base_url,
            "model": "second-model",
            "api_key": SECOND_KEY,
            "models": ["second-large"],
        }
    }
    return settings


@pytest.fixture
def reports(project):
    texts = ["The heart is enlarged. No pneumothorax.", "Lungs are clear. No effusion."]
    for i, text in enumerate(texts):
        Report.objects.create(
            project=project, external_id=f"r{i}", source="csv", raw_text=text, findings=text, checksum=str(i)
        )


def start(client, project, params, *, capture, labeler="llm"):
    """POST a label run; its job runs in-process once the request's transaction commits."""
    with capture(execute=True):
        return client.post(
            reverse("label-runs", args=[project.slug]), {"labeler": labeler, "params": params}, format="json"
        )


# -- (a), (b): a URL or key in the params is refused and nothing is sent ----------------------------------


@pytest.mark.parametrize(
    "params, field",
    [
        ({"base_url": "ATTACKER", "model": "default-model"}, "params.base_url"),
        ({"api_key": "sk-user-key"}, "params.api_key"),
        ({"api_base": "ATTACKER"}, "params.api_base"),
        ({"organization": "org-1"}, "params.organization"),
        ({"default_headers": {"Host": "evil"}}, "params.default_headers"),
        ({"endpoint": "second", "base_url": "ATTACKER"}, "params.base_url"),
        ({"proxy_url": "ATTACKER"}, "params.proxy_url"),  # unknown keys are refused too
    ],
)
def test_a_url_or_key_in_the_params_is_refused_and_no_server_hears_a_request(
    endpoints, attacker, default_server, second_server, project, manager, api_client, reports, params, field,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    params = {k: attacker.base_url if v == "ATTACKER" else v for k, v in params.items()}
    response = start(api_client(manager), project, params, capture=django_capture_on_commit_callbacks)
    # before the fix: 202, and the job sent the reports and "Bearer <LLM_API_KEY>" to the attacker
    assert attacker.requests == [] and attacker.authorizations == []
    assert default_server.requests == [] and second_server.requests == []
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["field"] == field and field in body
    assert not LabelRun.objects.exists() and not Job.objects.exists()
    assert "sk-user-key" not in response.content.decode()


def test_an_ensemble_member_with_a_url_is_refused_naming_the_member(
    endpoints, attacker, default_server, project, manager, api_client, reports,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    members = [{"labeler": "rules"}, {"labeler": "llm", "base_url": attacker.base_url, "api_key": "x"}]
    response = start(
        api_client(manager), project, {"members": members}, labeler="ensemble",
        capture=django_capture_on_commit_callbacks,
    )  # fmt: skip
    assert response.status_code == 400, response.content
    assert response.json()["field"] == "params.members[1].base_url"
    assert attacker.requests == [] and default_server.requests == []
    assert not LabelRun.objects.exists()


def test_a_rules_run_refuses_a_key_too(endpoints, project, manager, api_client, reports):
    response = api_client(manager).post(
        reverse("label-runs", args=[project.slug]),
        {"labeler": "rules", "params": {"options": {"api_key": "sk-user-key"}}},
        format="json",
    )
    assert response.status_code == 400 and response.json()["field"] == "params.options.api_key"
    assert not LabelRun.objects.exists()


def test_an_unknown_endpoint_lists_the_configured_names(endpoints, project, manager, api_client, reports):
    response = api_client(manager).post(
        reverse("label-runs", args=[project.slug]),
        {"labeler": "llm", "params": {"endpoint": "elsewhere"}},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "params.endpoint" and "default, second" in body["detail"]


def test_a_model_the_endpoint_does_not_offer_is_refused(endpoints, project, manager, api_client, reports):
    url = reverse("label-runs", args=[project.slug])
    client = api_client(manager)
    refused = client.post(
        url, {"labeler": "llm", "params": {"endpoint": "second", "model": "gpt-x"}}, format="json"
    )
    assert refused.status_code == 400 and refused.json()["field"] == "params.model"
    assert "second-model, second-large" in refused.json()["detail"]
    # a model the endpoint lists is accepted; an endpoint without a list (default here) takes any name
    for params in ({"endpoint": "second", "model": "second-large"}, {"model": "any-model"}):
        assert LLMLabeler(params).model_name == params["model"]


def test_the_cli_refuses_a_url_and_picks_endpoints_by_name(
    endpoints, attacker, default_server, second_server, project, reports
):
    with pytest.raises(CommandError, match=r"params\.base_url"):
        call_command(
            "label_reports", "--project", project.slug, "--labeler", "llm",
            "--params", json.dumps({"base_url": attacker.base_url}), stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip
    with pytest.raises(CommandError, match=r"params\.endpoint.*default, second"):
        call_command(
            "label_reports", "--project", project.slug, "--labeler", "llm", "--endpoint", "nope",
            stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip
    assert attacker.requests == [] and not LabelRun.objects.exists()
    out = StringIO()
    call_command(
        "label_reports", "--project", project.slug, "--labeler", "llm", "--endpoint", "second",
        stdout=out, stderr=StringIO(),
    )  # fmt: skip
    assert "2 of 2 reports labeled, 0 failed" in out.getvalue()
    assert len(second_server.requests) == 2 and default_server.requests == [] and attacker.requests == []
    assert set(second_server.authorizations) == {f"Bearer {SECOND_KEY}"}


def test_labeler_params_are_checked_in_code_too(endpoints, attacker):
    with pytest.raises(ApplicationError) as info:
        LLMLabeler({"model": "m", "base_url": attacker.base_url})
    assert info.value.field == "params.base_url"
    assert KEY not in repr(LLMLabeler({}).endpoint)  # a key does not show in logs or tracebacks


# -- (c), (d), (e): named endpoints; no key or URL stored or answered -------------------------------------


def test_a_run_sends_to_the_endpoint_it_names_with_that_endpoints_key(
    endpoints, default_server, second_server, attacker, project, manager, api_client, reports,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    client = api_client(manager)
    second = start(client, project, {"endpoint": "second"}, capture=django_capture_on_commit_callbacks)
    assert second.status_code == 202, second.content
    assert len(second_server.requests) == 2 and default_server.requests == []
    assert {r["model"] for r in second_server.requests} == {"second-model"}
    assert set(second_server.authorizations) == {f"Bearer {SECOND_KEY}"}

    default = start(client, project, {}, capture=django_capture_on_commit_callbacks)
    assert default.status_code == 202, default.content
    assert len(default_server.requests) == 2 and len(second_server.requests) == 2
    assert {r["model"] for r in default_server.requests} == {"default-model"}
    assert set(default_server.authorizations) == {f"Bearer {KEY}"}
    assert attacker.requests == []

    runs = {r.params.get("endpoint", "default"): r for r in LabelRun.objects.all()}
    assert set(runs) == {"second", "default"}
    for run in runs.values():
        run.refresh_from_db()
        assert (run.status, run.done, run.failed) == ("succeeded", 2, 0)

    # (e) what is stored: the endpoint's name, never its URL or key (run params, job params, reply cache)
    assert runs["second"].params["recorded"]["endpoint"] == "second"
    assert runs["default"].params["recorded"]["endpoint"] == "default"
    stored = [json.dumps(r.params) for r in runs.values()]
    stored += [json.dumps(j.params) + json.dumps(j.result) + json.dumps(j.errors) for j in Job.objects.all()]
    stored += [f"{e.key} {e.model_name} {e.reply}" for e in LLMCacheEntry.objects.all()]
    assert LLMCacheEntry.objects.count() == 4  # the same reports on two endpoints: two cache entries each
    for text in stored:
        for secret in STOLEN:
            assert secret not in text

    # (d) what the API answers: run list and detail, job detail, proposals
    answers = [client.get(reverse("label-runs", args=[project.slug]))]
    for run in runs.values():
        answers.append(client.get(reverse("label-run-detail", args=[run.pk])))
        answers.append(client.get(reverse("job-detail", args=[run.job_id])))
        answers.append(client.get(reverse("proposal-list"), {"run": run.pk}))
    for response in answers:
        assert response.status_code == 200, response.content
        text = response.content.decode()
        for secret in STOLEN:
            assert secret not in text


def test_an_ensemble_member_names_its_endpoint(endpoints, default_server, second_server, project, reports):
    params = {
        "members": [
            {"labeler": "llm", "cache": False},
            {"labeler": "llm", "endpoint": "second", "cache": False},
        ]
    }
    from labeling.services import label_run_execute

    run = label_run_execute(run=label_run_get_or_create(project=project, labeler="ensemble", params=params))
    assert run.done == 2
    assert set(default_server.authorizations) == {f"Bearer {KEY}"} and len(default_server.requests) == 2
    assert set(second_server.authorizations) == {f"Bearer {SECOND_KEY}"} and len(second_server.requests) == 2


def test_an_unreachable_endpoint_is_named_not_its_url(settings, project, reports):
    settings.LLM_BASE_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    settings.LLM_MODEL = "m"
    from labeling.models import RunReport
    from labeling.services import label_run_execute

    run = label_run_get_or_create(project=project, labeler="llm", params={"max_retries": 0})
    label_run_execute(run=run)
    errors = list(RunReport.objects.filter(run=run).values_list("error", flat=True))
    assert errors and all("cannot connect to endpoint 'default'" in e for e in errors)
    assert not any("127.0.0.1" in e for e in errors)


# -- settings ---------------------------------------------------------------------------------------------


def test_named_endpoints_from_the_environment():
    env = {
        "LLM_ENDPOINTS": "default, Local,cloud",
        "LLM_LOCAL_BASE_URL": "http://vllm:8000/v1",
        "LLM_LOCAL_MODEL": "llama",
        "LLM_CLOUD_BASE_URL": "https://api.example.com/v1",
        "LLM_CLOUD_API_KEY": "sk-cloud",
        "LLM_CLOUD_MODELS": "a, b",
    }
    assert llm_endpoints_from_env(env) == {
        "local": {"base_url": "http://vllm:8000/v1", "model": "llama", "api_key": "none", "models": []},
        "cloud": {
            "base_url": "https://api.example.com/v1",
            "model": "",
            "api_key": "sk-cloud",
            "models": ["a", "b"],
        },
    }
    assert llm_endpoints_from_env({}) == {}
    with pytest.raises(ImproperlyConfigured, match="LLM_CLOUD_BASE_URL"):
        llm_endpoints_from_env({"LLM_ENDPOINTS": "cloud"})
    with pytest.raises(ImproperlyConfigured, match="not a name"):
        llm_endpoints_from_env({"LLM_ENDPOINTS": "../x", "LLM_../X_BASE_URL": "http://x"})


# -- the data migration -------------------------------------------------------------------------------


def test_the_migration_strips_urls_and_keys_from_stored_runs_and_keeps_default_runs_resumable(
    settings, project
):
    settings.LLM_BASE_URL = "http://llm.internal:8000/v1"
    settings.LLM_MODEL = "m"
    migration = importlib.import_module("labeling.migrations.0006_label_run_params_without_endpoint_secrets")
    # a run from before named endpoints: its recorded base_url, no endpoint, the hash of that
    current = label_run_get_or_create(project=project, labeler="llm", params={"concurrency": 2})
    resumable_hash = current.settings_hash
    recorded = {k: v for k, v in current.params["recorded"].items() if k != "endpoint"}
    old_params = {"concurrency": 2, "recorded": recorded | {"base_url": settings.LLM_BASE_URL}}
    LabelRun.objects.filter(pk=current.pk).update(params=old_params, settings_hash="0" * 64)
    # runs whose params carried a URL and a key (llm, and an ensemble member)
    leaked = LabelRun.objects.create(
        project=project, labeler="llm", schema="chexpert", model_name="m", prompt_version="v1",
        settings_hash="1" * 64,
        params={"base_url": "http://evil/v1", "api_key": KEY, "recorded": recorded | {"base_url": "http://evil/v1"}},
    )  # fmt: skip
    member = {"labeler": "llm", "base_url": "http://evil/v1", "api_key": KEY}
    ensemble = LabelRun.objects.create(
        project=project, labeler="ensemble", schema="chexpert", settings_hash="2" * 64,
        params={"members": [{"labeler": "rules"}, member]},
    )  # fmt: skip

    migration.strip_endpoint_secrets(django_apps, None)

    for run in LabelRun.objects.all():
        text = json.dumps(run.params)
        for secret in ("api_key", "base_url", KEY, "http://", "evil"):
            assert secret not in text
    current.refresh_from_db()
    assert current.params["recorded"]["endpoint"] == "default"
    assert current.settings_hash == resumable_hash  # starting the same settings again resumes it
    assert label_run_get_or_create(project=project, labeler="llm", params={"concurrency": 2}).pk == current.pk
    leaked.refresh_from_db()
    ensemble.refresh_from_db()
    assert leaked.params["recorded"]["endpoint"] != "default"
    assert ensemble.params["members"][1] == {"labeler": "llm"}
    assert len({current.settings_hash, leaked.settings_hash, ensemble.settings_hash, "1" * 64, "2" * 64}) == 5
