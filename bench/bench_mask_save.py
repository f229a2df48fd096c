"""Issue 6 benchmark: server time of saving an edited 512x512x300 mask through the review API (multipart
upload of a gzipped NIfTI, parse, checks against the scan, a new version stored with its file, history),
measured around Django's request handling in-process (no network), beside the old encoding path
(nibabel ``to_bytes`` + ``gzip``) timed in the same run. Target: < 500 ms.

    .venv/bin/python bench/bench_mask_save.py [--repeats 5]
"""

import argparse
import gzip
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import django_setup  # noqa: E402

SHAPE = (512, 512, 300)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mask-") as tmp:
        django_setup(Path(tmp))
        import nibabel as nib
        import numpy as np
        from django.urls import reverse
        from rest_framework.test import APIClient

        from annotation.models import Finding, ReviewTask
        from annotation.services import task_next
        from core.models import Role
        from core.services import membership_set, project_create, user_create
        from studies.models import Patient, Scan, Study

        project = project_create(slug="bench", name="bench")
        user = user_create(username="ann", password="x" * 16)
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
        patient = Patient.objects.create(
            project=project, pseudonym="P1", identity_hash="1" * 64, date_shift_days=0
        )
        study = Study.objects.create(project=project, patient=patient, study_uid="2.25.1")
        affine = np.diag([0.7, 0.7, 1.0, 1.0])
        scan = Scan.objects.create(
            project=project,
            study=study,
            series_uid="2.25.1.1",
            modality="CT",
            source_format="dicom",
            ndim=3,
            shape=list(SHAPE),
            spacing=[0.7, 0.7, 1.0],
            affine=affine.tolist(),
            dtype="int16",
            file="none.nii",
            source_checksum="0" * 64,
        )
        finding = Finding.objects.create(project=project, study=study, scan=scan, text="A nodule.", code="2d")
        ReviewTask.objects.create(project=project, finding=finding)
        task = task_next(project=project, user=user, stages=("annotate",))
        mask = np.zeros(SHAPE, bool, order="F")
        mask[100:300, 150:350, 50:200] = True
        upload = gzip.compress(nib.Nifti1Image(mask.astype(np.uint8), affine).to_bytes(), compresslevel=1)
        client = APIClient()
        client.force_authenticate(user=user)
        url = reverse("task-annotations", args=[task.pk])
        times = []
        for i in range(args.repeats):
            body = io.BytesIO(upload)
            body.name = "edit.nii.gz"
            t0 = time.perf_counter()
            response = client.post(url, {"base_version": i, "kind": "mask", "mask": body}, format="multipart")
            times.append(time.perf_counter() - t0)
            assert response.status_code == 201, response.content
        from studies.ingest.volume_io import nifti_mask_gz

        old, new = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            gzip.compress(nib.Nifti1Image(mask.astype(np.uint8), affine).to_bytes(), compresslevel=1)
            old.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            nifti_mask_gz(mask, affine)
            new.append(time.perf_counter() - t0)
        size = f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}"
        print(f"mask {size}, upload {len(upload) / 1e6:.2f} MB gzipped NIfTI, {args.repeats} saves")
        print("| | median ms | best ms | target |")
        print("|---|---|---|---|")
        rows = [
            ("save through the API (server time)", times, "< 500"),
            ("encoding the stored mask now (nifti_mask_gz)", new, ""),
            ("encoding before (nibabel to_bytes + gzip)", old, ""),
        ]
        for name, values, target in rows:
            print(
                f"| {name} | {1000 * statistics.median(values):.0f} | {1000 * min(values):.0f} | {target} |"
            )


if __name__ == "__main__":
    main()
