"""Shared fixtures. With REQUIRE_SERVICES=1 (CI) a test that needs PostgreSQL or Redis fails instead of
skipping when the service is not configured or not reachable."""

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from rest_framework.test import APIClient

from core.models import Role
from core.services import membership_set, project_create, user_create

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", "") in {"1", "true", "yes"}


def need_service(name: str, reason: str) -> None:
    """Skip (or fail under REQUIRE_SERVICES=1) because service ``name`` is missing."""
    message = f"{name} is not available: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REQUIRE_SERVICES=1)")
    pytest.skip(message)


@contextmanager
def sqlite_file_database(folder: Path):
    """SQLite's in-memory test database copied (migrated, with what the test stored) into a file in
    ``folder`` for the block, so that other threads' and processes' connections open the same database;
    nothing to do on PostgreSQL or a file database."""
    if connection.vendor != "sqlite" or not connection.is_in_memory_db():
        yield
        return
    memory_name = connection.settings_dict["NAME"]
    keep = sqlite3.connect(memory_name, uri=True)  # the in-memory database lives while one connection does
    file = folder / "test.sqlite3"
    with sqlite3.connect(file) as target:
        keep.backup(target)
    BaseDatabaseWrapper.close(connection)  # really closed (SQLite's close() keeps in-memory databases)
    connection.settings_dict["NAME"] = str(file)  # the dict every thread's connection is made from
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = memory_name
        connection.ensure_connection()  # before the last other connection to the in-memory database closes
        keep.close()


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Each test stores files in its own folder; passwords hash fast; `gpu` jobs run in-process."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # A child process cannot reach the in-memory SQLite test database; tests/ml/test_embedded_child.py
    # turns it back on with a database the child can reach.
    settings.EMBEDDED_GPU_JOBS_IN_CHILD = False
    return settings.MEDIA_ROOT


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def postgres(db):
    if connection.vendor != "postgresql":
        need_service("PostgreSQL", "set DATABASE_URL=postgres://postgres@127.0.0.1:5432/groundlab")


@pytest.fixture
def make_user(db):
    counter = {"n": 0}

    def make(username: str | None = None, **kwargs):
        counter["n"] += 1
        return user_create(username=username or f"user{counter['n']}", password="pw-" + "x" * 12, **kwargs)

    return make


@pytest.fixture
def make_members(make_user):
    """``make_members(project, ann=Role.ANNOTATOR, rad=Role.RADIOLOGIST, ...)``: a user of each name with
    that role in ``project``, as a dict by name (in the order given)."""

    def make(project, **roles) -> dict:
        out = {}
        for name, role in roles.items():
            out[name] = make_user(name)
            membership_set(project=project, user=out[name], role=role)
        return out

    return make


@pytest.fixture
def project(db):
    return project_create(slug="alpha", name="Alpha")


@pytest.fixture
def other_project(db):
    return project_create(slug="beta", name="Beta")


@pytest.fixture
def manager(make_user, project):
    user = make_user("manager")
    membership_set(project=project, user=user, role=Role.MANAGER)
    return user


@pytest.fixture
def annotator(make_user, project):
    user = make_user("annotator")
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    return user


@pytest.fixture
def outsider(make_user, other_project):
    """A manager of another project: must see nothing of ``project``."""
    user = make_user("outsider")
    membership_set(project=other_project, user=user, role=Role.MANAGER)
    return user


@pytest.fixture
def api_client():
    def client_for(user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user=user)
        return client

    return client_for


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url:
        need_service("Redis", "set REDIS_URL=redis://127.0.0.1:6379/15")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        need_service("Redis", f"{url} does not answer ({exc})")
    return url


def celery_pools_reset(app) -> None:
    """Forget every broker connection and producer pool, so the next send uses the current broker URL
    (kombu keeps pools in a global registry keyed by connection)."""
    from kombu import pools

    pools.reset()
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None


@pytest.fixture
def celery_broker(redis_url):
    """Point the Celery app at a real Redis broker (no in-process execution) for one test."""
    from config.celery import app

    old = (app.conf.broker_url, app.conf.task_always_eager)
    app.conf.broker_url, app.conf.task_always_eager = redis_url, False
    celery_pools_reset(app)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")
    yield app
    app.conf.broker_url, app.conf.task_always_eager = old
    celery_pools_reset(app)
