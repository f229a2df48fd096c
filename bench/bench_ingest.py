"""Ingest of one CT series, read to stored canonical file, against two baselines in the same run:
a bare pydicom read-and-stack loop and SimpleITK's ImageSeriesReader (read only, and read + write of
the same file format). Series: the real 30-slice series and a 512x512x300 series generated from it. Each
method runs in a fresh, warmed-up process so peak memory (RSS growth) is its own. Then many series at
once: throughput with the run confined to one core (one process) and with two cores (two worker
processes).

    .venv/bin/python bench/bench_ingest.py            # everything
    .venv/bin/python bench/bench_ingest.py --quick    # the 30-slice series only

``platform`` writes the default canonical file (uncompressed ``.nii``), ``platform_gz`` the
``CANONICAL_NIFTI_GZIP=1`` one (``.nii.gz``); each is compared with SimpleITK writing the same format.
``--one platform_serial FOLDER``: ``platform`` with ``INGEST_DECODE_WORKERS=1`` (compressed slices decoded
one after another; ``bench/bench_decode.py`` compares both on compressed series).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import OUT, REAL_CT, REPO, django_setup, make_series, measured  # noqa: E402

MANY = 16  # series in the many-series run
METHODS = ["pydicom_loop", "sitk_read", "sitk_read_write", "platform", "sitk_read_write_gz", "platform_gz"]


def run_pydicom_loop(folder: Path) -> dict:
    import numpy as np
    import pydicom

    with measured() as m:
        datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
        datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        vol = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])
        del datasets
    return {**m, "shape": list(vol.shape), "volume_mb": vol.astype(np.int16).nbytes / 2**20}


def run_sitk(folder: Path, write: str) -> dict:
    import SimpleITK as sitk

    with measured() as m:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        image = reader.Execute()
        if write:
            out = Path(tempfile.mkdtemp()) / f"sitk{write}"
            sitk.WriteImage(image, str(out), useCompression=write.endswith(".gz"))
    result = {**m, "shape": list(image.GetSize())}
    if write:
        result["file_mb"] = out.stat().st_size / 2**20
        shutil.rmtree(out.parent)
    return result


def run_platform(folder: Path, gz: bool = False) -> dict:
    if gz:
        os.environ["CANONICAL_NIFTI_GZIP"] = "1"
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    django_setup(work)
    from core.services import project_create
    from studies.services.scans import scans_ingest

    project = project_create(slug="bench")
    warm_up()
    try:
        with measured() as m:
            summary = scans_ingest(project=project, paths=[folder], workers=1)
        stored = summary.stored[0]
        from studies.models import Scan

        size = Scan.objects.get(pk=stored["id"]).file_size
        return {**m, "shape": stored["shape"], "file_mb": size / 2**20, "errors": summary.errors}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def warm_up() -> None:
    """A running worker or server has ingested before: its readers are imported and numpy's lazy parts
    loaded. Ingest pydicom's small CT once in another project (SimpleITK and pydicom are imported before
    their measurements too)."""
    from pydicom.data import get_testdata_file

    from core.services import project_create
    from studies.services.scans import scans_ingest

    scans_ingest(project=project_create(slug="warm-up"), paths=[get_testdata_file("CT_small.dcm")], workers=1)


def run_many(folders: list[Path], workers: int) -> dict:
    """Ingest ``folders`` with ``workers`` processes, the whole run confined to as many cores."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:workers])
    work = Path(tempfile.mkdtemp(prefix="bench-many-"))
    django_setup(work)
    from core.services import project_create
    from studies.services.scans import scans_ingest

    warm_up()
    project = project_create(slug="bench")
    try:
        t0 = time.perf_counter()
        summary = scans_ingest(project=project, paths=folders, workers=workers)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "series": len(summary.stored), "errors": summary.errors}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def one(method: str, folder: Path) -> dict:
    if method == "pydicom_loop":
        return run_pydicom_loop(folder)
    if method == "sitk_read":
        return run_sitk(folder, write="")
    if method == "sitk_read_write":
        return run_sitk(folder, write=".nii")
    if method == "sitk_read_write_gz":
        return run_sitk(folder, write=".nii.gz")
    if method == "platform_serial":  # slices of a compressed series decoded one after another
        os.environ["INGEST_DECODE_WORKERS"] = "1"
    return run_platform(folder, gz=method == "platform_gz")


def in_subprocess(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of(n: int, *args: str) -> dict:
    runs = [in_subprocess(*args) for _ in range(n)]
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "FOLDER"))
    parser.add_argument("--many", nargs="+", metavar="FOLDER")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], Path(args.one[1]))))
        return
    if args.many:
        print(json.dumps(run_many([Path(f) for f in args.many], args.workers)))
        return
    if not REAL_CT.is_dir():
        sys.exit(f"{REAL_CT} is absent: the benchmark needs the real series")
    series = {"real 512x512x30": REAL_CT}
    if not args.quick:
        big = OUT / "ct300"
        if len(list(big.glob("*.dcm"))) != 300:
            shutil.rmtree(big, ignore_errors=True)
            make_series(REAL_CT, big, slices=300, spacing=0.8)
        series["generated 512x512x300"] = big
    results = {}
    for label, folder in series.items():
        print(f"\n== {label} ({folder})")
        rows = {m: best_of(args.repeat, "--one", m, str(folder)) for m in METHODS}
        volume_mb = rows["pydicom_loop"]["volume_mb"]
        base = rows["sitk_read"]["seconds"]
        for m, r in rows.items():
            like = rows["sitk_read_write_gz" if m.endswith("_gz") else "sitk_read_write"]["seconds"]
            print(
                f"{m:<18} {r['seconds']:7.3f} s  peak +{r['peak_mb']:7.1f} MB "
                f"({r['peak_mb'] / volume_mb:4.2f}x volume {volume_mb:.0f} MB)  "
                f"x{r['seconds'] / base:4.2f} of sitk_read, "
                f"x{r['seconds'] / like:4.2f} of sitk writing the same format"
            )
        results[label] = rows
    if not args.quick:
        copies = []
        for i in range(MANY):
            d = OUT / f"many{i}"
            if len(list(d.glob("*.dcm"))) != 60:
                shutil.rmtree(d, ignore_errors=True)
                make_series(REAL_CT, d, slices=60, seed=i)
            copies.append(str(d))
        one_core = min(
            (in_subprocess("--many", *copies, "--workers", "1") for _ in range(2)), key=lambda r: r["seconds"]
        )
        two_core = min(
            (in_subprocess("--many", *copies, "--workers", "2") for _ in range(2)), key=lambda r: r["seconds"]
        )
        print(f"\n== many series: {MANY} series of 512x512x60")
        for label, r in (("1 core", one_core), ("2 cores", two_core)):
            print(f"{label:<10} {r['seconds']:6.2f} s  {r['series'] / r['seconds']:5.2f} series/s")
        print(f"speed-up with two cores: {one_core['seconds'] / two_core['seconds']:.2f}x (target >= 1.7x)")
        results["many"] = {"1": one_core, "2": two_core}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ingest.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
