"""Issue 13 benchmark: people acting at once, on the embedded SQLite default and on PostgreSQL, against a
live server (gunicorn, 2 worker processes × 4 threads, DEBUG off, jobs in-process as in the embedded
default). Real parallel clients: one thread and one ``requests.Session`` each, released together by a
barrier every round.

- saves ×2 and saves ×8: 20 rounds in which 2 (or 8) saves of one finding name its current version at
  once (one annotator holding the task, e.g. two tabs or a retry). Right: one 201 a round, the rest 409;
  afterwards the finding's versions are 1..N with N the number of 201s (none lost, none twice).
- next-task ×5: 8 rounds in which 5 annotators ask for their next task at once (then each rejects what it
  got, outside the timing, so the next round takes new tasks). Right: 200 each, 5 different tasks a round,
  no task given to two people.
- ingest ×2: 3 rounds in which the same 30-slice CT series (from ``../shared/data/ct/lungdx-a0002``, new
  UIDs each round) is uploaded twice at once. Right: both 202, one job stores the series, the other lists
  it as a duplicate, one stored scan.

Each code tree (this one, and with ``--repo DIR`` another checkout, e.g. the code before the change) runs
against a scratch SQLite file in its own embedded settings (``DATABASES["default"]["NAME"]`` moved to the
scratch folder, its ``OPTIONS`` as the tree has them) and against a scratch PostgreSQL database
(``groundlab_bench_conc``, dropped and re-created).

    .venv/bin/python bench/bench_concurrency.py --repo /tmp/before      # before and after, one run
    .venv/bin/python bench/bench_concurrency.py --databases sqlite     # this tree, SQLite only
"""

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import OUT, REAL_CT, REPO, make_series  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"
PG_DB = "groundlab_bench_conc"
SLUG = "bench-conc"
ANNOTATORS = 5
NEXT_ROUNDS = 8
SAVE_ROUNDS = 20
INGEST_ROUNDS = 3
TASKS = NEXT_ROUNDS * ANNOTATORS + 2  # and one each for the two save scenarios
TIMEOUT = 300

SETTINGS = """import os

from config.settings import *  # noqa: F401,F403

if os.environ.get("BENCH_SQLITE"):  # the tree's embedded default, its file in the scratch folder
    DATABASES["default"]["NAME"] = os.environ["BENCH_SQLITE"]  # noqa: F405
"""

# Run by the tree under test (its own code): migrate, then a project with one review case of
# TASKS open findings, its people and their API tokens (JSON on stdout).
SETUP = """
import json, sys
from pathlib import Path

import django

django.setup()
from django.core.management import call_command

call_command("migrate", verbosity=0)
from knox.models import AuthToken

from annotation.models import Finding, ReviewTask
from core.models import Role
from core.services import membership_set, project_create, user_create
from tests.annotation.factories import review_case

slug, folder, tasks, annotators = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
project = project_create(slug=slug, name="Concurrency bench")
review_case(project, folder, findings="A 14 mm nodule in the right upper lobe. Small left pleural effusion.")
model = Finding.objects.filter(project=project).first()
for i in range(tasks - Finding.objects.filter(project=project).count()):
    extra = Finding.objects.create(project=project, study=model.study, scan=model.scan, report=model.report,
                                   text=f"finding {i}")
    ReviewTask.objects.create(project=project, finding=extra)
people = {"saver": Role.ANNOTATOR, "boss": Role.MANAGER}
people.update({f"ann{i}": Role.ANNOTATOR for i in range(annotators)})
tokens = {}
for name, role in people.items():
    user = user_create(username=name, password="pw-" + "x" * 12)
    membership_set(project=project, user=user, role=role)
    tokens[name] = AuthToken.objects.create(user)[1]
print(json.dumps({"tokens": tokens, "shape": model.scan.shape}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_reset() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_DB}")


class Target:
    """One code tree on one database: its scratch folder, environment and server."""

    def __init__(self, repo: Path, label: str, database: str):
        self.repo, self.label, self.database = repo, label, database
        self.work = OUT / "concurrency" / f"{label}-{database}"
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "py").mkdir(parents=True)
        (self.work / "py" / "bench_conc_settings.py").write_text(SETTINGS)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
        env.update(
            DJANGO_SETTINGS_MODULE="bench_conc_settings",
            PYTHONPATH=f"{self.work / 'py'}{os.pathsep}{repo}",
            MEDIA_ROOT=str(self.work / "media"),
            SECRET_KEY="bench-" + "k3y" * 20,
            DEBUG="false",
            LOG_LEVEL="ERROR",
        )
        if database == "sqlite":
            env["BENCH_SQLITE"] = str(self.work / "db.sqlite3")
        else:
            env["DATABASE_URL"] = f"{PG}/{PG_DB}"
            pg_reset()
        self.env = env
        self.proc: subprocess.Popen | None = None

    def setup(self) -> dict:
        done = subprocess.run(
            [sys.executable, "-", SLUG, str(self.work / "case"), str(TASKS), str(ANNOTATORS)],
            input=SETUP, cwd=self.repo, env=self.env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    def serve(self) -> str:
        port = free_port()
        log = open(self.work / "server.log", "w")  # noqa: SIM115 - the server's for its life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "-b", f"127.0.0.1:{port}",
             "-w", "2", "--threads", "4", "--timeout", str(TIMEOUT)],
            cwd=self.repo, env=self.env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        import requests

        for _ in range(600):
            try:
                requests.get(f"{url}/api/projects/", timeout=60)
                return url
            except requests.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError((self.work / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the results straight from the database (no code of either tree)."""
        if self.database == "sqlite":
            with sqlite3.connect(self.env["BENCH_SQLITE"]) as conn:
                return conn.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(f"{PG}/{PG_DB}") as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchall()


def at_once(calls) -> list[tuple[int, float, dict | str]]:
    """Run each ``call(session)`` in its own thread, released together: (status, seconds, body) each
    (status 0: no answer)."""
    import requests

    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i, call):
        with requests.Session() as session:
            barrier.wait()
            t0 = time.perf_counter()
            try:
                r = call(session)
            except requests.RequestException as exc:
                out[i] = (0, time.perf_counter() - t0, str(exc))
                return
            seconds = time.perf_counter() - t0
            try:
                body = r.json()
            except ValueError:
                body = r.text[:300]
            out[i] = (r.status_code, seconds, body)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def summary(results: list[tuple[int, float, object]], check: str) -> dict:
    seconds = sorted(s for _, s, _ in results)
    p95 = seconds[max(0, int(round(0.95 * len(seconds))) - 1)]
    return {
        "requests": len(results),
        "statuses": dict(sorted(Counter(code for code, _, _ in results).items())),
        "p50_ms": round(1000 * statistics.median(seconds), 1),
        "p95_ms": round(1000 * p95, 1),
        "check": check,
    }


def bench_saves(target: Target, url: str, tokens: dict, shape: list[int], clients: int) -> dict:
    import requests

    headers = {"Authorization": f"Token {tokens['saver']}"}
    opened = requests.get(
        f"{url}/api/projects/{SLUG}/next-task/", params={"stage": "annotate"}, headers=headers
    )
    opened.raise_for_status()
    task_id, finding_id = opened.json()["task"]["id"], opened.json()["finding"]["id"]
    x, y, z = shape
    results, good_rounds = [], 0
    for round_ in range(SAVE_ROUNDS):
        base = target.query("SELECT current_version FROM annotation_finding WHERE id = ?", (finding_id,))[0][
            0
        ]
        bodies = [
            {"base_version": base, "kind": "box", "box": [0, 0, 0, 2 + (round_ + i) % (x - 2), y, z]}
            for i in range(clients)
        ]
        answers = at_once(
            [
                lambda s, b=b: s.post(
                    f"{url}/api/tasks/{task_id}/annotations/", json=b, headers=headers, timeout=TIMEOUT
                )  # fmt: skip
                for b in bodies
            ]
        )
        codes = Counter(code for code, _, _ in answers)
        good_rounds += codes == Counter({201: 1, 409: clients - 1})
        results += answers
    versions = [v for (v,) in target.query(
        "SELECT version FROM annotation_annotation WHERE finding_id = ? ORDER BY version", (finding_id,)
    )]  # fmt: skip
    current = target.query("SELECT current_version FROM annotation_finding WHERE id = ?", (finding_id,))[0][0]
    created = sum(1 for code, _, _ in results if code == 201)
    intact = versions == list(range(1, created + 1)) and current == created
    check = f"{good_rounds}/{SAVE_ROUNDS} rounds one 201 + {clients - 1}×409; versions 1..{current}" + (
        " contiguous" if intact else f" NOT INTACT ({len(versions)} rows for {created} saves)"
    )
    # the task goes back to the queue for the next scenario
    requests.post(f"{url}/api/tasks/{task_id}/submit/", json={"decision": "reject"}, headers=headers)
    return summary(results, check)


def bench_next_task(target: Target, url: str, tokens: dict) -> dict:
    import requests

    headers = [{"Authorization": f"Token {tokens[f'ann{i}']}"} for i in range(ANNOTATORS)]
    results, given_to, good_rounds = [], {}, 0
    for _round in range(NEXT_ROUNDS):
        answers = at_once(
            [
                lambda s, h=h: s.get(
                    f"{url}/api/projects/{SLUG}/next-task/",
                    params={"stage": "annotate"},
                    headers=h,
                    timeout=TIMEOUT,
                )  # fmt: skip
                for h in headers
            ]
        )
        results += answers
        ids = [body["task"]["id"] if code == 200 else None for code, _, body in answers]
        good_rounds += all(ids) and len(set(ids)) == ANNOTATORS
        for who, task_id in enumerate(ids):
            if task_id is None:
                continue
            given_to.setdefault(task_id, set()).add(who)
            requests.post(
                f"{url}/api/tasks/{task_id}/submit/", json={"decision": "reject"}, headers=headers[who]
            )
    shared = sum(1 for people in given_to.values() if len(people) > 1)
    check = (
        f"{good_rounds}/{NEXT_ROUNDS} rounds 5 different tasks; {len(given_to)} tasks taken, {shared} by two"
    )
    return summary(results, check)


def bench_ingest(target: Target, url: str, tokens: dict) -> dict:
    import requests

    headers = {"Authorization": f"Token {tokens['boss']}"}
    results, good_rounds, outcomes = [], 0, Counter()
    for round_ in range(INGEST_ROUNDS):
        series = make_series(REAL_CT, target.work / f"series{round_}", slices=30, seed=1300 + round_)
        payload = [(p.name, p.read_bytes()) for p in series]

        def upload(s, payload=payload):
            files = [("files", (name, data, "application/dicom")) for name, data in payload]
            return s.post(
                f"{url}/api/projects/{SLUG}/uploads/", files=files, headers=headers, timeout=TIMEOUT
            )

        before = target.query("SELECT count(*) FROM studies_scan")[0][0]
        answers = at_once([upload, upload])
        results += answers
        stored = target.query("SELECT count(*) FROM studies_scan")[0][0] - before
        kinds = []
        for code, _, body in answers:
            if code != 202:
                kinds.append(f"http {code}")
                continue
            job = requests.get(f"{url}/api/jobs/{body['id']}/", headers=headers, timeout=TIMEOUT).json()
            scans = (job.get("result") or {}).get("scans") or {}
            if job["status"] != "succeeded":
                kinds.append(f"job {job['status']}")
            elif scans.get("errors"):
                kinds.append("error")
            elif scans.get("stored"):
                kinds.append("stored")
            elif scans.get("duplicates"):
                kinds.append("duplicate")
            else:
                kinds.append("nothing")
        outcomes.update(kinds)
        good_rounds += sorted(kinds) == ["duplicate", "stored"] and stored == 1
    check = f"{good_rounds}/{INGEST_ROUNDS} rounds one stored + one duplicate; " + ", ".join(
        f"{k} {n}" for k, n in sorted(outcomes.items())
    )
    return summary(results, check)


def run(repo: Path, label: str, database: str) -> list[dict]:
    target = Target(repo, label, database)
    print(f"{label} / {database}: setting up", flush=True)
    case = target.setup()
    rows = []
    try:
        url = target.serve()
        for name, bench in (
            ("saves ×2", lambda: bench_saves(target, url, case["tokens"], case["shape"], 2)),
            ("saves ×8", lambda: bench_saves(target, url, case["tokens"], case["shape"], 8)),
            ("next-task ×5", lambda: bench_next_task(target, url, case["tokens"])),
            ("ingest ×2", lambda: bench_ingest(target, url, case["tokens"])),
        ):
            row = {"code": label, "database": database, "scenario": name, **bench()}
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        target.stop()
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| code | database | scenario | requests | answers | p50 ms | p95 ms | check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        answers = ", ".join(f"{n}×{code}" for code, n in r["statuses"].items())
        lines.append(
            f"| {r['code']} | {r['database']} | {r['scenario']} | {r['requests']} | {answers} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['check']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="another checkout to run the same against (e.g. before)")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    if not REAL_CT.is_dir():
        sys.exit(f"{REAL_CT} is absent (../shared/data)")
    trees = [(REPO, "this tree")] + ([(args.repo.resolve(), "before")] if args.repo else [])
    rows = []
    for database in args.databases:
        for repo, label in trees:
            rows += run(repo, label, database)
    (OUT / "concurrency.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
