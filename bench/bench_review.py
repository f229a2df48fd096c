"""Issue 6 benchmark: the review API under load. With 10,000 studies and 100,000 findings in PostgreSQL,
p50/p95/p99 of the next-task, case (task detail) and finding-list endpoints under 8 concurrent users,
beside a trivial authenticated endpoint (``GET /api/projects/``) measured the same way in the same run.

A throw-away PostgreSQL database (``groundlab_bench_review``, dropped and re-created) is migrated and
filled straight through the ORM: 1 project, 8 annotators, 2 radiologists, 1 researcher (memberships and
DRF tokens), 10,000 patients / studies, each with one CT scan row (512×512×300, a fake file key: nothing
measured reads the file) and one report whose findings section holds its 10 findings' sentences; 100,000
findings (version 1 a box annotation, like a region proposal's) each with a review task (stage annotate,
random priority), ``--review-tasks`` of them already annotated and waiting in stage review.

The app is served by gunicorn on loopback (DEBUG off, ``--workers`` each with one thread). The load
generator is this process: one thread and one ``requests.Session`` per user (default 6 annotators and 2
radiologists, 8 at once), each looping: next-task (claim or keep one's task) → case → finding list
(``?project=..&limit=50``) → projects (the baseline) → with probability ``--submit`` submit (annotators:
accept or reject) or approve (radiologists), which moves them on to a new task. Samples of the first
``--warmup`` seconds are dropped. Before the load, the SQL queries each endpoint runs are counted in
process (Django test client, ``CaptureQueriesContext``).

    .venv/bin/python bench/bench_review.py                       # seed, then 60 s per worker count
    .venv/bin/python bench/bench_review.py --workers 4 --seconds 30 --reuse
"""

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REPO  # noqa: E402

DB_NAME = "groundlab_bench_review"
PG = "postgres://postgres@127.0.0.1:5432"
SLUG = "bench-review"
TARGET_MS = 100.0
SENTENCES = [
    ("There is a small left pleural effusion.", "Pleural Effusion", "left pleural space", "left"),
    ("A 6 mm nodule in the right upper lobe.", "Lung nodule", "right upper lobe", "right"),
    ("Patchy consolidation in the left lower lobe.", "Consolidation", "left lower lobe", "left"),
    ("Mild cardiomegaly.", "Cardiomegaly", "heart", ""),
    ("Centrilobular emphysema in both upper lobes.", "Emphysema", "upper lobes", "bilateral"),
    ("Ground-glass opacity in the right middle lobe.", "Ground-glass opacity", "right middle lobe", "right"),
    ("Subsegmental atelectasis at the left base.", "Atelectasis", "left lung base", "left"),
    ("A calcified granuloma in the right lower lobe.", "Calcified nodule", "right lower lobe", "right"),
    ("Mediastinal lymph node of 12 mm short axis.", "Lymphadenopathy", "mediastinum", ""),
    ("Bronchial wall thickening in the lower lobes.", "Bronchial wall thickening", "lower lobes", "both"),
]


def _database_reset() -> None:
    import psycopg

    assert DB_NAME.startswith("groundlab_bench_"), DB_NAME  # never the app's own or a test database
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def _django(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = f"{PG}/{DB_NAME}"
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def _seed(studies: int, per_study: int, review_tasks: int, seed: int = 6) -> dict:
    """Fill the migrated bench database; returns the users' tokens by role."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from knox.models import AuthToken

    from annotation.models import Annotation, AnnotationKind, Finding, ReviewTask, Stage
    from core.models import Role
    from core.services import membership_set, project_create
    from studies.models import Patient, Report, Scan, Study

    rng = random.Random(seed)
    batch = 5000
    project = project_create(slug=SLUG, name="bench review", label_schema="rexgroundingct")
    User = get_user_model()
    tokens: dict[str, list[str]] = defaultdict(list)
    people = [("annotator", Role.ANNOTATOR, 8), ("radiologist", Role.RADIOLOGIST, 2), ("researcher",
              Role.RESEARCHER, 1)]  # fmt: skip
    annotators = []
    for name, role, count in people:
        for i in range(count):
            user = User.objects.create_user(username=f"{name}{i}", password=None)
            membership_set(project=project, user=user, role=role)
            tokens[role].append(AuthToken.objects.create(user=user)[1])
            if role == Role.ANNOTATOR:
                annotators.append(user)

    patients = Patient.objects.bulk_create(
        [Patient(project=project, pseudonym=f"P{i:06d}", identity_hash=f"{i:064x}",
                 date_shift_days=-rng.randint(0, 365)) for i in range(studies)],
        batch_size=batch)  # fmt: skip
    study_rows = Study.objects.bulk_create(
        [Study(project=project, patient=p, study_uid=f"2.25.{i}", modality="CT", description="CT CHEST")
         for i, p in enumerate(patients)], batch_size=batch)  # fmt: skip
    affine = [[-0.7, 0, 0, 180.0], [0, -0.7, 0, 180.0], [0, 0, 1.0, -300.0], [0, 0, 0, 1]]
    scans = Scan.objects.bulk_create(
        [Scan(project=project, study=s, series_uid=f"2.25.{i}.1", modality="CT", source_format="dicom",
              ndim=3, shape=[512, 512, 300], spacing=[0.7, 0.7, 1.0], affine=affine, dtype="int16",
              file=f"projects/{SLUG}/scans/scan-{i}.nii.gz", file_size=90_000_000,
              source_checksum=f"{i:064x}")
         for i, s in enumerate(study_rows)], batch_size=batch)  # fmt: skip
    text = " ".join(s for s, *_ in SENTENCES[:per_study])
    reports = Report.objects.bulk_create(
        [Report(project=project, study=s, external_id=f"R{i:06d}", source="csv", raw_text=text, findings=text,
                indication="Cough.", impression="See findings.", checksum=f"{i:064x}")
         for i, s in enumerate(study_rows)], batch_size=batch)  # fmt: skip
    spans, at = [], 0
    for sentence, code, location, side in SENTENCES[:per_study]:
        spans.append((at, at + len(sentence), sentence, code, location, side))
        at += len(sentence) + 1
    findings = [
        Finding(project=project, study=study, scan=scan, report=report, section="findings", start=start,
                end=end, text=sentence, code=code, location=location, laterality=side, current_version=1)
        for study, scan, report in zip(study_rows, scans, reports, strict=True)
        for start, end, sentence, code, location, side in spans
    ]  # fmt: skip
    findings = Finding.objects.bulk_create(findings, batch_size=batch)
    Annotation.objects.bulk_create(
        [Annotation(finding=f, version=1, kind=AnnotationKind.BOX, box=[200, 180, 120, 260, 240, 150],
                    voxels=60 * 60 * 30) for f in findings], batch_size=batch)  # fmt: skip
    in_review = set(rng.sample(range(len(findings)), review_tasks))
    ReviewTask.objects.bulk_create(
        [ReviewTask(project=project, finding=f, priority=rng.random(),
                    stage=Stage.REVIEW if k in in_review else Stage.ANNOTATE,
                    annotated_by=rng.choice(annotators) if k in in_review else None,
                    decision="accept" if k in in_review else "")
         for k, f in enumerate(findings)], batch_size=batch)  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return dict(tokens)


def _tokens() -> dict:
    """New tokens for the seeded users (knox keeps only digests: a stored token cannot be read back)."""
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    tokens: dict[str, list[str]] = defaultdict(list)
    users = get_user_model().objects.filter(username__regex=r"^(annotator|radiologist|researcher)[0-9]+$")
    for user in users.order_by("username"):
        role = user.username.rstrip("0123456789")
        tokens[role].append(AuthToken.objects.create(user=user)[1])
    return dict(tokens)


def _query_counts(tokens: dict) -> list[tuple[str, int, float]]:
    """(endpoint, SQL queries, ms in process) for one call of each endpoint, by the test client."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    annotator = Client(HTTP_AUTHORIZATION=f"Token {tokens['annotator'][-1]}")
    radiologist = Client(HTTP_AUTHORIZATION=f"Token {tokens['radiologist'][-1]}")
    researcher = Client(HTTP_AUTHORIZATION=f"Token {tokens['researcher'][0]}")
    out = []

    def call(name, client, url):
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            response = client.get(url)
            ms = (time.perf_counter() - t0) * 1000
        assert response.status_code == 200, (url, response.status_code)
        out.append((name, len(ctx.captured_queries), ms))
        return response.json()

    for url in ("/api/projects/", f"/api/findings/?project={SLUG}&limit=50", "/api/tasks/1/"):
        researcher.get(url)  # warm-up: the first call of a process pays for imports and cold caches
    case = call("next-task (annotate, claims)", annotator, f"/api/projects/{SLUG}/next-task/?stage=annotate")
    call("next-task (annotate, held)", annotator, f"/api/projects/{SLUG}/next-task/?stage=annotate")
    call("next-task (review, claims)", radiologist, f"/api/projects/{SLUG}/next-task/?stage=review")
    call("case", annotator, f"/api/tasks/{case['task']['id']}/")
    call("finding list", annotator, f"/api/findings/?project={SLUG}&limit=50")
    call("finding list (researcher)", researcher, f"/api/findings/?project={SLUG}&limit=50")
    call("baseline: projects", annotator, "/api/projects/")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(workers: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    import requests

    port = _free_port()
    env = dict(os.environ, DEBUG="False", SECRET_KEY="bench-review-" + "x" * 40, ALLOWED_HOSTS="127.0.0.1",
               DATABASE_URL=f"{PG}/{DB_NAME}", MEDIA_ROOT=str(workdir / "media"))  # fmt: skip
    cmd = [str(REPO / ".venv" / "bin" / "gunicorn"), "config.wsgi:application", "--bind",
           f"127.0.0.1:{port}", "--workers", str(workers), "--threads", "1", "--log-level", "warning",
           "--chdir", str(REPO)]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(f"{base}/api/projects/", timeout=2).status_code in (401, 403):
                return server, base
        except requests.RequestException:  # not listening yet, or busy starting
            pass
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError("gunicorn did not answer")


def _user(base: str, token: str, stage: str, stop_at: float, samples: list, args, seed: int) -> None:
    import requests

    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"

    def timed(name, method, url, **kw):
        t0 = time.perf_counter()
        response = session.request(method, url, timeout=30, **kw)
        samples.append((t0, name, time.perf_counter() - t0, response.status_code))
        return response

    while time.perf_counter() < stop_at:
        url = f"{base}/api/projects/{SLUG}/next-task/?stage={stage}"
        response = timed(f"next-task ({stage})", "GET", url)
        if response.status_code != 200:
            time.sleep(0.2)
            continue
        task = response.json()["task"]["id"]
        timed("case", "GET", f"{base}/api/tasks/{task}/")
        timed("finding list", "GET", f"{base}/api/findings/?project={SLUG}&limit=50")
        timed("baseline: projects", "GET", f"{base}/api/projects/")
        if rng.random() < args.submit:
            if stage == "annotate":
                body = {"decision": "accept" if rng.random() < 0.8 else "reject"}
                timed("submit", "POST", f"{base}/api/tasks/{task}/submit/", json=body)
            else:
                timed("approve", "POST", f"{base}/api/tasks/{task}/approve/", json={})
        if args.think:
            time.sleep(rng.uniform(0, 2 * args.think))


def _load(base: str, tokens: dict, args) -> tuple[dict, float]:
    users = [(t, "annotate") for t in tokens["annotator"][: args.annotators]]
    users += [(t, "review") for t in tokens["radiologist"][: args.radiologists]]
    samples: list = []
    start = time.perf_counter()
    stop_at = start + args.warmup + args.seconds
    threads = [
        threading.Thread(target=_user, args=(base, t, stage, stop_at, samples, args, k))
        for k, (t, stage) in enumerate(users)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_name: dict[str, list] = defaultdict(list)
    for t0, name, seconds, code in samples:
        if t0 >= start + args.warmup:
            by_name[name].append((seconds, code))
    return by_name, args.seconds


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _table(by_name: dict, seconds: float) -> None:
    order = ["next-task (annotate)", "next-task (review)", "case", "finding list", "submit", "approve",
             "baseline: projects"]  # fmt: skip
    print("| endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | "
          f"p95 < {TARGET_MS:.0f} ms | errors |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    total = 0
    for name in order:
        rows = by_name.get(name)
        if not rows:
            continue
        ms = [s * 1000 for s, _ in rows]
        errors = sum(1 for _, code in rows if code >= 400)
        p95 = _pct(ms, 95)
        total += len(rows)
        ok = "yes" if p95 < TARGET_MS else "NO"
        print(f"| {name} | {len(rows)} | {len(rows) / seconds:.1f} | {_pct(ms, 50):.1f} | {p95:.1f} | "
              f"{_pct(ms, 99):.1f} | {max(ms):.1f} | {ok} | {errors} |")  # fmt: skip
    print(f"all requests: {total / seconds:.1f} req/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--findings-per-study", type=int, default=10, choices=range(1, len(SENTENCES) + 1))
    parser.add_argument("--review-tasks", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3, 4], help="gunicorn workers per run")
    parser.add_argument("--annotators", type=int, default=6, choices=range(0, 9))
    parser.add_argument("--radiologists", type=int, default=2, choices=range(0, 3))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--submit", type=float, default=0.25, help="chance per loop of submit / approve")
    parser.add_argument("--think", type=float, default=0.0, help="mean pause (s) after each loop; 0: none")
    parser.add_argument("--reuse", action="store_true", help="keep the database of an earlier run")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-review-"))
    print(f"{os.cpu_count()} cores (load generator, gunicorn and PostgreSQL share them); "
          f"{args.annotators} annotators + {args.radiologists} radiologists at once", flush=True)  # fmt: skip
    if not args.reuse:
        _database_reset()
    _django(workdir)
    from django.core.management import call_command
    from django.db import connection

    if args.reuse:
        tokens = _tokens()
    else:
        t0 = time.perf_counter()
        call_command("migrate", verbosity=0)
        tokens = _seed(args.studies, args.findings_per_study, args.review_tasks)
        print(f"seeded in {time.perf_counter() - t0:.0f} s (migrate included)", flush=True)
    with connection.cursor() as cursor:
        counts = {}
        for table in ("studies_study", "annotation_finding", "annotation_reviewtask"):
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed names
            counts[table] = cursor.fetchone()[0]
        cursor.execute("SELECT stage, count(*) FROM annotation_reviewtask GROUP BY stage ORDER BY stage")
        stages = dict(cursor.fetchall())
    print(f"rows: {counts}; tasks by stage: {stages}")
    print("\nSQL queries per request (in process, test client):\n")
    print("| endpoint | queries | ms |\n|---|---|---|")
    for name, n, ms in _query_counts(tokens):
        print(f"| {name} | {n} | {ms:.1f} |")
    connection.close()
    for workers in args.workers:
        load = os.getloadavg()[0]  # other work on the machine skews every figure: say how busy it was
        server, base = _serve(workers, workdir)
        try:
            by_name, seconds = _load(base, tokens, args)
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"\ngunicorn --workers {workers} --threads 1, {args.seconds:.0f} s after {args.warmup:.0f} s "
              f"warm-up, think time {args.think:g} s (load average before: {load:.2f}):\n")  # fmt: skip
        _table(by_name, seconds)


if __name__ == "__main__":
    main()
