"""PACS import throughput and memory, against a plain dicomweb-client retrieval loop in the same run.

An Orthanc with its DICOMweb plugin is started on loopback (``tests/pacs/orthanc.py``: a temporary
configuration and storage, never the system service) and given N studies: the real 30-slice CT of
../shared/data and N-1 copies of its pixels under new patients and UIDs. For each N:

- baseline: a plain ``dicomweb-client`` loop, one study after the other (``iter_study``, the instances as
  stored: ``("application/dicom", "*")``), each instance parsed by the client and dropped;
- baseline + write: the same loop writing each instance to a folder;
- baseline + write + ingest: that folder then given to the ingest of files (``scans_ingest``, what
  ``manage.py ingest`` does): the import as one would do it without the PACS integration;
- platform: ``pacs.importing.import_run`` (QIDO-RS listing, WADO-RS retrieval with
  ``PACS_RETRIEVE_WORKERS`` threads into bounded batches, then the ingest of files: de-identification,
  canonical NIfTI, rows), timed whole and its retrieval phase alone.

Throughput in instances per second, with the default settings (``PACS_BATCH_INSTANCES`` 1000: one batch).

Memory: for each N, a fresh process (Django set up, Orthanc's studies loaded, modules warmed by a first
import of one study) imports the N studies with ``PACS_BATCH_INSTANCES`` = 60 (two series per batch, so a
larger N means more batches); its peak RSS growth during the import (VmHWM reset first; the ingest's worker
processes are not in it) is printed beside the bytes retrieved. Flat = the same peak whatever N.

    .venv/bin/python bench/bench_pacs.py                 # N = 1, 4, 8 studies (30..240 instances)
    .venv/bin/python bench/bench_pacs.py --studies 1 2   # other N
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REAL_CT, django_setup, measured  # noqa: E402


def load_studies(orthanc, n: int) -> list[str]:
    from tests.pacs.conftest import load_ct

    orthanc.clear()
    return load_ct(orthanc, copies=n - 1)


def baseline(orthanc, studies: list[str], write_to: Path | None, ingest: bool = False) -> dict:
    from core.services import project_create
    from studies.services.scans import scans_ingest
    from tests.pacs.conftest import orthanc_client

    client = orthanc_client(orthanc)
    count = 0
    project = project_create(slug=f"base-{time.monotonic_ns()}", name="baseline") if ingest else None
    with measured() as m:
        for uid in studies:
            for ds in client.iter_study(uid, media_types=(("application/dicom", "*"),)):
                if write_to is not None:
                    folder = write_to / str(ds.SeriesInstanceUID)
                    folder.mkdir(exist_ok=True)
                    ds.save_as(folder / f"{count:06d}.dcm", enforce_file_format=False)
                count += 1
                del ds
        if project is not None and write_to is not None:
            summary = scans_ingest(project=project, paths=[write_to])
            assert len(summary.stored) == len(studies), summary.errors
    if write_to is not None:
        shutil.rmtree(write_to, ignore_errors=True)
    return {**m, "instances": count}


def platform(orthanc, studies: list[str], n: int) -> dict:
    from core.jobs import job_create
    from core.services import project_create
    from pacs.importing import import_run
    from pacs.models import PacsImport
    from pacs.services import SourceSpec, source_create
    from tests.pacs.orthanc import PASSWORD, USER

    project = project_create(slug=f"bench-{n}-{time.monotonic_ns()}", name="bench")
    spec = SourceSpec(
        name="orthanc", base_url=orthanc.dicomweb, auth="basic", username=USER, password=PASSWORD
    )
    source = source_create(project=project, spec=spec, user=None)
    job = job_create(project=project, kind="pacs_import")
    pacs_import = PacsImport.objects.create(project=project, source=source, job=job, study_uids=studies)
    scratch = Path(tempfile.mkdtemp(prefix="bench-pacs-"))
    with measured() as m:
        tally = import_run(pacs_import=pacs_import, scratch=scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    assert tally.failed == 0 and tally.stored == len(studies), tally.errors
    return {**m, "instances": tally.instances, "retrieve_seconds": tally.retrieve_seconds}


def memory_one(n: int) -> None:
    """In this (fresh) process: warm up with one study, then import ``n`` studies; print JSON."""
    import json

    work = Path(tempfile.mkdtemp(prefix="bench-pacs-mem-"))
    os.environ["PACS_BATCH_INSTANCES"] = "60"
    django_setup(work)
    from tests.pacs.orthanc import orthanc_start

    orthanc = orthanc_start(work / "orthanc")
    try:
        studies = load_studies(orthanc, n)
        platform(orthanc, studies[:1], 0)  # modules, caches and pools warmed
        ours = platform(orthanc, studies, n)
    finally:
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"n": n, "instances": ours["instances"], "peak_mb": ours["peak_mb"]}))


def memory_rows(ns: list[int]) -> None:
    import json
    import subprocess

    print("\n| studies | instances | retrieved MB | platform peak RSS growth MB (batches of 60 instances) |")
    print("|---|---|---|---|")
    for n in ns:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-one", str(n)], capture_output=True, text=True, timeout=1200
        )
        if out.returncode != 0:
            print(f"| {n} | failed: {out.stderr.strip().splitlines()[-1:]} |")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        mb = row["instances"] * (REAL_CT_BYTES / 30) / 2**20
        print(f"| {n} | {row['instances']} | {mb:.0f} | {row['peak_mb']:.1f} |", flush=True)


REAL_CT_BYTES = sum(p.stat().st_size for p in REAL_CT.glob("*.dcm")) if REAL_CT.is_dir() else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--memory-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if not REAL_CT.is_dir():
        sys.exit(f"the real CT {REAL_CT} is absent")
    if args.memory_one:
        memory_one(args.memory_one)
        return
    work = Path(tempfile.mkdtemp(prefix="bench-pacs-"))
    django_setup(work)
    from django.conf import settings

    from tests.pacs.orthanc import orthanc_missing, orthanc_start

    if why := orthanc_missing():
        sys.exit(why)
    orthanc = orthanc_start(work / "orthanc")
    print(
        f"Orthanc {orthanc.rest().get(orthanc.url + '/system', timeout=10).json()['Version']} on loopback; "
        f"PACS_RETRIEVE_WORKERS={settings.PACS_RETRIEVE_WORKERS} "
        f"PACS_BATCH_INSTANCES={settings.PACS_BATCH_INSTANCES}"
        f"; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    rows = []
    try:
        for n in args.studies:
            studies = load_studies(orthanc, n)
            base = baseline(orthanc, studies, None)
            folder = work / "baseline-files"
            folder.mkdir(exist_ok=True)
            written = baseline(orthanc, studies, folder)
            folder.mkdir(exist_ok=True)
            ingested = baseline(orthanc, studies, folder, ingest=True)
            ours = platform(orthanc, studies, n)
            rows.append((n, base, written, ingested, ours))
            k = base["instances"]
            print(
                f"N={n}: {k} instances; loop {k / base['seconds']:.1f}, "
                f"loop+write {k / written['seconds']:.1f}, "
                f"loop+write+ingest {k / ingested['seconds']:.1f}, platform {k / ours['seconds']:.1f} "
                f"(retrieval {k / ours['retrieve_seconds']:.1f}) inst/s",
                flush=True,
            )
    finally:
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        "\n| studies | instances | dicomweb-client loop | loop + write | loop + write + ingest "
        "| platform import | platform retrieval phase | peak MB: loop / loop+write+ingest / platform |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, base, written, ingested, ours in rows:
        k = base["instances"]

        def rate(m: dict, key: str = "seconds", k: int = k) -> str:
            return f"{k / m[key]:.1f}"

        print(
            f"| {n} | {k} | {rate(base)} | {rate(written)} | {rate(ingested)} | {rate(ours)} "
            f"({ingested['seconds'] / ours['seconds']:.2f}x loop+write+ingest, "
            f"{base['seconds'] / ours['seconds']:.2f}x loop) | {rate(ours, 'retrieve_seconds')} "
            f"({base['seconds'] / ours['retrieve_seconds']:.2f}x loop) | "
            f"{base['peak_mb']:.1f} / {ingested['peak_mb']:.1f} / {ours['peak_mb']:.1f} |"
        )
    print("(instances per second; ratios: the other method's time over the platform's, >1 = platform faster)")
    if not args.skip_memory:
        memory_rows(args.studies)


if __name__ == "__main__":
    main()
