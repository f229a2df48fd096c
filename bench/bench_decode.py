"""Compressed series: the platform's ingest with serial and with parallel decoding, against SimpleITK's
read and read + write of the same file format, side by side in one run, on JPEG Lossless, JPEG 2000 and
JPEG-LS versions of a 512x512x255 CT series made from the real one (cached under ``bench/out``).

    .venv/bin/python bench/bench_decode.py              # 255 slices, 3 runs per figure, medians
    .venv/bin/python bench/bench_decode.py --slices 60 --repeat 1
    .venv/bin/python bench/bench_decode.py --before /tmp/before   # + the platform of an older checkout

Each figure comes from ``bench_ingest.py --one METHOD FOLDER`` in a fresh process (``platform_serial``
is ``platform`` with ``INGEST_DECODE_WORKERS=1``), the methods' runs interleaved, the median of each.
Memory: ``peak_mb`` is the growth of that process's peak RSS (VmHWM) during the run; ``tree_mb`` the
peak of the proportional set size (PSS) of that process and every process it started (the decode
workers) over the same span, less its value at the start, sampled every 20 ms by a separate sampler
process (``bench/tree_pss.py``), for every method alike, in one more run of each (not timed: the sampler
takes CPU time the decode workers would use).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import OUT, REAL_CT, REPO, make_series  # noqa: E402

METHODS = ["sitk_read", "sitk_read_write", "platform_serial", "platform"]
SYNTAXES = {  # label: transfer syntax UID
    "JPEG Lossless": "1.2.840.10008.1.2.4.70",  # Process 14, selection value 1
    "JPEG 2000": "1.2.840.10008.1.2.4.90",  # lossless only
    "JPEG-LS": "1.2.840.10008.1.2.4.80",  # lossless
}


def compress_series(src: Path, dest: Path, syntax: str) -> list[Path]:
    """Each file of ``src`` again in ``dest``, its pixel data compressed (lossless) with transfer syntax
    ``syntax``; every other element as it was. JPEG 2000 and JPEG-LS with pydicom's encoders
    (pylibjpeg-openjpeg, pyjpegls); JPEG Lossless, which pydicom cannot encode, with GDCM through
    SimpleITK (one slice written, its encapsulated pixel data taken over)."""
    import numpy as np
    import pydicom
    from pydicom.uid import UID, JPEGLosslessSV1

    uid = UID(syntax)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(src.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
            if uid == JPEGLosslessSV1:
                ds.PixelData = _gdcm_jpeg_lossless(np.ascontiguousarray(pixels), Path(tmp) / "slice.dcm")
                ds["PixelData"].VR = "OB"
                ds["PixelData"].is_undefined_length = True
                ds.file_meta.TransferSyntaxUID = uid
            else:
                ds.compress(uid, pixels)
            target = dest / path.name
            ds.save_as(target)
            out.append(target)
    return out


def _gdcm_jpeg_lossless(pixels, scratch: Path) -> bytes:
    import pydicom
    import SimpleITK as sitk

    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(scratch))
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")  # GDCM: JPEG Lossless, first-order prediction, for integer pixels
    writer.Execute(sitk.GetImageFromArray(pixels))
    written = pydicom.dcmread(scratch)
    if written.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.4.70":
        raise RuntimeError(f"SimpleITK wrote {written.file_meta.TransferSyntaxUID}, not JPEG Lossless")
    return written.PixelData


def series(slices: int) -> dict[str, Path]:
    """The compressed series of ``slices`` slices (made once, then taken from ``bench/out``)."""
    plain = OUT / f"ct{slices}"
    if len(list(plain.glob("*.dcm"))) != slices:
        shutil.rmtree(plain, ignore_errors=True)
        make_series(REAL_CT, plain, slices=slices, spacing=1.25)
    made = {}
    for label, syntax in SYNTAXES.items():
        folder = OUT / f"ct{slices}-{syntax.rsplit('.', 1)[-1]}"
        if len(list(folder.glob("*.dcm"))) != slices:
            shutil.rmtree(folder, ignore_errors=True)
            print(f"making the {label} series in {folder} ...", flush=True)
            compress_series(plain, folder, syntax)
        made[label] = folder
    return made


def measure(method: str, folder: Path, before: Path | None = None, tree: bool = False) -> dict:
    """One ``bench_ingest.py --one`` run; ``tree``: with the PSS sampler watching its process tree.
    ``before``: method ``before`` is ``platform`` run by that tree's own bench_ingest.py (an older
    checkout, whose bench/common.py may have no sampler: then ``tree_mb`` is absent)."""
    import subprocess

    env = dict(os.environ)
    env["BENCH_TREE_PSS"] = "1" if tree else "0"
    script, cwd = Path(__file__).with_name("bench_ingest.py"), REPO
    if method == "before":  # run from its tree: Celery's Django fixup puts the working folder on sys.path
        cwd = Path(before or "").resolve()
        script, method = cwd / "bench" / "bench_ingest.py", "platform"
    out = subprocess.run(
        [sys.executable, str(script), "--one", method, str(folder.resolve())],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def medians(n: int, folder: Path, before: Path | None = None) -> dict[str, dict]:
    """Every method ``n`` times, interleaved (one run of each in turn, so that the machine's slower
    moments fall on all of them alike); per method the medians and the times of its runs. Then one
    more run of each with the PSS sampler for ``tree_mb``: the sampler takes CPU time (on two cores,
    from the decode workers), so the timed runs go without it."""
    methods = METHODS + (["before"] if before else [])
    runs: dict[str, list[dict]] = {method: [] for method in methods}
    for _ in range(n):
        for method in methods:
            runs[method].append(measure(method, folder, before))
    rows = {}
    for method, results in runs.items():
        rows[method] = {key: statistics.median(r[key] for r in results) for key in ("seconds", "peak_mb")}
        rows[method]["runs"] = [round(r["seconds"], 3) for r in results]
    for method in methods:
        rows[method]["tree_mb"] = measure(method, folder, before, tree=True).get("tree_mb", float("nan"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=255)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", type=Path, help="an older checkout whose platform runs as 'before'")
    parser.add_argument("--only", nargs="*", default=list(SYNTAXES), help="of: " + ", ".join(SYNTAXES))
    args = parser.parse_args()
    if not REAL_CT.is_dir():
        sys.exit(f"{REAL_CT} is absent: the benchmark needs the real series")
    folders = series(args.slices)
    load = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cores {cores}")
    results = {}
    for label, folder in folders.items():
        if label not in args.only:
            continue
        mb = sum(p.stat().st_size for p in folder.glob("*.dcm")) / 2**20
        print(f"\n== {label}, 512x512x{args.slices} ({mb:.0f} MB in {folder.name})")
        rows = medians(args.repeat, folder, args.before)
        target = rows["sitk_read_write"]["seconds"]
        for method, r in rows.items():
            print(
                f"{method:<16} {r['seconds']:7.3f} s (runs {r['runs']})  peak +{r['peak_mb']:6.1f} MB  "
                f"tree +{r['tree_mb']:6.1f} MB  x{r['seconds'] / target:4.2f} of sitk_read_write"
            )
        results[label] = rows
    after = os.getloadavg()
    print(f"\nload average after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "decode.json").write_text(json.dumps({"load_before": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
