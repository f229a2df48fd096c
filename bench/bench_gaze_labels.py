"""Issue 4 benchmark: gaze labels of a project of many recordings (heatmaps, sentences, anatomy records,
proposals), with both cores against one core in the same run, and peak memory at two project sizes.

Recordings are written straight to a throw-away database (no file import): half REFLACX-like (angular
resolution, shown rectangle, words with "." rows), half EGD-like (method egd, four anatomy masks shared by
all recordings), ``--fixations`` each over ~``--fixations``/3 s of dictation with 3 sentences, on
``--size`` W H images. Peak memory is the peak RSS of this process plus the largest worker's (workers
are separate processes), measured in a fresh process per project size.

    .venv/bin/python bench/bench_gaze_labels.py                  # 1,000 recordings, 100 for the baseline
    .venv/bin/python bench/bench_gaze_labels.py --recordings 200 --size 1024 1024
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import django_setup  # noqa: E402

SENTENCES = [
    ("there is a small left pleural effusion .", "Pleural Effusion"),
    ("the heart is enlarged .", "Cardiomegaly"),
    ("patchy opacity in the right lower lobe .", "Lung Opacity"),
]


def _recordings(n: int, width: int, height: int, fixations: int, seed: int = 7):
    import numpy as np

    rng = np.random.default_rng(seed)
    for i in range(n):
        egd = i % 2 == 1
        dt = rng.uniform(0.1, 0.45, fixations)
        start = np.cumsum(dt + rng.uniform(0.02, 0.2, fixations))
        end = start + dt
        x = rng.integers(int(width * 0.05), int(width * 0.95), fixations)
        y = rng.integers(int(height * 0.05), int(height * 0.95), fixations)
        fix = {"start": start.round(3).tolist(), "end": end.round(3).tolist(), "x": x.tolist(),
               "y": y.tolist(), "inside": [True] * fixations}  # fmt: skip
        if not egd:
            fix["ang_res_x"] = [94] * fixations
            fix["ang_res_y"] = [94] * fixations
            fix["shown_rect"] = [[0, 0, width, height]] * fixations
        words, t = [], 1.0
        span = float(end[-1]) / len(SENTENCES)
        for k, (sentence, _) in enumerate(SENTENCES):
            tokens = sentence.split()
            t = k * span + 0.5
            step = (span - 1.0) / len(tokens)
            for token in tokens:
                words.append(
                    {"text": token, "start": round(t, 2), "end": round(t + (0 if token == "." else step), 2)}
                )
                t += step
        if egd:  # phrases
            phrases = []
            for k, (sentence, _) in enumerate(SENTENCES):
                phrases.append(
                    {"text": sentence.replace(" .", "."), "start": k * span + 0.5, "end": (k + 1) * span}
                )
            words = phrases
        yield egd, fix, words


def _populate(n: int, width: int, height: int, fixations: int) -> list[int]:
    import numpy as np
    from PIL import Image, ImageDraw

    from core.services import project_create
    from core.storage import project_key, storage_save_bytes
    from studies.models import GazeAnatomyMask, GazeRecording

    project = project_create(slug=f"bench-{n}", name="bench")
    keys = {}
    shapes = {"left_lung": (0.55, 0.12, 0.9, 0.82), "right_lung": (0.1, 0.12, 0.45, 0.8),
              "mediastinum": (0.42, 0.1, 0.6, 0.75), "aortic_knob": (0.52, 0.2, 0.6, 0.27)}  # fmt: skip
    for name, (x0, y0, x1, y1) in shapes.items():
        image = Image.new("L", (width, height), 0)
        ImageDraw.Draw(image).ellipse((x0 * width, y0 * height, x1 * width, y1 * height), fill=255)
        import io

        out = io.BytesIO()
        image.save(out, format="PNG")
        keys[name] = (storage_save_bytes(project_key(project, "bench", f"{name}.png"), out.getvalue()),
                      int(np.count_nonzero(np.asarray(image))))  # fmt: skip
    ids = []
    for i, (egd, fix, transcript) in enumerate(_recordings(n, width, height, fixations)):
        rec = GazeRecording.objects.create(
            project=project, external_id=f"R{i:05d}", source_format="egd" if egd else "reflacx",
            image_width=width, image_height=height, fixation_count=len(fix["x"]), fixations=fix,
            transcript=transcript, checksum=f"{i:064d}",
        )  # fmt: skip
        if egd:
            for name, (key, pixels) in keys.items():
                GazeAnatomyMask.objects.create(recording=rec, name=name, file=key, pixel_count=pixels)
        ids.append(rec.pk)
    return project.pk


def _child(args) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    workdir = Path(args.workdir)
    django_setup(workdir)
    from core.models import Project
    from labeling.gaze.service import gaze_run_execute, gaze_run_get_or_create
    from labeling.models import GazeAnatomyRecord, GazeHeatmap, RegionProposal

    project_pk = _populate(args.recordings, args.size[0], args.size[1], args.fixations)
    project = Project.objects.get(pk=project_pk)
    run = gaze_run_get_or_create(project=project, params={"method": "auto"})
    t0 = time.perf_counter()
    run = gaze_run_execute(run=run, workers=args.workers)
    seconds = time.perf_counter() - t0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    media = sum(p.stat().st_size for p in (workdir / "media").rglob("*") if p.is_file())
    print(json.dumps({
        "recordings": run.total, "done": run.done, "unusable": run.unusable, "failed": run.failed,
        "seconds": seconds, "per_second": run.total / seconds, "main_peak_mb": own,
        "worker_peak_mb": children,
        "heatmaps": GazeHeatmap.objects.count(), "anatomy_records": GazeAnatomyRecord.objects.count(),
        "proposals": RegionProposal.objects.count(), "media_mb_per_recording": media / 1e6 / run.total,
    }))  # fmt: skip


def _measure(n: int, workers: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-gaze-") as tmp:
        cmd = [sys.executable, __file__, "--child", "--workdir", tmp, "--recordings", str(n), "--workers",
               str(workers), "--size", *map(str, args.size), "--fixations", str(args.fixations)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recordings", type=int, default=1000)
    parser.add_argument("--baseline-recordings", type=int, default=100)
    parser.add_argument("--size", type=int, nargs=2, default=[2544, 3056], metavar=("W", "H"))
    parser.add_argument("--fixations", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    print(f"{os.cpu_count()} cores; images {args.size[0]}x{args.size[1]}, {args.fixations} fixations, "
          "3 sentences; half reflacx-like, half egd-like with 4 anatomy masks", flush=True)  # fmt: skip
    rows = [
        ("baseline: 1 worker", _measure(args.baseline_recordings, 1, args)),
        (f"{args.workers} workers", _measure(args.baseline_recordings, args.workers, args)),
        (f"{args.workers} workers", _measure(args.recordings, args.workers, args)),
    ]
    print("| run | recordings | s | recordings/s | main peak MB | largest worker peak MB | heatmaps | "
          "anatomy records | proposals | stored MB/recording |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        counts = f"{r['recordings']} ({r['done']} done, {r['unusable']} unusable, {r['failed']} failed)"
        cells = [name, counts, f"{r['seconds']:.1f}", f"{r['per_second']:.2f}", f"{r['main_peak_mb']:.0f}",
                 f"{r['worker_peak_mb']:.0f}", str(r["heatmaps"]), str(r["anatomy_records"]),
                 str(r["proposals"]), f"{r['media_mb_per_recording']:.2f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print(f"speed-up {args.workers} workers / 1: {rows[1][1]['per_second'] / rows[0][1]['per_second']:.2f}x")


if __name__ == "__main__":
    main()
