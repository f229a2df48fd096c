"""Shared helpers for benchmarks: test series generation, peak-memory measurement, Django setup."""

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
REAL_CT = SHARED / "ct" / "lungdx-a0002"
OUT = REPO / "bench" / "out"


def django_setup(workdir: Path) -> None:
    """Django on a throw-away SQLite database and media folder under ``workdir`` (migrated)."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ.pop("CELERY_BROKER_URL", None)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_reset() -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def measured():
    """Yields a dict that gets ``seconds`` and ``peak_mb`` (peak RSS growth over the start, MB); with
    ``BENCH_TREE_PSS=1`` also ``tree_mb``: the peak PSS growth of this process and the processes it starts
    (``bench/tree_pss.py``, a sampler process started before the timer)."""
    import gc
    import json
    import subprocess

    sampler = None
    if os.environ.get("BENCH_TREE_PSS") == "1":
        sampler = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "tree_pss.py"), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sampler.stdout is not None and sampler.stdout.readline().strip() == "ready"
    gc.collect()
    peak_reset()
    start_rss = rss_mb()
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    yield out
    out["seconds"] = time.perf_counter() - t0
    out["peak_mb"] = peak_mb() - start_rss
    if sampler is not None:
        tree, _ = sampler.communicate("")
        pss = json.loads(tree.strip().splitlines()[-1])
        out["tree_mb"] = pss["peak_mb"] - pss["base_mb"]


def make_series(
    src: Path, dest: Path, *, slices: int, spacing: float | None = None, seed: int = 0
) -> list[Path]:
    """A DICOM series of ``slices`` slices made from the real series in ``src``: slices are reused in order
    with new SOP/series UIDs and evenly spaced positions (``spacing`` mm, default the source's)."""
    import pydicom
    from pydicom.uid import generate_uid

    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted(src.glob("*.dcm"))
    headers = [pydicom.dcmread(p) for p in sources]
    headers.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    z0 = float(headers[0].ImagePositionPatient[2])
    step = spacing or (float(headers[-1].ImagePositionPatient[2]) - z0) / (len(headers) - 1)
    series_uid = generate_uid(entropy_srcs=[str(dest), str(seed)])
    out = []
    for k in range(slices):
        ds = headers[int(k * len(headers) / slices)].copy()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(dest), str(seed), str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z0 + k * step]
        path = dest / f"{k:04d}.dcm"
        ds.save_as(path)
        out.append(path)
    return out
