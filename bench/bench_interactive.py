"""Issue 16 item 7 benchmark (CPU): a click on a finding answered end to end through the API and the job
path (POST the click, the ``gpu`` queue's job, poll its answer every 20 ms until the mask is back, decode
it), against a plain scipy/numpy flood fill of the same seed in the same run. Target: within 2 s on a
512x512x300 CT.

Scans (both 512x512x300, 0.65 x 0.65 x 0.8 mm, ingested as the platform stores them: uncompressed
``.nii``):

- **real**: made from the real Lung-PET-CT-Dx series (``bench.common.make_series``: its 30 slices reused in
  order). Clicks: the right lower lobe mass in the mediastinal window (it touches the hilum and leaks into
  the mediastinum: grown to the 50 mm limit, the worst case), the same with a background click on the
  heart (cut), and a click in the lung in the lung window (a large region: to the limit);
- **phantom**: the demo chest phantom (``studies.demo.synthetic_chest_ct``) with its 14 mm nodule, clicked
  in the mediastinal window (a lesion the grow contains: compared voxel for voxel with the baseline).

Paths, with this process as the web server (Django's test client: middleware, session, DRF, the views, the
job rows; no socket):

- **warm child** (the embedded default): the clicks go to the warm child (``ml.interactive_worker``); the
  first click after start waits for the child to start (reported apart).
- **gpu worker** (``--broker redis://...``, the full setup): a Celery worker of the ``gpu`` queue
  (``--pool solo``) started here on that broker, the jobs sent through it.
- **child per click**: the same job started as other ``gpu`` jobs are in the embedded default
  (``core.job_child.job_start_child``: a new ``manage.py job_exec`` per job), for comparison.
- **baseline**: nibabel reads the whole volume, the range the platform used, ``scipy.ndimage.label`` over
  the volume, the seed's component; with the read and without it (the volume already in memory).

Each figure: the median of ``--clicks`` clicks (and the slowest); "job" is the job's own wall time and CPU
time in the process that answered (the difference: waiting for a core on a shared machine).

    .venv/bin/python bench/bench_interactive.py [--clicks 5] [--per-click-children 2] [--broker URL]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REAL_CT, REPO, django_setup, make_series  # noqa: E402

SHAPE_ZYX, SPACING_ZYX = (300, 512, 512), (0.8, 0.6465, 0.6465)
# (name, foreground points, background points, window), voxels (X, Y, Z) of the real-made series
REAL_CLICKS = [
    ("real: mass, mediastinal window (leaks)", [[173, 300, 125]], [], [-160, 240]),
    ("real: mass + background click on the heart", [[173, 300, 125]], [[215, 225, 135]], [-160, 240]),
    ("real: lung, lung window (large)", [[120, 260, 160]], [], [-1350, 150]),
]


def _answer(client, finding, body, timeout=300.0):
    """POST the click, poll its answer every 20 ms until it ends: (seconds, answer)."""
    from django.urls import reverse

    from ml.interactive import mask_decode

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
    assert answer["status"] == "succeeded", answer
    mask_decode(answer["mask"])  # what the review screen does with it (in JavaScript there)
    return time.perf_counter() - t0, answer


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


def _runs(client, cases, n, path):
    """Each case clicked ``n`` times: its row (times, the last answer)."""
    rows = []
    for name, finding, scan, fg, bg, window in cases:
        body = {"points": fg, "background": bg, "window": window}
        times, answers = [], []
        for _ in range(n):
            seconds, answer = _answer(client, finding, body)
            times.append(seconds)
            answers.append(answer)
        rows.append(
            {
                "path": path,
                "click": name,
                "scan": scan,
                "fg": fg,
                "median_s": statistics.median(times),
                "max_s": max(times),
                "job_s": statistics.median(a["seconds"]["total"] for a in answers),
                "job_cpu_s": statistics.median(a["seconds"]["cpu"] for a in answers),
                "answer": answers[-1],
            }
        )
    return rows


def _worker(broker: str, workdir: Path) -> subprocess.Popen:
    """A Celery worker of the gpu queue on ``broker``, on this run's database and media folder."""
    env = dict(os.environ, CELERY_BROKER_URL=broker, EMBEDDED_GPU_JOBS_IN_CHILD="false")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "gpu", "--pool", "solo",
         "--concurrency", "1", "-l", "warning", "-n", f"bench-click-{os.getpid()}@%h"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=5, help="clicks per case and path")
    parser.add_argument("--per-click-children", type=int, default=2, help="clicks with a child per click")
    parser.add_argument("--broker", help="also through a Celery gpu worker on this broker (redis://...)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load = [os.getloadavg()[0]]
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
        from ml.interactive import mask_decode
        from ml.tasks import interactive as task
        from studies import demo
        from studies.models import Scan
        from studies.services.scans import scans_ingest

        setup_test_environment()  # the test client's host
        user = user_create(username="ann", password="pw-" + "x" * 12)
        scans, findings = {}, {}
        for name in ("real", "phantom"):
            project = project_create(slug=f"bench-{name}", name=name)
            membership_set(project=project, user=user, role=Role.ANNOTATOR)
            if name == "real":
                make_series(REAL_CT, tmp / name, slices=SHAPE_ZYX[0], spacing=SPACING_ZYX[0])
            else:
                volume, info = demo.synthetic_chest_ct(shape=SHAPE_ZYX, spacing=SPACING_ZYX)
                demo.write_ct_series(tmp / name, volume, SPACING_ZYX)
                del volume
            assert not scans_ingest(project=project, paths=[tmp / name], workers=1).errors
            scans[name] = Scan.objects.get(project=project)
            assert scans[name].file.name.endswith(".nii"), scans[name].file.name
            findings[name] = finding_create(
                project=project, user=user, study=scans[name].study, scan=scans[name], text=f"{name} lesion"
            ).finding
        z, y, x = info["nodule_center_zyx"]
        cases = [(n, findings["real"], "real", fg, bg, w) for n, fg, bg, w in REAL_CLICKS]
        cases.append(("phantom: 14 mm nodule, mediastinal window", findings["phantom"], "phantom",
                      [[x, y, z]], [], [-160, 240]))  # fmt: skip
        client = Client()
        client.force_login(user)
        spacing = [round(float(s), 4) for s in scans["real"].spacing]
        print(f"scans {'x'.join(map(str, scans['real'].shape))}, spacing {spacing}")

        # the embedded default: the warm child (the first click starts it)
        first = {"points": REAL_CLICKS[0][1], "window": REAL_CLICKS[0][3]}
        cold, _ = _answer(client, findings["real"], first)
        rows = _runs(client, cases, args.clicks, "warm child")
        interactive_worker.worker_stop()

        if args.broker:  # the full setup: a gpu worker on a broker
            from config.celery import app

            worker = _worker(args.broker, tmp / "work")
            app.conf.update(broker_url=args.broker, task_always_eager=False)
            try:
                worker_cold, _ = _answer(client, findings["real"], first)
                rows += _runs(client, cases, args.clicks, "gpu worker")
            finally:
                worker.terminate()
                worker.wait(30)
                app.conf.update(task_always_eager=True)

        per_child = []  # a child per click
        params = Job.objects.filter(kind="interactive", params__finding=findings["real"].pk).first().params
        for _ in range(args.per_click_children):
            t0 = time.perf_counter()
            plain = Job.objects.create(
                project=findings["real"].project, kind="interactive", created_by=user, params=params
            )
            job_start_child(job=plain, task=task, kwargs={})
            job_child_wait(plain.pk, timeout=600)
            per_child.append(time.perf_counter() - t0)
            plain.refresh_from_db()
            assert plain.status == "succeeded", plain.message

        baselines = {}
        for row in rows:
            key = (row["scan"], tuple(row["fg"][0]), tuple(row["answer"]["range"]))
            if key not in baselines:
                baselines[key] = _baseline(scans[row["scan"]], row["fg"][0], row["answer"]["range"])
            total, fill, region = baselines[key]
            answer = row.pop("answer")
            row.update(
                voxels=answer["voxels"], limited=answer["limited"], split=answer["split"],
                voxels_read=answer["voxels_read"], baseline_s=total, baseline_fill_s=fill,
                baseline_voxels=int(region.sum()),
            )  # fmt: skip
            if not answer["limited"] and not answer["split"]:
                full = np.zeros(region.shape, bool)
                box = answer["box"]
                full[box[0] : box[3], box[1] : box[4], box[2] : box[5]] = mask_decode(answer["mask"])
                row["dice_vs_baseline"] = 2 * float((full & region).sum()) / (full.sum() + region.sum())
        load.append(os.getloadavg()[0])

        print(f"load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores")
        print(f"first click after start, the warm child starting: {cold:.2f} s")
        if args.broker:
            print(f"first click on the gpu worker (worker starting): {worker_cold:.2f} s")
        print(
            "| path | click | voxels | cut at 50 mm | background cut | voxels read | end to end median s "
            "| max s | job s | job CPU s | baseline read + fill s | baseline fill s | baseline voxels "
            "| Dice vs baseline |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            dice = f"{r['dice_vs_baseline']:.3f}" if "dice_vs_baseline" in r else "(cut)"
            print(
                f"| {r['path']} | {r['click']} | {r['voxels']} | {r['limited']} | {r['split']} "
                f"| {r['voxels_read']} "
                f"| **{r['median_s']:.2f}** | {r['max_s']:.2f} | {r['job_s']:.2f} | {r['job_cpu_s']:.2f} "
                f"| {r['baseline_s']:.2f} | {r['baseline_fill_s']:.2f} | {r['baseline_voxels']} | {dice} |"
            )
        print(f"child per click (manage.py job_exec per job): {', '.join(f'{s:.2f}' for s in per_child)} s")
        if args.json:
            figures = {"cold_s": cold, "rows": rows, "per_child_s": per_child, "load": load}
            args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
