"""platform/compose.yaml, started process by process on loopback (no container engine runs here), and one
upload -> label -> review -> release round trip through HTTP.

What compose names, and what runs here instead:
- ``postgres``: the PostgreSQL server at 127.0.0.1:5432 (CI's), with a role and a database of this test's
  own (``POSTGRES_PASSWORD`` from env.example), dropped afterwards;
- ``redis``: ``redis-server`` with compose's arguments (``--requirepass``) on a free port;
- ``minio`` + ``minio-init``: moto's S3 server (``moto_server``, from requirements-dev) on a free port, and
  the bucket made as minio-init makes it (MinIO is not installed here);
- ``migrate``, ``web`` (its ``sh -c`` command: collectstatic, then gunicorn), ``worker-default`` (with its
  beat), ``worker-llm``, ``worker-gpu``: compose's commands, run from the repository's virtualenv;
- the LLM endpoint (``LLM_BASE_URL``): tests/labeling/llm_server.py, an OpenAI-compatible server.

The environment of every app process is env.example's (compose's ``env_file``) and nothing else from this
machine's, translated for loopback: service hosts and ports to 127.0.0.1 and the free ports, the database
role and name to this test's, ``SECRET_KEY`` to a real one (as an operator replaces "change-me"), each
process its own ``MEDIA_ROOT`` (containers share no disk), fewer processes on this small machine
(``GUNICORN_WORKERS=2``, Celery ``--concurrency`` at most 2). Web, migrate and the default and llm workers
run in an interpreter that can import only what their image installs (tests/deploy/image_site: no torch);
the gpu worker, what the gpu-worker image installs. Requests carry what nginx adds (Host, X-Forwarded-Proto
https, X-Real-IP). A failure prints the log of every process; every process is stopped at the end.
"""

import csv
import gzip
import io
import json
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
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import nibabel as nib
import numpy as np
import psycopg
import pydicom
import pytest
import redis
import requests
import yaml
from botocore.exceptions import BotoCoreError
from psycopg import sql

from tests.conftest import REPO, need_service
from tests.deploy.platform_files import COMPOSE, env_example_values, image_environment

pytestmark = [pytest.mark.slow, pytest.mark.services]

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


REPORT = {  # written for this test (the series' own report is not public); the rules labeler grounds it
    "findings": "Lungs: There is a 14 mm solid nodule in the right upper lobe. No pleural effusion.",
    "impression": "14 mm right upper lobe pulmonary nodule.",
}


def test_upload_label_review_release_round_trip_through_http(shared_data, stack):
    procs, base = stack.procs, stack.base
    assert stack.queues == {"worker-default": "default", "worker-llm": "llm", "worker-gpu": "gpu"}
    anonymous = Api(base)
    timings: dict[str, float] = {}

    def token(username: str) -> str:
        body = _ok(anonymous.post("/api/auth/token/", json={"username": username, "password": PASSWORD}))
        return body["token"]

    def until(what: str, fetch: Callable[[], dict], done: Callable[[dict], bool]) -> dict:
        """Poll ``fetch()`` until ``done(body)``; a job that failed fails the test with its message."""
        last: dict = {}

        def ready():
            nonlocal last
            last = fetch()
            failed = last.get("status") == "failed" or (last.get("job") or {}).get("status") == "failed"
            assert not failed, f"{what} failed: {json.dumps(last)[:3000]}"
            return done(last)

        try:
            procs.wait(what, ready)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {json.dumps(last)[:3000]}") from None
        return last

    def job_done(job_id: int, what: str, api: "Api") -> dict:
        return until(what, lambda: _ok(api.get(f"/api/jobs/{job_id}/")), lambda j: j["status"] == "succeeded")

    try:
        # The review screen, signed in (secure cookies: sent by hand, as the browser does over https),
        # loads its bundle from the web tier's static files.
        login = anonymous.get("/review/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)[1]
        signed_in = anonymous.post(
            "/review/login/",
            data={"username": "ann", "password": PASSWORD, "csrfmiddlewaretoken": csrf},
            cookies={"csrftoken": login.cookies["csrftoken"]},
            headers={"Referer": f"https://{HOST}/review/login/"},
        )
        assert signed_in.status_code == 302 and "sessionid" in signed_in.cookies, signed_in.text[:2000]
        page = anonymous.get("/review/deploy/", cookies={"sessionid": signed_in.cookies["sessionid"]})
        assert page.status_code == 200, page.text[:2000]
        bundle = re.search(r'<script type="module" src="([^"]+)"', page.text)[1]
        script = anonymous.get(bundle)
        assert script.status_code == 200 and "javascript" in script.headers["Content-Type"], bundle
        assert len(script.content) > 100_000

        manager, ann, rad = Api(base, token("admin")), Api(base, token("ann")), Api(base, token("rad"))
        started = time.monotonic()
        mark = started

        def lap(step: str) -> None:
            nonlocal mark
            now = time.monotonic()
            timings[step] = round(now - mark, 2)
            mark = now

        # --- upload: a real CT series (30 slices) and its report, linked by StudyInstanceUID
        series = sorted((shared_data / "ct" / "lungdx-a0002").glob("*.dcm"))
        assert len(series) == 30
        study_uid = pydicom.dcmread(series[0], stop_before_pixels=True).StudyInstanceUID
        reports = io.StringIO()
        writer = csv.writer(reports)
        writer.writerow(["study_uid", "findings", "impression"])
        writer.writerow([study_uid, REPORT["findings"], REPORT["impression"]])
        files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in series]
        files.append(("reports", ("reports.csv", reports.getvalue().encode(), "text/csv")))
        form = {
            "report_id_column": "study_uid",
            "report_text_columns": "findings,impression",
            "report_link": "study-uid",
        }
        job = _ok(manager.post("/api/projects/deploy/uploads/", files=files, data=form), 202)
        job = job_done(job["id"], "the upload's ingest job (default queue)", manager)
        scans = _ok(manager.get("/api/scans/", params={"project": "deploy"}))["results"]
        assert len(scans) == 1, scans
        scan = scans[0]
        assert scan["modality"] == "CT" and sorted(scan["shape"]) == [30, 512, 512], scan
        assert _ok(manager.get("/api/reports/", params={"project": "deploy"}))["count"] == 1
        lap("upload + ingest")

        # --- pre-annotation on the gpu queue (the lungs generator)
        pre = _ok(manager.post(f"/api/scans/{scan['id']}/preannotate/", json={"generator": "lungs"}), 202)
        job_done(pre["job_id"], "pre-annotation (gpu queue)", manager)
        regions = _ok(manager.get("/api/region-proposals/", params={"scan": scan["id"]}))
        assert regions["count"] >= 1, regions
        lap("pre-annotate lungs (gpu)")

        # --- report labels: an LLM run (llm queue, the loopback endpoint), then the rules (default queue)
        llm = _ok(manager.post("/api/projects/deploy/label-runs/", json={"labeler": "llm"}), 202)
        llm = until(
            "the LLM label run (llm queue)",
            lambda: _ok(manager.get(f"/api/label-runs/{llm['id']}/")),
            lambda r: r["status"] == "succeeded",
        )
        assert llm["done"] == 1 and llm["proposals"] >= 1 and llm["tokens_in"] > 0, llm
        rules = _ok(manager.post("/api/projects/deploy/label-runs/", json={"labeler": "rules"}), 202)
        rules = until(
            "the rules label run",
            lambda: _ok(manager.get(f"/api/label-runs/{rules['id']}/")),
            lambda r: r["status"] == "succeeded",
        )
        assert rules["proposals"] >= 1, rules
        lap("label runs (llm, rules)")

        # --- review: findings from the newest run; the annotator saves a mask and accepts, a radiologist
        made = _ok(manager.post("/api/projects/deploy/findings/from-proposals/"), 201)
        assert made["created"] >= 1, made
        case = _ok(ann.get("/api/projects/deploy/next-task/", params={"stage": "annotate"}))
        task_id, finding = case["task"]["id"], case["finding"]
        volume = nib.Nifti1Image.from_bytes(_maybe_gunzip(_ok(ann.get(f"/api/scans/{scan['id']}/nifti/"))))
        shape, affine = volume.shape[:3], volume.affine
        mask = np.zeros(shape, np.uint8)
        mask[shape[0] // 4 : shape[0] // 4 + 24, shape[1] // 3 : shape[1] // 3 + 20, 12:16] = 1  # (X, Y, Z)
        upload = gzip.compress(nib.Nifti1Image(mask, affine).to_bytes())
        _ok(
            ann.post(
                f"/api/tasks/{task_id}/annotations/",
                data={"base_version": finding["current_version"], "kind": "mask"},
                files={"mask": ("mask.nii.gz", upload, "application/gzip")},
            ),
            201,
        )
        _ok(ann.post(f"/api/tasks/{task_id}/submit/", json={"decision": "accept"}))
        review = _ok(rad.get("/api/projects/deploy/next-task/", params={"stage": "review"}))
        assert review["task"]["id"] == task_id
        approved = _ok(rad.post(f"/api/tasks/{task_id}/approve/", json={}))
        assert approved["stage"] == "accepted", approved
        lap("review (mask, accept, approve)")

        # --- release: a dataset, its first version frozen (default queue), exported as rexgroundingct
        dataset = {
            "slug": "deploy",
            "name": "Deploy round trip",
            "projects": ["deploy"],
            "licence": "CC-BY-4.0",
        }
        _ok(manager.post("/api/datasets/", json=dataset), 201)
        release = _ok(manager.post("/api/datasets/deploy/releases/", json={}), 202)
        release = until(
            "the release freeze",
            lambda: _ok(manager.get(f"/api/releases/{release['id']}/")),
            lambda r: r["status"] == "frozen",
        )
        assert release["counts"]["cases"] == 1, release
        export = _ok(
            manager.post(f"/api/releases/{release['id']}/exports/", json={"format": "rexgroundingct"}), 202
        )
        export = until(
            "the rexgroundingct export",
            lambda: _ok(manager.get(f"/api/release-exports/{export['id']}/")),
            lambda e: e["status"] == "succeeded",
        )
        archive = manager.get(f"/api/release-exports/{export['id']}/archive/")
        assert archive.status_code == 200, archive.text[:2000]
        lap("release + export + download")
        total = time.monotonic() - started

        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            names = z.namelist()
            assert z.testzip() is None
            root = names[0].split("/", 1)[0]
            data = json.loads(z.read(f"{root}/dataset.json"))
            (entry,) = [e for split in ("train", "val", "test") for e in data[split]]
            segmentation = nib.Nifti1Image.from_bytes(
                _maybe_gunzip(z.read(f"{root}/{entry['segmentation']}"))
            )
            image = nib.Nifti1Image.from_bytes(_maybe_gunzip(z.read(f"{root}/{entry['image']}")))
        seg = np.asarray(segmentation.dataobj)
        assert image.shape == shape and np.allclose(image.affine, affine, atol=1e-4)
        assert seg.shape[1:] == shape, seg.shape
        hits = [f for f in range(seg.shape[0]) if np.array_equal(seg[f] > 0, mask > 0)]
        assert hits, "no channel of the exported segmentation is the saved mask"
        assert entry["pixels"][str(hits[0])] == int(mask.sum())

        # Each queue's jobs ran on its own worker; every file went to the bucket, none to a local disk.
        ran = {
            "worker-default": [
                "studies.ingest_upload",
                "labeling.run_labels",
                "releases.run_freeze",
                "releases.run_export",
            ],
            "worker-llm": ["labeling.llm.run_labels"],
            "worker-gpu": ["ml.preannotate"],
        }
        for worker, tasks in ran.items():
            for task in tasks:
                assert re.search(rf"Task {re.escape(task)}\[[-0-9a-f]+\] succeeded", procs.log(worker)), (
                    worker,
                    task,
                )
        stored = [o["Key"] for o in stack.s3.list_objects_v2(Bucket=stack.bucket).get("Contents", [])]
        assert any(k.startswith("projects/deploy/") and k.endswith((".nii", ".nii.gz")) for k in stored), (
            stored
        )
        local = [str(p) for root in stack.media_roots for p in root.rglob("*") if p.is_file()]
        assert not local, f"files written to a process's local MEDIA_ROOT instead of the bucket: {local}"
    except BaseException:
        procs.dump()
        raise

    print(f"\nthe stack on loopback started (migrations included) in {stack.start_s:.1f} s")
    print(
        f"round trip through HTTP (upload -> ingest -> pre-annotate -> label -> review -> release -> "
        f"export -> download): {total:.1f} s wall; steps: {json.dumps(timings)}"
    )
    _write_figures(total, timings, stack.start_s)


def _maybe_gunzip(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _write_figures(total: float, timings: dict[str, float], start_s: float) -> None:
    """The figures, for bench/RESULTS.md, in bench/out/ (ignored by git)."""
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "deploy_round_trip.json").write_text(
        json.dumps({"wall_s": round(total, 2), "steps_s": timings, "start_s": start_s})
    )
