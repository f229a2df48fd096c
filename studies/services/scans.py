"""Scan ingest: files, folders and zip archives in; de-identified patients, studies and scans out.

Each series (DICOM) or image file (NIfTI, PNG, JPEG) is one unit: it is stored whole (rows, canonical
NIfTI, thumbnail, de-identified header) or not at all. Units are read in parallel worker processes
when there are several; rows are written by the calling process.
"""

import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from core.models import Project
from core.storage import (
    sha256_file,
    storage_scratch_dir,
)
from studies import pseudonyms
from studies.ingest.files import FoundFile, file_kind, files_collect
from studies.ingest.load import load_unit_safe
from studies.ingest.types import IngestError
from studies.models import Scan, ScanSource
from studies.services.scan_store import Unit, scan_store, scan_summary

log = logging.getLogger(__name__)
FILES_PER_WORKER = 32  # fewer files than this per process are read in this process

Progress = Callable[[int, int, str], None]


@dataclass
class IngestSummary:
    """What an ingest did: stored series, skipped duplicates, and errors (file, reason)."""

    stored: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"stored": self.stored, "duplicates": self.duplicates, "errors": self.errors}

    def counts(self) -> dict[str, int]:
        return {"stored": len(self.stored), "duplicates": len(self.duplicates), "errors": len(self.errors)}


def _worker_count(units: int, workers: int | None) -> int:
    wanted = workers if workers is not None else settings.INGEST_WORKERS
    if wanted <= 0:
        wanted = os.cpu_count() or 1
    if multiprocessing.current_process().daemon:  # e.g. inside a Celery prefork child
        return 1
    return max(1, min(wanted, units))


def scans_ingest(
    *,
    project: Project,
    paths: Iterable[str | os.PathLike],
    modality: str = "",
    study_pattern: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> IngestSummary:
    """Ingest every scan found under ``paths`` into ``project``.

    ``modality`` overrides the modality of non-DICOM files (NIfTI default ``OT``, PNG/JPEG ``CR``).
    ``study_pattern`` is a regex whose first group, applied to a non-DICOM file name, names the patient
    and study it belongs to (default: the file stem). Re-ingesting the same files stores nothing new.
    """
    summary = IngestSummary()
    with tempfile.TemporaryDirectory(prefix="ingest-") as tmp, ExitStack() as stack:
        found, collect_errors = files_collect(paths, Path(tmp))
        summary.errors.extend(e.as_dict() for e in collect_errors)
        n_workers = _worker_count(len(found) // FILES_PER_WORKER + 1, workers)
        pool = None
        if n_workers > 1:
            # forkserver: workers start clean, sharing no database sockets with this process
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(
                ["studies.ingest.load", "studies.ingest.dicom", "studies.ingest.volume_io"]
            )
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx))
        units = _units_plan(project=project, found=found, modality=modality, summary=summary, pool=pool)
        _units_run(
            project=project,
            units=units,
            summary=summary,
            progress=progress,
            pool=pool if len(units) > 1 else None,
            study_pattern=study_pattern,
        )
    return summary


def _read_headers(paths: list[Path], pool: ProcessPoolExecutor | None) -> tuple[list, list[IngestError]]:
    """DICOM headers of ``paths``, in chunks on the worker processes when there is a pool."""
    from studies.ingest.dicom import dicom_read_headers

    if pool is None or len(paths) < 2 * FILES_PER_WORKER:
        return dicom_read_headers(paths)
    size = max(FILES_PER_WORKER, -(-len(paths) // (pool._max_workers * 4)))
    files, errors = [], []
    for chunk_files, chunk_errors in pool.map(
        dicom_read_headers, [paths[i : i + size] for i in range(0, len(paths), size)]
    ):
        files.extend(chunk_files)
        errors.extend(chunk_errors)
    return files, errors


def _units_plan(
    *,
    project: Project,
    found: list[FoundFile],
    modality: str,
    summary: IngestSummary,
    pool: ProcessPoolExecutor | None = None,
) -> list[Unit]:
    from studies.ingest.dicom import dicom_group_series

    secret = project.deid_secret
    display = {f.path: f.display for f in found}
    dicom_paths, others = [], []
    for f in found:
        kind = file_kind(f.path)
        (dicom_paths if kind == "dicom" else others).append((f, kind))
    headers, errors = _read_headers([f.path for f, _ in dicom_paths], pool)
    for err in errors:
        err.file = display.get(Path(err.file), err.file)
        summary.errors.append(err.as_dict())
    units: list[Unit] = []
    for series_uid, files in dicom_group_series(headers).items():
        new_uid = pseudonyms.uid_remap(secret, series_uid)
        sops = [pseudonyms.uid_remap(secret, f.sop_uid) for f in files]
        label = display.get(files[0].path, str(files[0].path))
        if len(files) > 1:
            label = f"{Path(label).parent}/ (series of {len(files)} files)"
        units.append(
            Unit(
                kind="dicom",
                label=label,
                paths=[f.path for f in files],
                displays=[display.get(f.path, str(f.path)) for f in files],
                series_uid=new_uid,
                checksums=[f.checksum for f in files],
                sop_uids=sops,
                dicom=files,
            )
        )
    for f, kind in others:
        checksum = sha256_file(f.path)
        units.append(
            Unit(
                kind=kind,
                label=f.display,
                paths=[f.path],
                displays=[f.display],
                series_uid=pseudonyms.uid_remap(secret, "sha256:" + checksum),
                checksums=[checksum],
                sop_uids=[],
                modality=modality or ("OT" if kind == "nifti" else "CR"),
            )
        )
    return [u for u in units if not _unit_is_duplicate(project=project, unit=u, summary=summary)]


def _unit_is_duplicate(*, project: Project, unit: Unit, summary: IngestSummary) -> bool:
    existing = Scan.objects.filter(project=project, series_uid=unit.series_uid).first()
    if existing is None and unit.sop_uids:
        source = ScanSource.objects.filter(project=project, sop_uid__in=unit.sop_uids).first()
        existing = source.scan if source else None
    if existing is None:
        return False
    stored = set(existing.sources.values_list("sop_uid" if unit.sop_uids else "checksum", flat=True))
    wanted = set(unit.sop_uids or unit.checksums)
    if wanted <= stored:
        summary.duplicates.append({"file": unit.label, "scan_id": existing.pk, "reason": "already stored"})
    else:
        summary.errors.append(
            {
                "file": unit.label,
                "reason": f"series already stored as scan {existing.pk} with other instances "
                f"({len(wanted - stored)} new of {len(wanted)}); delete that scan to ingest it again",
            }
        )
    return True


def _units_run(
    *,
    project: Project,
    units: list[Unit],
    summary: IngestSummary,
    progress: Progress | None,
    pool: ProcessPoolExecutor | None,
    study_pattern: str | None,
) -> None:
    """Read the units (on the pool's processes when given) and store each as it comes back."""
    total = len(units)
    if progress:
        progress(0, total, f"{total} series to read")
    if not total:
        return
    scratch = storage_scratch_dir()
    try:
        jobs = []
        filename = "image.nii.gz" if settings.CANONICAL_NIFTI_GZIP else "image.nii"
        for i, unit in enumerate(units):
            out_dir = scratch / f"u{i}"
            out_dir.mkdir()
            jobs.append((unit.kind, unit.paths, unit.dicom, unit.modality, out_dir, unit.label, filename))
        results = pool.map(load_unit_safe, jobs) if pool is not None else map(load_unit_safe, jobs)
        _store_results(project, units, results, summary, progress, study_pattern)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _store_results(project, units, results, summary, progress, study_pattern) -> None:
    for done, (unit, loaded) in enumerate(zip(units, results), start=1):
        if isinstance(loaded, IngestError):
            summary.errors.append(loaded.as_dict())
        else:
            try:
                scan = scan_store(project=project, unit=unit, loaded=loaded, study_pattern=study_pattern)
            except IngestError as exc:
                summary.errors.append(exc.as_dict())
            else:
                summary.stored.append(scan_summary(scan))
        if progress:
            progress(done, len(units), unit.label)
