"""Upload API throughput for a ~200 MB zip of DICOM files, over HTTP on loopback (gunicorn).

Three figures in one run:
- baseline: the same request body to a WSGI app that only reads and discards it (the HTTP ceiling);
- upload: POST /api/projects/<slug>/uploads/ with a broker configured (Redis) so the request stores the
  files and queues the job (what a user waits for before the 202);
- upload + ingest: the same with no broker, the job running in-process inside the request.

    .venv/bin/python bench/bench_upload.py
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import OUT, REAL_CT, REPO, make_series  # noqa: E402

SLICES = 400  # 400 x 512 KiB = ~205 MB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_zip() -> Path:
    archive = OUT / "upload.zip"
    if archive.exists():
        return archive
    series = OUT / "upload-series"
    if len(list(series.glob("*.dcm"))) != SLICES:
        shutil.rmtree(series, ignore_errors=True)
        make_series(REAL_CT, series, slices=SLICES, spacing=0.8, seed=99)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(series.glob("*.dcm")):
            zf.write(p, f"series/{p.name}")
    return archive


def serve(app: str, env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", app, "-b", f"127.0.0.1:{port}", "-w", "1", "--timeout", "600"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(proc.stderr.read().decode()[-2000:])


def post(url: str, archive: Path, token: str | None) -> tuple[float, int, str]:
    """POST the archive as multipart ``files``, after a tiny upload that loads the server's code (a
    running server has answered uploads before)."""
    import requests

    headers = {"Authorization": f"Token {token}"} if token else {}
    requests.post(url, files={"files": ("warm-up.dcm", b"x")}, headers=headers, timeout=60)
    with open(archive, "rb") as fh:
        prepared = requests.Request(
            "POST", url, files={"files": (archive.name, fh)}, headers=headers
        ).prepare()
    with requests.Session() as session:
        t0 = time.perf_counter()
        response = session.send(prepared, timeout=900)
        return time.perf_counter() - t0, response.status_code, response.text


def setup_db(work: Path, env: dict) -> str:
    script = (
        "import django; django.setup();"
        "from django.core.management import call_command; call_command('migrate', verbosity=0);"
        "from core.services import project_create, user_create, membership_set;"
        "from knox.models import AuthToken;"
        "u = user_create(username='bench', password='bench-password');"
        "p = project_create(slug='bench', owner=u);"
        "print(AuthToken.objects.create(user=u)[1])"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    if not REAL_CT.is_dir():
        sys.exit(f"{REAL_CT} is absent")
    archive = build_zip()
    mb = archive.stat().st_size / 2**20
    print(f"zip: {archive} {mb:.1f} MB")
    results = {}

    port = free_port()
    proc = serve("bench.sink_wsgi:application", dict(os.environ), port)
    try:
        seconds, status, _ = post(f"http://127.0.0.1:{port}/", archive, None)
        results["baseline_sink"] = {"seconds": seconds, "mb_s": mb / seconds, "status": status}
    finally:
        proc.terminate()
        proc.wait()

    for label, broker in (("upload_queued", "redis://127.0.0.1:6379/14"), ("upload_and_ingest", "")):
        work = Path(tempfile.mkdtemp(prefix="bench-upload-"))
        env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{work / 'db.sqlite3'}",
            MEDIA_ROOT=str(work / "media"),
            CELERY_BROKER_URL=broker,
            DJANGO_SETTINGS_MODULE="config.settings",
            UPLOAD_MAX_BYTES=str(2**31),
        )
        token = setup_db(work, env)
        port = free_port()
        proc = serve("config.wsgi:application", env, port)
        try:
            seconds, status, body = post(
                f"http://127.0.0.1:{port}/api/projects/bench/uploads/", archive, token
            )
            job = json.loads(body) if status == 202 else {}
            results[label] = {
                "seconds": seconds,
                "mb_s": mb / seconds,
                "status": status,
                "job": job.get("status"),
            }
        finally:
            proc.terminate()
            proc.wait()
            shutil.rmtree(work, ignore_errors=True)
        if broker:
            import redis

            redis.Redis.from_url(broker).flushdb()

    base = results["baseline_sink"]["mb_s"]
    for label, r in results.items():
        print(
            f"{label:<18} {r['seconds']:6.2f} s  {r['mb_s']:7.1f} MB/s  "
            f"({r['mb_s'] / base:4.2f}x of the sink)  HTTP {r['status']} {r.get('job') or ''} "
            f"{'' if r.get('stored') is None else str(r['stored']) + ' series stored'}"
        )
    (OUT / "upload.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
