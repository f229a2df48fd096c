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
import re
import time
import zipfile
from collections.abc import Callable

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.conftest import REPO
from tests.deploy import stack as compose
from tests.deploy.stack import HOST, PASSWORD, Api, _ok

pytestmark = [pytest.mark.slow, pytest.mark.services]
stack = compose.stack  # the fixture that starts and stops the stack


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
            files = json.loads(z.read(f"{root}/dataset_platform.json"))["cases"][entry["name"]]
            segmentation = nib.Nifti1Image.from_bytes(
                _maybe_gunzip(z.read(f"{root}/segmentations/{entry['name']}"))
            )
            image = nib.Nifti1Image.from_bytes(_maybe_gunzip(z.read(f"{root}/{files['image']}")))
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
