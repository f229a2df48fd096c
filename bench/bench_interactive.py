"""Issue 16 item 7 benchmark (CPU): a click on a finding answered end to end through the API and the job
path (POST the click, the ``gpu`` queue's job, poll its answer until the mask is back, decode it), against a
plain scipy/numpy flood fill of the same seed in the same run. Target: within 2 s on a 512x512x300 CT.

Scan: a 512x512x300 CT made from the real Lung-PET-CT-Dx series (``bench.common.make_series``: its 30
slices reused in order, 0.8 mm apart), ingested as the platform stores it (uncompressed ``.nii``). Clicks:
the right lower lobe mass in the mediastinal window (it leaks into the mediastinum: grown to the 50 mm
limit), the same with a background click on the heart (cut), and a click in the lung in the lung window (a
large region: grown to the limit).

Paths, each in this process acting as the web server (Django's test client: middleware, session, DRF,
the views, the job rows; no socket):

- **warm child** (the embedded default): clicks go to the warm child process (``ml.interactive_worker``);
  the first click after start waits for the child to start (reported apart), then each click is a pipe
  write and the job.
- **child per click**: the same job started as every other ``gpu`` job is in the embedded default
  (``core.job_child.job_start_child``: a new ``manage.py job_exec`` process per job), for comparison.
- **baseline**: nibabel reads the whole volume, threshold with the range the platform used,
  ``scipy.ndimage.label`` over the volume, the seed's component; timed with the read and without it (the
  volume already in memory). Its region is compared with the platform's (Dice) where the platform's was
  not cut at its limit.

    .venv/bin/python bench/bench_interactive.py [--clicks 5] [--per-click-children 2]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REAL_CT, django_setup, make_series  # noqa: E402

# (name, foreground points, background points, window) on the 512x512x300 series (X, Y, Z voxels)
CLICKS = [
    ("mass, mediastinal window", [[173, 300, 125]], [], [-160, 240]),
    ("mass + background click on the heart", [[173, 300, 125]], [[215, 225, 135]], [-160, 240]),
    ("lung, lung window", [[120, 260, 160]], [], [-1350, 150]),
]


def _answer(client, finding, body, timeout=120.0):
    """POST the click, poll its answer every 20 ms until it ends: (seconds, answer)."""
    from django.urls import reverse

    t0 = time.perf_counter()
    started = client.post(
        reverse("finding-interactive", args=[finding.pk]), body, content_type="application/json"
    )
    assert started.status_code == 202, started.content
    url = reverse("finding-interactive-answer", args=[finding.pk, started.json()["job_id"]])
    while True:
        answer = client.get(url).json()
        if answer["status"] not in ("pending", "running"):
            break
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"no answer in {timeout} s")
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    assert answer["status"] == "succeeded", answer
    from ml.interactive import mask_decode

    mask_decode(answer["mask"])  # what the review screen does with it (in JavaScript there)
    return seconds, answer


def _baseline(scan, seed, rng):
    """Plain numpy/scipy: the whole volume, one threshold, one labelling, the seed's component."""
    import math

    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    from core.storage import storage_local_copy

    t0 = time.perf_counter()
    with storage_local_copy(scan.file.name) as path:
        volume = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    low, high = (-math.inf if rng[0] is None else rng[0]), (math.inf if rng[1] is None else rng[1])
    inside = (volume >= low) & (volume <= high)
    labels, _ = ndimage.label(inside)
    region = labels == labels[tuple(seed)]
    t_fill = time.perf_counter() - t1
    return t_read + t_fill, t_fill, region


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=5, help="clicks per case on the warm child")
    parser.add_argument("--per-click-children", type=int, default=2, help="clicks with a child per click")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-click-") as tmp:
        tmp = Path(tmp)
        django_setup(tmp / "work")
        import numpy as np
        from django.test import Client
        from django.test.utils import setup_test_environment

        from annotation.services import finding_create
        from core.job_child import job_child_wait, job_start_child
        from core.models import Job, Role
        from core.services import membership_set, project_create, user_create
        from ml import interactive_worker
        from ml.tasks import interactive as task
        from studies.models import Scan
        from studies.services.scans import scans_ingest

        setup_test_environment()  # the test client's host
        project = project_create(slug="bench", name="bench")
        user = user_create(username="ann", password="pw-" + "x" * 12)
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
        make_series(REAL_CT, tmp / "series", slices=300, spacing=0.8)
        assert not scans_ingest(project=project, paths=[tmp / "series"], workers=1).errors
        scan = Scan.objects.get(project=project)
        assert scan.file.name.endswith(".nii"), scan.file.name
        finding = finding_create(
            project=project, user=user, study=scan.study, scan=scan, text="Right lower lobe mass."
        ).finding
        client = Client()
        client.force_login(user)
        print(f"scan {'x'.join(map(str, scan.shape))}, spacing {[round(float(s), 4) for s in scan.spacing]}")

        # warm child: the first click starts it
        body = {"points": CLICKS[0][1], "background": [], "window": CLICKS[0][3]}
        cold, _ = _answer(client, finding, body)
        rows = []
        for name, fg, bg, window in CLICKS:
            body = {"points": fg, "background": bg, "window": window}
            times, answers = [], []
            for _ in range(args.clicks):
                seconds, answer = _answer(client, finding, body)
                times.append(seconds)
                answers.append(answer)
            answer = answers[-1]
            job_s = statistics.median(a["seconds"]["total"] for a in answers)
            base_total, base_fill, region = _baseline(scan, fg[0], answer["range"])
            row = {
                "click": name,
                "voxels": answer["voxels"],
                "limited": answer["limited"],
                "split": answer["split"],
                "range": answer["range"],
                "voxels_read": answer["voxels_read"],
                "median_s": statistics.median(times),
                "max_s": max(times),
                "job_s": job_s,
                "baseline_s": base_total,
                "baseline_fill_s": base_fill,
                "baseline_voxels": int(region.sum()),
            }
            if not answer["limited"] and not answer["split"]:
                full = np.zeros(region.shape, bool)
                box = answer["box"]
                from ml.interactive import mask_decode

                full[box[0] : box[3], box[1] : box[4], box[2] : box[5]] = mask_decode(answer["mask"])
                row["dice_vs_baseline"] = 2 * float((full & region).sum()) / (full.sum() + region.sum())
            rows.append(row)
        pid = interactive_worker.worker_pid()
        interactive_worker.worker_stop()

        # a child per click (what a plain gpu job costs in the embedded default)
        per_child = []
        params = Job.objects.filter(kind="interactive").order_by("id").first().params
        for _ in range(args.per_click_children):
            t0 = time.perf_counter()
            plain = Job.objects.create(project=project, kind="interactive", created_by=user, params=params)
            job_start_child(job=plain, task=task, kwargs={})
            job_child_wait(plain.pk, timeout=300)
            per_child.append(time.perf_counter() - t0)
            plain.refresh_from_db()
            assert plain.status == "succeeded", plain.message

        print(f"warm child pid {pid}; first click after start (child starting): {cold:.2f} s")
        print(
            "| click | voxels | cut at limit | background cut | read (voxels) | end to end median s | max s "
            "| of which job s | baseline read + fill s | baseline fill only s | baseline voxels "
            "| Dice vs baseline |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            dice = f"{r['dice_vs_baseline']:.3f}" if "dice_vs_baseline" in r else "(cut)"
            print(
                f"| {r['click']} | {r['voxels']} | {r['limited']} | {r['split']} | {r['voxels_read']} "
                f"| **{r['median_s']:.2f}** | {r['max_s']:.2f} | {r['job_s']:.2f} | {r['baseline_s']:.2f} "
                f"| {r['baseline_fill_s']:.2f} | {r['baseline_voxels']} | {dice} |"
            )
        if per_child:
            print(
                f"child per click (manage.py job_exec per job): {', '.join(f'{s:.2f}' for s in per_child)} s"
            )
        if args.json:
            figures = {"cold_s": cold, "rows": rows, "per_child_s": per_child}
            args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
