"""Issue 12 benchmark: peak memory of the server while it refuses a gzip bomb, a 1024³ uint8 NIfTI mask
(1 GiB inflated, about 1 MB gzipped), POSTed to the mask-save endpoint (annotation save of a 512x512x300
CT's finding) and to the upload endpoint (an ingest job, run in-process as in the embedded default).

Each POST goes to a fresh server process (Django's request handling in-process, no network, on a
throw-away SQLite database); the figures are that process's RSS before the request (baseline) and its peak
RSS during it (Linux VmHWM after clear_refs), beside the bomb's inflated size. ``--repo DIR`` runs the
same servers on another checkout (for example the code before the fix) in the same run.

    .venv/bin/python bench/bench_gzip_bomb.py [--repo /tmp/before]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
N = 1024
MiB = 1024 * 1024


def bomb(path: Path, n: int = N) -> int:
    """Write a gzipped NIfTI-1 of n³ uint8 zeros a piece at a time; returns its inflated size."""
    import nibabel as nib
    import numpy as np

    header = nib.Nifti1Header()
    header.set_data_shape((n, n, n))
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(16 * MiB)
    with open(path, "wb") as out:
        out.write(deflate.compress(header.binaryblock + b"\0" * 4))
        for _ in range(n**3 // len(zeros)):
            out.write(deflate.compress(zeros))
        out.write(deflate.flush())
    return 352 + n**3


def _status(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def serve(endpoint: str, bomb_path: Path, repo: Path, workdir: Path) -> dict:
    """In a fresh process: set the platform up on ``repo``, then POST the bomb once, measuring RSS."""
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        MEDIA_ROOT=str(workdir / "media"),
        DJANGO_SETTINGS_MODULE="config.settings",
        INGEST_WORKERS="1",
    )
    os.environ.pop("CELERY_BROKER_URL", None)
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    import django

    django.setup()
    import gc

    import numpy as np
    from django.core.management import call_command
    from django.urls import reverse
    from rest_framework.test import APIClient

    from annotation.models import Finding, ReviewTask
    from annotation.services import task_next
    from core.models import Job, Role
    from core.services import membership_set, project_create, user_create
    from studies.models import Patient, Scan, Study

    call_command("migrate", verbosity=0)
    project = project_create(slug="bench", name="bench")
    user = user_create(username="ann", password="x" * 16)
    membership_set(project=project, user=user, role=Role.ANNOTATOR if endpoint == "mask" else Role.MANAGER)
    client = APIClient()
    client.force_authenticate(user=user)
    if endpoint == "mask":
        patient = Patient.objects.create(
            project=project, pseudonym="P1", identity_hash="1" * 64, date_shift_days=0
        )
        study = Study.objects.create(project=project, patient=patient, study_uid="2.25.1")
        scan = Scan.objects.create(
            project=project,
            study=study,
            series_uid="2.25.1.1",
            modality="CT",
            source_format="dicom",
            ndim=3,
            shape=[512, 512, 300],
            spacing=[0.7, 0.7, 1.0],
            affine=np.diag([0.7, 0.7, 1.0, 1.0]).tolist(),
            dtype="int16",
            file="none.nii",
            source_checksum="0" * 64,
        )
        finding = Finding.objects.create(project=project, study=study, scan=scan, text="A nodule.", code="2d")
        ReviewTask.objects.create(project=project, finding=finding)
        task = task_next(project=project, user=user, stages=("annotate",))
        url, fields = reverse("task-annotations", args=[task.pk]), {"base_version": 0, "kind": "mask"}
        field = "mask"
    else:
        url, fields, field = reverse("upload-create", args=[project.slug]), {}, "files"
    with open(bomb_path, "rb") as fh:
        fields[field] = fh
        gc.collect()
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # VmHWM := VmRSS
        baseline = _status("VmRSS")
        response = client.post(url, fields, format="multipart")
        peak = _status("VmHWM")
    out = {"status": response.status_code, "baseline_mb": baseline, "peak_mb": peak}
    body = response.json()
    if endpoint == "mask":
        out["answer"] = body.get("mask") or body.get("detail")
    else:
        job = Job.objects.get(pk=body["id"])
        out["answer"] = (
            f"job {job.status}; {json.dumps(job.result.get('scans', {}).get('errors', job.message))}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", type=Path, action="append", default=[], help="another checkout to measure")
    parser.add_argument("--serve", choices=["mask", "upload"], help=argparse.SUPPRESS)
    parser.add_argument("--bomb", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        print(json.dumps(serve(args.serve, args.bomb, args.repo[0], args.workdir)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-bomb-") as tmp:
        path = Path(tmp) / "mask.nii.gz"
        inflated = bomb(path)
        size = path.stat().st_size
        print(
            f"bomb: {N}x{N}x{N} uint8 NIfTI, {size / 1e6:.2f} MB gzipped, {inflated / MiB:.0f} MiB inflated"
        )
        print("| code | endpoint | answer | server RSS before MB | peak RSS MB | growth MB | inflated MB |")
        print("|---|---|---|---|---|---|---|")
        for repo in [REPO, *args.repo]:
            for endpoint in ("mask", "upload"):
                workdir = Path(tempfile.mkdtemp(dir=tmp))
                done = subprocess.run(
                    [sys.executable, __file__, "--serve", endpoint, "--bomb", str(path), "--repo", str(repo),
                     "--workdir", str(workdir)],
                    capture_output=True, text=True, cwd=repo,
                )  # fmt: skip
                if done.returncode != 0:
                    print(f"| {repo} | {endpoint} | server failed: {done.stderr.strip()[-300:]} | | | | |")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                name = "this tree" if repo == REPO else str(repo)
                answer = f"{r['status']}: {str(r['answer'])[:110]}"
                print(
                    f"| {name} | {endpoint} | {answer} | {r['baseline_mb']:.0f} | {r['peak_mb']:.0f} | "
                    f"{r['peak_mb'] - r['baseline_mb']:.0f} | {inflated / 1e6:.0f} |"
                )


if __name__ == "__main__":
    main()
