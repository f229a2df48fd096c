"""Issue 7 benchmark: exporting frozen releases to the ReXGroundingCT and MONAI formats, beside a bare
nibabel save loop of the same arrays, with peak memory at two release sizes.

Cases are synthetic CTs stored as the platform stores them (canonical NIfTI, scan rows), each with two
accepted findings whose masks are stored annotation versions. An export goes through the whole path: the
frozen manifest, every file checked against its sha256, the format's writer, the dataset card. The
baseline loads the same image and mask files and writes an image and a stacked mask with ``nibabel.save``
(``.nii.gz``), nothing else. Peak memory is the growth of the process's peak RSS during one export
(Linux clear_refs), at ``--small`` / 4 and at ``--small`` cases: flat means the same at both sizes.

    .venv/bin/python bench/bench_release.py [--small 1000] [--large 20] [--large-shape 512 512 300]

The large cases share one stored image file (20 x 157 MB would only measure the disk); each has its own
masks, and every case's image is read and checked again on export.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import django_setup, measured  # noqa: E402

FORMATS = ("rexgroundingct", "monai")


def _ct(shape, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    vol = rng.normal(-700, 80, size=shape).astype(np.int16)
    vol[:, :, : shape[2] // 8] = 300  # something bone-like
    return vol


def _masks(shape, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        m = np.zeros(shape, bool)
        c = [int(rng.integers(s // 4, 3 * s // 4)) for s in shape]
        r = [max(2, s // 10) for s in shape]
        m[c[0] - r[0] : c[0] + r[0], c[1] - r[1] : c[1] + r[1], c[2] - r[2] : c[2] + r[2]] = True
        out.append(m)
    return out


def populate(project, n: int, shape, *, shared_image: bool, first: int = 0):
    """``n`` accepted cases in ``project``: patient, study, scan (canonical NIfTI) and two findings with
    stored mask versions. Returns the stored (image key, mask keys) of each case for the baseline."""
    import numpy as np
    from django.core.files.storage import default_storage

    from annotation.models import Annotation, Finding, ReviewTask
    from core.storage import project_key, storage_save_bytes
    from studies.ingest.types import Volume
    from studies.ingest.volume_io import mask_file, volume_write_nifti
    from studies.models import Patient, Scan, Study

    affine = np.diag([0.7, 0.7, 1.25, 1.0])
    affine[:3, 3] = [-180.0, -180.0, -150.0]
    stored = []
    image_key = None
    for i in range(first, first + n):
        if image_key is None or not shared_image:
            tmp = Path(tempfile.mkdtemp()) / "image.nii"
            volume_write_nifti(Volume(np.asfortranarray(_ct(shape, i)), affine, (0.7, 0.7, 1.25), "CT"), tmp)
            key = project_key(project, "scans", f"s{i}", "image.nii")
            with open(tmp, "rb") as fh:
                image_key = default_storage.save(key, fh)
            shutil.rmtree(tmp.parent)
        patient = Patient.objects.create(
            project=project, pseudonym=f"P{i:05d}", identity_hash=f"{i:064d}", date_shift_days=0
        )
        study = Study.objects.create(project=project, patient=patient, study_uid=f"2.25.{i + 1}")
        scan = Scan.objects.create(
            project=project, study=study, series_uid=f"2.25.{i + 1}.1", modality="CT", source_format="nifti",
            ndim=3, shape=list(shape), spacing=[0.7, 0.7, 1.25], affine=affine.tolist(), dtype="int16",
            file=image_key, source_checksum=f"{i:064d}",
        )  # fmt: skip
        keys = []
        for j, (mask, code) in enumerate(zip(_masks(shape, i), ("2d", "2b"), strict=True)):
            finding = Finding.objects.create(
                project=project, study=study, scan=scan, text=f"Finding {j} of case {i}.", code=code,
                status="accepted", current_version=1,
            )  # fmt: skip
            data, suffix = mask_file(mask, affine)
            key = storage_save_bytes(
                project_key(project, "annotations", f"f{finding.pk}", f"v1{suffix}"), data
            )
            Annotation.objects.create(
                finding=finding, version=1, kind="mask", mask=key, voxels=int(mask.sum())
            )
            ReviewTask.objects.create(project=project, finding=finding, stage="accepted", decision="accept")
            keys.append(key)
        stored.append((image_key, keys, affine))
    return stored


def baseline(stored, out: Path) -> float:
    """The same arrays, loaded and written with nibabel.save: image and stacked masks per case."""
    import nibabel as nib
    import numpy as np
    from django.core.files.storage import default_storage

    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for n, (image_key, mask_keys, affine) in enumerate(stored):
        image = np.asarray(nib.load(default_storage.path(image_key)).dataobj)
        nib.save(nib.Nifti1Image(image, affine), out / f"{n}.nii.gz")
        masks = np.stack([np.asarray(nib.load(default_storage.path(k)).dataobj) for k in mask_keys])
        nib.save(nib.Nifti1Image(masks, affine), out / f"{n}-seg.nii.gz")
    return time.perf_counter() - t0


def export(release, fmt: str, out: Path, traced: bool = False) -> dict:
    """One export into ``out``: seconds and peak RSS growth; with ``traced``, instead the peak of the memory
    Python and NumPy allocate during it (``tracemalloc``: exact, but slower, so timed runs go without)."""
    import tracemalloc

    from releases.records import DirSink
    from releases.services import release_export_to

    if traced:
        tracemalloc.start()
    with measured() as m:
        sink = DirSink(out)
        summary = release_export_to(release, fmt, sink)
        sink.close()
    if traced:
        m["traced_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    m["cases"] = summary.cases
    m["bytes"] = sum(size for _, size, _ in sink.files)
    return m


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--small-shape", type=int, nargs=3, default=[64, 64, 32])
    parser.add_argument("--large", type=int, default=20)
    parser.add_argument("--large-shape", type=int, nargs=3, default=[512, 512, 300])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        work = Path(tmp)
        os.environ["DEBUG"] = "false"  # as a worker runs: DEBUG keeps every query (memory grows per case)
        os.environ.setdefault("SECRET_KEY", "bench-release-" + "x" * 40)
        django_setup(work)
        from core.services import project_create
        from releases.services import dataset_create, release_create

        rows, freezes = [], []
        quarter = project_create(slug="small-a", name="small a")
        rest = project_create(slug="small-b", name="small b")
        large = project_create(slug="large", name="large")
        t0 = time.perf_counter()
        small_a = populate(quarter, args.small // 4, tuple(args.small_shape), shared_image=False)
        small_b = populate(
            rest, args.small - args.small // 4, tuple(args.small_shape), shared_image=False, first=args.small
        )
        big = populate(large, args.large, tuple(args.large_shape), shared_image=True, first=10 * args.small)
        if not big:  # --large 0: the small releases only
            scenarios_large = []
        else:
            scenarios_large = [(f"{args.large} x {'x'.join(map(str, args.large_shape))}", [large], big)]
        print(f"setup {time.perf_counter() - t0:.0f} s", flush=True)
        scenarios = [
            (f"{args.small // 4} x {'x'.join(map(str, args.small_shape))}", [quarter], small_a),
            (f"{args.small} x {'x'.join(map(str, args.small_shape))}", [quarter, rest], small_a + small_b),
            *scenarios_large,
        ]
        for n, (name, projects, stored) in enumerate(scenarios):
            dataset = dataset_create(slug=f"d{n}", name=name, projects=projects)
            t0 = time.perf_counter()
            release = release_create(dataset=dataset)
            freeze = time.perf_counter() - t0
            freeze_traced = None
            if n < 2:  # the allocation peak of freezing (a second version of the same selection)
                import tracemalloc

                tracemalloc.start()
                release_create(dataset=dataset)
                freeze_traced = tracemalloc.get_traced_memory()[1] / 1e6
                tracemalloc.stop()
                print(f"{name}: freeze peak allocated {freeze_traced:.1f} MB", flush=True)
                freezes.append((name, freeze, freeze_traced))
            base = baseline(stored, work / f"base-{n}")
            shutil.rmtree(work / f"base-{n}")
            cases = len(stored)
            if n == 0:  # warm up (imports, first-use caches) so that peak memory is the export's own
                for fmt in FORMATS:
                    export(release, fmt, work / "warm" / fmt)
                shutil.rmtree(work / "warm")
            for fmt in FORMATS:
                m = export(release, fmt, work / f"out-{n}-{fmt}")
                shutil.rmtree(work / f"out-{n}-{fmt}")
                assert m["cases"] == cases, m
                traced = None
                if n < 2:  # the small releases: the exact allocation peak, to see whether it grows
                    traced = export(release, fmt, work / f"out-{n}-{fmt}", traced=True)["traced_mb"]
                    shutil.rmtree(work / f"out-{n}-{fmt}")
                rows.append(
                    (
                        name,
                        fmt,
                        cases / m["seconds"],
                        cases / base,
                        m["peak_mb"],
                        traced,
                        m["bytes"] / 1e6,
                        freeze,
                    )
                )
                print(rows[-1], flush=True)
        print()
        print("| release | freeze s | freeze peak allocated MB (tracemalloc) |")
        print("|---|---|---|")
        for name, seconds, traced in freezes:
            print(f"| {name} | {seconds:.1f} | {traced:.1f} |")
        print()
        print("| release | format | export cases/s | nibabel loop cases/s (baseline) | ratio | "
              "peak RSS growth MB | peak allocated MB (tracemalloc) | MB written | freeze s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for name, fmt, rate, base_rate, peak, traced, mb, freeze in rows:
            exact = f"{traced:.1f}" if traced is not None else "–"
            print(
                f"| {name} | {fmt} | {rate:.2f} | {base_rate:.2f} | {rate / base_rate:.2f} | {peak:.0f} | "
                f"{exact} | {mb:.0f} | {freeze:.1f} |"
            )


if __name__ == "__main__":
    main()
