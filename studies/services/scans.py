"""Scan ingest: files, folders and zip archives in; de-identified patients, studies and scans out.

Each series (DICOM) or image file (NIfTI, PNG, JPEG) is one unit: it is stored whole (rows, canonical
NIfTI, thumbnail, de-identified header) or not at all. Units are read in parallel worker processes
when there are several; rows are written by the calling process.
"""

import gc
import importlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
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
from studies.ingest import dicom_decode
from studies.ingest.files import FoundFile, file_kind, files_collect
from studies.ingest.load import load_unit_safe, read_partition
from studies.ingest.types import IngestError
from studies.services.scan_store import AlreadyStored, Unit, scan_store, scan_summary, unit_stored_scan

log = logging.getLogger(__name__)

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
    workdir: Path | None = None,
) -> IngestSummary:
    """Ingest every scan found under ``paths`` into ``project``.

    ``modality`` overrides the modality of non-DICOM files (NIfTI default ``OT``, PNG/JPEG ``CR``).
    ``study_pattern`` is a regex whose first group, applied to a non-DICOM file name, names the patient
    and study it belongs to (default: the file stem). Re-ingesting the same files stores nothing new.

    With several worker processes (``workers``, default ``INGEST_WORKERS`` or one per core) DICOM
    folders are read in parallel, each file read and parsed once in its worker; progress counts the
    folders read in the first half and the series stored in the second. Zip archives are extracted
    under ``workdir`` when given (a job's scratch folder, removed with the job's raw uploads).
    """
    summary = IngestSummary()
    report = progress or (lambda done, total, message: None)
    with tempfile.TemporaryDirectory(prefix="ingest-", dir=workdir) as tmp, ExitStack() as stack:
        found, collect_errors = files_collect(paths, Path(tmp))
        summary.errors.extend(e.as_dict() for e in collect_errors)
        display = {f.path: f.display for f in found}
        dicom_paths = [f.path for f in found if file_kind(f.path) == "dicom"]
        others = [(f, kind) for f in found if (kind := file_kind(f.path)) != "dicom"]
        scratch = storage_scratch_dir()
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        partitions = _partitions(dicom_paths)
        n_workers = _worker_count(len(partitions) + len(others), workers)
        pool = None
        if n_workers > 1:
            mp_context = _mp_context()
            if mp_context.get_start_method() == "fork":
                gc.freeze()  # children then do not copy the parent's heap pages when their collector runs
                stack.callback(gc.unfreeze)
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    max_workers=n_workers,
                    mp_context=mp_context,
                    # each worker decodes a compressed series on its share of the cores
                    initializer=dicom_decode.configure,
                    initargs=(settings.INGEST_DECODE_WORKERS, n_workers),
                )
            )
        ctx_ = _Context(project=project, display=display, scratch=scratch, summary=summary, modality=modality)
        if pool is not None and len(partitions) > 1:
            units = _dicom_units_parallel(ctx_, partitions, pool, report)
        else:
            units = _dicom_units(ctx_, dicom_paths)
        units += [_file_unit(ctx_, f, kind) for f, kind in others]
        units = [u for u in units if not _unit_is_duplicate(project=project, unit=u, summary=summary)]
        _units_run(
            ctx_, units, pool=pool if len(units) > 1 else None, report=report, study_pattern=study_pattern
        )
    return summary


_WORKER_MODULES = [
    "studies.ingest.load",
    "studies.ingest.dicom",
    "studies.ingest.volume_io",
    "studies.ingest.dicom_identity",
]


def _mp_context():
    """How worker processes start. ``fork`` (instant) when this process runs a single thread: the
    children use no database connection and leave with ``os._exit``, so the inherited sockets are never
    touched. With other threads alive (a threaded server), ``forkserver``: clean processes, slower to
    start the first time."""
    for name in _WORKER_MODULES:
        importlib.import_module(name)
    # a job's lease thread (core.jobs) only sleeps and renews a row: it holds nothing a child needs
    if sum(1 for t in threading.enumerate() if not getattr(t, "fork_safe", False)) == 1:
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_WORKER_MODULES)
    return ctx


@dataclass
class _Context:
    project: Project
    display: dict[Path, str]
    scratch: Path
    summary: IngestSummary
    modality: str

    @property
    def filename(self) -> str:
        return "image.nii.gz" if settings.CANONICAL_NIFTI_GZIP else "image.nii"

    def error(self, exc: IngestError) -> None:
        exc.file = self.display.get(Path(exc.file), exc.file)
        self.summary.errors.append(exc.as_dict())

    def dicom_unit(
        self, series_uid: str, paths: list[Path], sop_uids: list[str], checksums: list[str]
    ) -> Unit:
        secret = self.project.deid_secret
        label = self.display.get(paths[0], str(paths[0]))
        if len(paths) > 1:
            label = f"{Path(label).parent}/ (series of {len(paths)} files)"
        return Unit(
            kind="dicom",
            label=label,
            paths=paths,
            displays=[self.display.get(p, str(p)) for p in paths],
            series_uid=pseudonyms.uid_remap(secret, series_uid),
            checksums=checksums,
            sop_uids=[pseudonyms.uid_remap(secret, s) for s in sop_uids],
        )


def _partitions(paths: list[Path]) -> list[list[Path]]:
    """DICOM candidates grouped by folder (a series rarely spans folders), largest first."""
    by_folder: dict[Path, list[Path]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, []).append(path)
    return sorted(by_folder.values(), key=len, reverse=True)


def _dicom_units(ctx: _Context, paths: list[Path]) -> list[Unit]:
    """Read all headers here and group them into series (one process)."""
    from studies.ingest.dicom import dicom_group_series, dicom_read_headers

    headers, errors = dicom_read_headers(paths)
    for err in errors:
        ctx.error(err)
    units = []
    for series_uid, files in dicom_group_series(headers).items():
        unit = ctx.dicom_unit(
            series_uid, [f.path for f in files], [f.sop_uid for f in files], [f.checksum for f in files]
        )
        unit.dicom, unit.first_header = files, files[0].header
        units.append(unit)
    return units


def _dicom_units_parallel(ctx: _Context, partitions: list[list[Path]], pool, report: Progress) -> list[Unit]:
    """Each worker reads and loads whole folders; a series found in several folders is read again whole."""
    secret = ctx.project.deid_secret
    jobs = [(paths, ctx.scratch / f"p{i}", ctx.filename, "", secret) for i, paths in enumerate(partitions)]
    by_series: dict[str, list] = {}
    for done, (reads, errors) in enumerate(pool.map(read_partition, jobs), start=1):
        for err in errors:
            ctx.error(err)
        for read in reads:
            by_series.setdefault(read.series_uid, []).append(read)
        report(done, 2 * len(jobs), f"read {done} of {len(jobs)} folders")
    units = []
    for series_uid, reads in by_series.items():
        paths = [p for r in reads for p in r.paths]
        unit = ctx.dicom_unit(
            series_uid, paths, [s for r in reads for s in r.sop_uids], [c for r in reads for c in r.checksums]
        )
        if len(reads) == 1:
            unit.identity = reads[0].identity
            unit.loaded = reads[0].loaded
            if isinstance(unit.loaded, IngestError):
                unit.loaded.file = ctx.display.get(Path(unit.loaded.file), unit.loaded.file)
        units.append(unit)  # spanning folders: loaded is None, read again below
    return units


def _file_unit(ctx: _Context, f: FoundFile, kind: str) -> Unit:
    checksum = sha256_file(f.path)
    return Unit(
        kind=kind,
        label=f.display,
        paths=[f.path],
        displays=[f.display],
        series_uid=pseudonyms.uid_remap(ctx.project.deid_secret, "sha256:" + checksum),
        checksums=[checksum],
        sop_uids=[],
        modality=ctx.modality or ("OT" if kind == "nifti" else "CR"),
    )


def _unit_is_duplicate(*, project: Project, unit: Unit, summary: IngestSummary) -> bool:
    existing = unit_stored_scan(project=project, unit=unit)
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
    ctx: _Context, units: list[Unit], *, pool, report: Progress, study_pattern: str | None
) -> None:
    """Read the units not read yet (on the pool when given) and store each as it comes back."""
    total = len(units)
    report(total, 2 * total, f"{total} series to store")
    jobs = []
    for i, unit in enumerate(units):
        if unit.loaded is None:
            out_dir = ctx.scratch / f"u{i}"
            out_dir.mkdir()
            jobs.append((unit.kind, unit.paths, unit.dicom, unit.modality, out_dir, unit.label, ctx.filename))
    fresh = iter(pool.map(load_unit_safe, jobs) if pool is not None else map(load_unit_safe, jobs))
    for done, unit in enumerate(units, start=1):
        loaded = unit.loaded if unit.loaded is not None else next(fresh)
        unit.dicom = []  # headers no longer needed: free them as we go
        if isinstance(loaded, IngestError):
            ctx.error(loaded)  # its file named as found (archive!member), not by where it was extracted
        else:
            try:
                scan = scan_store(project=ctx.project, unit=unit, loaded=loaded, study_pattern=study_pattern)
            except AlreadyStored as exc:  # by an ingest running at the same time: a duplicate like any other
                if not _unit_is_duplicate(project=ctx.project, unit=unit, summary=ctx.summary):
                    ctx.summary.errors.append(exc.as_dict())
            except IngestError as exc:
                ctx.summary.errors.append(exc.as_dict())
            else:
                ctx.summary.stored.append(scan_summary(scan))
        report(total + done, 2 * total, unit.label)
