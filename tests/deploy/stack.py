"""The compose stack of platform/compose.yaml started process by process on loopback: the ``stack`` fixture,
the processes it starts and stops, and the HTTP helpers of the round trip (test_compose_stack.py says what
runs in place of what)."""

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import psycopg
import pytest
import redis
import requests
import yaml
from botocore.exceptions import BotoCoreError
from psycopg import sql

from tests.conftest import REPO, need_service
from tests.deploy.platform_files import COMPOSE, env_example_values, image_environment

VENV_BIN = Path(sys.executable).parent
HOST = "groundlab.example.org"  # env.example's ALLOWED_HOSTS; nginx passes the client's Host on
PASSWORD = "deploy-" + secrets.token_urlsafe(12)
MAX_CONCURRENCY = 2  # this machine has two cores; compose's worker-llm asks for 16
STEP_TIMEOUT = 300  # seconds any one job or start may take


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """compose's interpolation of ``value`` (a string, or lists/dicts of them) from ``env``: ``${X}``,
    ``${X:-default}``, ``${X:?message}`` (an error when X is unset or empty) and ``$$`` (a ``$`` left for
    the container's shell)."""
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name, "")
        if op == ":?" and not current:
            raise AssertionError(f"compose.yaml needs {name}: {arg}")
        return current or arg or "" if op == ":-" else current

    return _VARIABLE.sub(one, value)


class Stack:
    """The processes of one compose stack on loopback: started in their own process groups with their
    output in a log file each; ``check()`` fails when one has exited; ``stop()`` ends them all."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], *, keep_stdin: bool = False) -> None:
        log = self.folder / f"{name}.log"
        self.logs[name] = log
        with open(log, "wb") as out:
            self.procs[name] = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if keep_stdin else subprocess.DEVNULL,
                start_new_session=True,  # a group of its own: its children (prefork pool) end with it
            )

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float = STEP_TIMEOUT) -> str:
        """A one-shot process (compose's ``migrate``, ``manage.py`` commands): its output; fails on error."""
        log = self.folder / f"{name}.log"
        self.logs[name] = log
        done = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        log.write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"{name} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-6000:]}")

    def wait(self, what: str, ready: Callable[[], Any], timeout: float = STEP_TIMEOUT) -> Any:
        """Poll ``ready()`` until it returns something true (returned), a process exits, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                result = ready()
            except (OSError, requests.RequestException, BotoCoreError, redis.RedisError):
                result = None  # not listening yet
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.5)

    def dump(self) -> None:
        for name in self.logs:
            print(f"\n===== {name} (last 150 lines) =====\n" + "\n".join(self.log(name).splitlines()[-150:]))

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                if proc.stdin:
                    proc.stdin.close()
                try:
                    os.killpg(proc.pid, signal.SIGTERM)  # the group this test started for it
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left (pool children)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=10)


def _translate_url(value: str, hosts: dict[str, tuple[str, int]]) -> str:
    """``value`` with a compose service host (``postgres:5432``) replaced by its loopback address."""
    parts = urlsplit(value)
    if parts.hostname not in hosts:
        return value
    host, port = hosts[parts.hostname]
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}{host}:{port}"))


def _worker_argv(command: list[str], folder: Path) -> list[str]:
    """compose's Celery command with at most MAX_CONCURRENCY processes and beat's schedule file in
    ``folder`` (not a shared /tmp)."""
    argv = list(command)
    if "--concurrency" in argv:
        i = argv.index("--concurrency") + 1
        argv[i] = str(min(int(argv[i]), MAX_CONCURRENCY))
    else:
        argv += ["--concurrency", str(MAX_CONCURRENCY)]
    if "--schedule" in argv:
        argv[argv.index("--schedule") + 1] = str(folder / "celerybeat-schedule")
    return argv


class Api:
    """HTTP to gunicorn as nginx passes it on: Host, X-Forwarded-Proto https (TLS ends at the proxy),
    X-Real-IP; ``Authorization: Token`` when a token is given. Redirects to object storage are followed
    without those headers."""

    def __init__(self, base: str, token: str = ""):
        self.base, self.token = base, token
        self.session = requests.Session()

    def headers(self) -> dict[str, str]:
        out = {"Host": HOST, "X-Forwarded-Proto": "https", "X-Real-IP": "127.0.0.1"}
        if self.token:
            out["Authorization"] = f"Token {self.token}"
        return out

    def call(self, method: str, path: str, *, headers: dict | None = None, **kwargs) -> requests.Response:
        response = self.session.request(
            method,
            self.base + path,
            headers={**self.headers(), **(headers or {})},
            allow_redirects=False,
            timeout=120,
            **kwargs,
        )
        if response.status_code in (301, 302, 307) and response.headers["Location"].startswith("http://127"):
            response = requests.get(response.headers["Location"], timeout=120)  # a signed storage URL
        return response

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.call("POST", path, **kwargs)


def _ok(response: requests.Response, *codes: int) -> Any:
    request = response.request
    assert response.status_code in (codes or (200,)), (
        f"{request.method} {request.path_url}: {response.status_code} {response.text[:2000]}"
    )
    return response.json() if "json" in response.headers.get("Content-Type", "") else response.content


@dataclass
class Deployment:
    procs: Stack
    base: str  # gunicorn's URL
    queues: dict[str, str]  # worker service -> its queue
    media_roots: list[Path]  # each app process's own MEDIA_ROOT
    s3: Any  # boto3 client on the S3 server
    bucket: str
    start_s: float  # seconds from nothing to every worker ready (migrations included)


@pytest.fixture
def stack(tmp_path):
    """The compose stack on loopback (see the module's docstring); stops every process and drops the
    test's database and role afterwards."""
    begun = time.monotonic()
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    values = env_example_values()  # platform/.env, as the operator copies it

    admin_url = os.environ.get("DATABASE_URL", "")
    if not admin_url.startswith("postgres"):
        admin_url = "postgres://postgres@127.0.0.1:5432/postgres"
    admin = urlsplit(admin_url)._replace(path="/postgres")
    try:
        pg = psycopg.connect(urlunsplit(admin), autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        need_service("PostgreSQL", f"{urlunsplit(admin)}: {exc}")
    if shutil.which("redis-server") is None:
        need_service("Redis", "redis-server is not installed")
    if not (VENV_BIN / "moto_server").exists():
        need_service("S3 (moto)", "moto_server is not installed: pip install -r requirements-dev.txt")

    suffix = uuid.uuid4().hex[:10]
    role, database = f"groundlab_deploy_{suffix}", f"groundlab_deploy_{suffix}"
    pg.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(values["POSTGRES_PASSWORD"])
        )
    )
    pg.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
    ports = {"redis": _free_port(), "minio": _free_port(), "web": _free_port()}
    procs = Stack(tmp_path)
    try:
        # --- redis: compose's command, on loopback and a free port, its files in the test's folder
        redis_argv = interpolate(services["redis"]["command"], values)
        procs.start(
            "redis",
            [
                *redis_argv,
                "--port",
                str(ports["redis"]),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(tmp_path),
                "--save",
                "",
            ],
            {"PATH": os.environ["PATH"]},
        )
        # --- minio: an S3 server (moto), then minio-init's bucket
        procs.start(
            "minio",
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(ports["minio"])],
            {"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        )
        # --- the LLM endpoint named by LLM_BASE_URL
        procs.start(
            "llm-server",
            [sys.executable, str(REPO / "tests" / "labeling" / "llm_server.py"), "--responder", "echo"],
            {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
            keep_stdin=True,  # it serves until its stdin closes
        )
        llm_port = int(
            procs.wait("the LLM server's port", lambda: re.search(r"PORT (\d+)", procs.log("llm-server")))[1]
        )

        hosts = {
            "postgres": (admin.hostname or "127.0.0.1", admin.port or 5432),
            "redis": ("127.0.0.1", ports["redis"]),
            "minio": ("127.0.0.1", ports["minio"]),
            "llm-server": ("127.0.0.1", llm_port),
        }
        app_env = {name: _translate_url(value, hosts) for name, value in values.items()}
        db = urlsplit(app_env["DATABASE_URL"])
        app_env["DATABASE_URL"] = urlunsplit(
            db._replace(
                netloc=db.netloc.replace(f"{values['POSTGRES_USER']}:", f"{role}:", 1), path=f"/{database}"
            )
        )
        assert "change-me" in app_env["SECRET_KEY"]
        app_env["SECRET_KEY"] = secrets.token_urlsafe(50)
        app_env["GUNICORN_WORKERS"] = "2"
        # Every address a process would connect to is on this machine now (the CSRF origin is no address).
        elsewhere = {
            name: value
            for name, value in app_env.items()
            if re.match(r"^\w+://", value) and urlsplit(value).hostname != "127.0.0.1"
        }
        assert set(elsewhere) <= {"CSRF_TRUSTED_ORIGINS"}, (
            f"a service env.example names is not mapped: {elsewhere}"
        )
        base_env = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",  # python, gunicorn, celery: the venv's
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            "DJANGO_SETTINGS_MODULE": "config.settings",  # the images' ENV
            **app_env,
        }

        def env_of(service: str) -> dict[str, str]:
            media = tmp_path / service / "media"
            media.mkdir(parents=True, exist_ok=True)
            target = services[service]["build"]["target"]
            return {**base_env, "MEDIA_ROOT": str(media), **image_environment(target, tmp_path)}

        broker = redis.Redis.from_url(app_env["CELERY_BROKER_URL"], socket_timeout=2)
        procs.wait("redis", broker.ping, timeout=60)
        broker.close()
        s3 = boto3.client(
            "s3",
            endpoint_url=app_env["S3_ENDPOINT_URL"],
            aws_access_key_id=app_env["S3_ACCESS_KEY_ID"],
            aws_secret_access_key=app_env["S3_SECRET_ACCESS_KEY"],
            region_name=app_env["S3_REGION"],
        )
        procs.wait("the S3 server", lambda: s3.list_buckets() is not None, timeout=60)
        s3.create_bucket(Bucket=app_env["S3_BUCKET"])

        # --- migrate (one-shot), then what the README's one-machine steps do by hand
        migrate = interpolate(services["migrate"]["command"], values)
        procs.run("migrate", migrate, env_of("migrate"))
        manage = ["python", "manage.py"]
        admin_env = {**env_of("migrate"), "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
        procs.run(
            "createsuperuser",
            [*manage, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.org"],
            admin_env,
        )
        make_users = (
            "from core.services import user_create\n"
            f"for name in ('ann', 'rad'): user_create(username=name, password={PASSWORD!r})"
        )
        procs.run("users", [*manage, "shell", "-c", make_users], admin_env)
        members = "--member admin:manager --member ann:annotator --member rad:radiologist"
        procs.run(
            "project_create",
            [*manage, "project_create", "deploy", "--label-schema", "rexgroundingct", *members.split()],
            admin_env,
        )

        # --- web: compose's sh -c command (collectstatic, then gunicorn), bound to loopback
        web = interpolate(services["web"]["command"], values)
        assert web[:2] == ["sh", "-c"] and "0.0.0.0:8000" in web[2], web
        web[2] = web[2].replace("0.0.0.0:8000", f"127.0.0.1:{ports['web']}")
        procs.start("web", web, env_of("web"))
        # --- one Celery worker per queue
        queues = {}
        for name in ("worker-default", "worker-llm", "worker-gpu"):
            command = interpolate(services[name]["command"], values)
            queues[name] = command[command.index("-Q") + 1]
            procs.start(name, _worker_argv(command, tmp_path), env_of(name))
        base = f"http://127.0.0.1:{ports['web']}"
        procs.wait("gunicorn", lambda: Api(base).get("/review/login/").status_code == 200)
        for name in queues:
            procs.wait(f"{name} ready", lambda name=name: re.search(r"\bready\.", procs.log(name)))
        yield Deployment(
            procs=procs,
            base=base,
            queues=queues,
            media_roots=[Path(env_of(name)["MEDIA_ROOT"]) for name in ("migrate", "web", *queues)],
            s3=s3,
            bucket=app_env["S3_BUCKET"],
            start_s=round(time.monotonic() - begun, 1),
        )
    except BaseException:
        procs.dump()  # a start that failed; the test dumps the logs of a failure of its own
        raise
    finally:
        procs.stop()
        pg.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        pg.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        pg.close()
