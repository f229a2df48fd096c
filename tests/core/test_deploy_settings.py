"""Production settings: `check --deploy` is clean with platform/env.example's production values; DEBUG off
refuses a placeholder or short SECRET_KEY; no environment shows no debug pages; a Content-Security-Policy
on every page; the API docs from the platform's own static files."""

import os
import re
import secrets
import subprocess
import sys

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from config.settings.security import SECRET_KEY_MIN_LENGTH, secret_key_from_file, secret_key_problem
from core.models import Role
from core.services import membership_set
from tests.conftest import REPO

ENV_EXAMPLE = REPO / "platform" / "env.example"


def _bare_env(**values: str) -> dict[str, str]:
    """No environment but PATH (as `env -i`), plus ``values``."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **values}


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_env_example_production_values():
    values = _env_example()
    assert values["DEBUG"] == "False"
    # The operator replaces the placeholder key, as env.example says; everything else as it stands.
    values["SECRET_KEY"] = secrets.token_urlsafe(50)
    out = _manage(_bare_env(**values), "check", "--deploy", "--fail-level", "WARNING")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "System check identified no issues" in out.stdout


@pytest.mark.parametrize(
    "key",
    [
        "change-me",  # env.example's placeholder
        "short-but-random-Xk3q9",
        "django-insecure-" + secrets.token_urlsafe(50),
        "a" * 60,
    ],
)
def test_debug_off_refuses_to_start_on_a_placeholder_or_short_secret_key(key):
    out = _manage(_bare_env(DEBUG="False", SECRET_KEY=key), "check")
    assert out.returncode != 0
    assert "refuses to start on a placeholder or short key" in out.stderr
    assert key == "change-me" or key not in out.stderr  # a key is never printed (a placeholder word is)


def test_debug_off_starts_with_a_real_key():
    out = _manage(_bare_env(DEBUG="False", SECRET_KEY=secrets.token_urlsafe(50)), "check")
    assert out.returncode == 0, out.stderr


def test_the_embedded_default_key_is_made_once_random_long_and_private(tmp_path):
    path = tmp_path / "var" / "secret_key"
    key = secret_key_from_file(path)
    assert len(key) >= SECRET_KEY_MIN_LENGTH and not secret_key_problem(key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert secret_key_from_file(path) == key
    assert secret_key_from_file(tmp_path / "other") != key


WSGI_PROBE = """
from wsgiref.util import setup_testing_defaults
from config.wsgi import application
environ = {"PATH_INFO": "/no-such-page/"}
setup_testing_defaults(environ)
status = []
body = b"".join(application(environ, lambda s, headers, exc_info=None: status.append(s)))
print(status[0])
print(body.decode())
"""


def test_no_environment_shows_no_debug_pages():
    out = subprocess.run(
        [sys.executable, "-c", WSGI_PROBE],
        cwd=REPO,
        env=_bare_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("404")
    assert "Using the URLconf" not in out.stdout and "DEBUG = True" not in out.stdout


# --- Content-Security-Policy -------------------------------------------------------------------------------
def _csp(response) -> dict[str, str]:
    header = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part for part in (p.strip() for p in header.split(";")) if part}


@pytest.mark.django_db
def test_review_screen_and_pages_carry_the_policy_and_have_no_inline_code(client, project, make_user):
    annotator = make_user("reader")
    membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    client.force_login(annotator)
    for url in (reverse("review", args=[project.slug]), reverse("home")):
        response = client.get(url)
        assert response.status_code == 200
        policy = _csp(response)
        assert policy["default-src"] == "default-src 'self'"
        assert policy["script-src"].split()[1:] == ["'self'", "'wasm-unsafe-eval'"]
        assert policy["style-src"] == "style-src 'self'"
        assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
        html = response.content.decode()
        assert "<style" not in html and " style=" not in html
        assert all(' src="' in tag for tag in re.findall(r"<script[^>]*>", html))  # none inline
    client.logout()
    assert _csp(client.get(reverse("review-login")))["form-action"] == "form-action 'self'"
    assert "<style" not in client.get(reverse("review-login")).content.decode()


# --- API docs from local static files ----------------------------------------------------------------------
def _assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.django_db
@pytest.mark.parametrize("route", ["swagger-ui", "redoc"])
def test_api_docs_use_only_the_platforms_own_static_files(client, route):
    response = client.get(reverse(route))
    assert response.status_code == 200
    html = response.content.decode()
    assets = _assets(html)
    assert assets, html
    for asset in assets:
        assert not re.match(r"(https?:)?//", asset), f"{asset} is on another host"
        if asset.startswith("/static/"):
            name = asset.removeprefix("/static/").split("?")[0]
            assert finders.find(name), f"{name} is not among the static files"
            assert client.get(asset).status_code == 200  # served with DEBUG off (WhiteNoise)
    assert "<style" not in html and "googleapis" not in html
    assert all(' src="' in tag for tag in re.findall(r"<script[^>]*>", html))
    policy = _csp(response)
    assert policy["script-src"].split()[1:] == ["'self'", "'wasm-unsafe-eval'"]
    if route == "swagger-ui":
        script = next(a for a in assets if "script=" in a)
        started = client.get(script.replace("&amp;", "&"))
        assert started.status_code == 200 and "SwaggerUIBundle" in started.content.decode()
        assert policy["style-src"] == "style-src 'self'"
    else:  # ReDoc alone may inline its styles
        assert policy["style-src"] == "style-src 'self' 'unsafe-inline'"
