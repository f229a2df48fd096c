"""Exporting a frozen release: its cases read back as plain records (a database chunk at a time, every
file checked against its frozen sha256), written in one format (``releases/formats/``) through a sink: a
folder (the CLI) or storage (a job on the ``default`` queue), with the dataset card, the manifest and
``SHA256SUMS``."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction

from core.errors import public_message
from core.storage import sha256_file, storage_local_copy, storage_put_file, storage_save_bytes
from releases import formats as formats_pkg
from releases.errors import ReleaseError
from releases.models import DatasetRelease, ReleaseCase, ReleaseExport, ReleaseLabel, ReleaseStatus
from releases.records import (
    CaseRecord,
    ExportSummary,
    FileList,
    FormatError,
    ImageRecord,
    LabelRecord,
    ReleaseMeta,
)
from releases.records import (
    GazeAnatomyRecord as GazeRecordOut,
)
from studies.masks import mask_load, mask_rows
from studies.models import Scan


def export_formats() -> dict[str, Any]:
    """Format name -> exporter module (``NAME``, ``LABEL_KINDS``, ``export``)."""
    from importlib import import_module

    out = {}
    for module in ("rexgroundingct", "monai_datalist", "dicom_seg", "fgcxr", "iai", "chexpert", "radfact"):
        try:
            mod = import_module(f"{formats_pkg.__name__}.{module}")
        except ModuleNotFoundError:  # pragma: no cover - a format whose library is missing
            continue
        out[mod.NAME] = mod
    return out


def format_get(name: str):
    found = export_formats()
    if name not in found:
        raise ReleaseError("format", f"unknown format {name!r}: choose one of {', '.join(sorted(found))}")
    return found[name]


def release_manifest(release: DatasetRelease) -> dict[str, Any]:
    if release.status != ReleaseStatus.FROZEN or not release.manifest:
        raise ReleaseError("release", f"{release} is not frozen ({release.status})")
    with default_storage.open(release.manifest.name, "rb") as fh:
        data = fh.read()
    _manifest_check(release, hashlib.sha256(data).hexdigest())
    return json.loads(data)


def _manifest_check(release: DatasetRelease, digest: str) -> None:
    if digest != release.manifest_sha256:
        raise ReleaseError("manifest", f"{release.manifest.name} changed since {release} was frozen (sha256)")


def _frozen_entries(release: DatasetRelease) -> Iterator[dict[str, Any]]:
    """The release's case entries, a database chunk at a time (the manifest is only hashed, not held)."""
    if release.status != ReleaseStatus.FROZEN or not release.manifest:
        raise ReleaseError("release", f"{release} is not frozen ({release.status})")
    digest = hashlib.sha256()
    with default_storage.open(release.manifest.name, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    _manifest_check(release, digest.hexdigest())
    rows = ReleaseCase.objects.filter(release=release).order_by("id").values_list("entry", flat=True)
    yield from rows.iterator(chunk_size=CHUNK)


class _Files:
    """Local copies of stored files for one case, each checked against the manifest's sha256."""

    def __init__(self, stack: ExitStack, case_id: str):
        self.stack, self.case_id = stack, case_id

    def get(self, key: str, sha: str, what: str) -> Path:
        if not default_storage.exists(key):
            raise ReleaseError(f"{self.case_id}.{what}", f"{key} is missing from storage")
        path = self.stack.enter_context(storage_local_copy(key))
        if sha256_file(path) != sha:
            raise ReleaseError(
                f"{self.case_id}.{what}",
                f"{key} changed since the release was frozen (sha256 differs): the release can no longer be "
                "exported as frozen; freeze a new version",
            )
        return path


CHUNK = 256  # cases whose rows are read together


def _case_rows(cases: list[dict]) -> dict[int, tuple]:
    """scan id -> (scan, SOP UIDs in slice order, the study's first report) for a chunk of cases."""
    from studies.models import Report, ScanSource

    scans = {s.pk: s for s in Scan.objects.filter(pk__in=[c["scan"] for c in cases])}
    uids: dict[int, list[str]] = defaultdict(list)
    dicom = [pk for pk, s in scans.items() if s.source_format == "dicom"]
    slices: dict[int, list[tuple[int | None, str]]] = defaultdict(list)
    for scan_id, index, uid in ScanSource.objects.filter(scan_id__in=dicom).values_list(
        "scan_id", "slice_index", "sop_uid"
    ):
        slices[scan_id].append((index, uid))
    for scan_id, found in slices.items():
        # each slice's own instance UID, in slice order; only when every slice of the stored scan knows its
        # instance (scans stored before slices were recorded, multi-frame ones: the exporter derives UIDs)
        depth = scans[scan_id].shape[2] if len(scans[scan_id].shape) == 3 else 0
        if sorted(i for i, uid in found if i is not None and uid) == list(range(depth)) and depth:
            uids[scan_id] = [uid for _, uid in sorted((i, uid) for i, uid in found if i is not None and uid)]
    reports: dict[int, Report] = {}
    for report in Report.objects.filter(study_id__in={s.study_id for s in scans.values()}).order_by("-id"):
        reports[report.study_id] = report  # the first by id wins
    return {pk: (s, uids.get(pk, []), reports.get(s.study_id)) for pk, s in scans.items()}


def release_cases(release: DatasetRelease, *, verify: bool = True) -> Iterator[CaseRecord]:
    """The release's cases, one at a time; files are local (copies for remote storage) while the case is
    being written, and checked against their frozen sha256."""
    chunk: dict[int, tuple] = {}
    batch: list[dict] = []
    entries = _frozen_entries(release)
    while True:
        if not batch:
            batch = list(itertools.islice(entries, CHUNK))
            if not batch:
                return
            chunk = _case_rows(batch)
            batch.reverse()
        c = batch.pop()
        scan, sop_uids, report = chunk.get(c["scan"], (None, [], None))
        with ExitStack() as stack:
            files = _Files(stack, c["case_id"])
            get = (
                files.get if verify else (lambda key, sha, what: stack.enter_context(storage_local_copy(key)))
            )
            header = None
            series_uid = ""
            if scan is not None:
                series_uid = scan.series_uid
                header_key = (scan.meta or {}).get("header_file")
                if header_key and default_storage.exists(header_key):
                    import gzip

                    with default_storage.open(header_key, "rb") as fh:
                        header = json.loads(gzip.decompress(fh.read()))
            image = ImageRecord(
                path=get(c["image_key"], c["image_sha256"], "image"),
                shape=list(c["shape"]),
                spacing=list(c["spacing"]),
                affine=np.asarray(c["affine"], dtype=np.float64),
                modality=c["modality"],
                study_uid=c["study"],
                series_uid=series_uid,
                sop_uids=sop_uids,
                dicom_header=header,
                sha256=c["image_sha256"],
            )
            labels = [
                LabelRecord(
                    label_id=e["label_id"],
                    text=e["text"],
                    kind=e["kind"],
                    code=e["code"],
                    category=e["category"],
                    location=e["location"],
                    laterality=e["laterality"],
                    assertion=e["assertion"],
                    source=e["source"],
                    box=e["box"],
                    mask_path=get(e["mask_key"], e["mask_sha256"], e["label_id"]) if e["mask_key"] else None,
                    provenance=e["provenance"],
                    sha256=e["mask_sha256"],
                    role=e.get("role", "finding"),
                )
                for e in c["labels"]
            ]
            regions: dict = {}  # the case's recordings' region masks, made once
            gaze = [_gaze_record(g, get, c["case_id"], regions) for g in c.get("gaze", [])]
            yield CaseRecord(
                case_id=c["case_id"],
                patient_id=c["patient"],
                study_id=c["study"],
                split=c["split"],
                image=image,
                report={
                    k: getattr(report, k)
                    for k in ("indication", "comparison", "findings", "impression")
                    if report is not None and getattr(report, k)
                },
                report_id=report.external_id if report else "",
                labels=labels,
                gaze=gaze,
                gaze_lacking=list(c.get("gaze_lacking") or []),
                numbering=dict(c.get("numbering") or {}),
            )


def _png_mask(path: Path) -> np.ndarray:
    """A gaze record's stored mask as the picture ``(rows, columns)`` gaze formats work on."""
    return mask_rows(mask_load(path))


def _region_masks(record_pk: int, region_set: str, cache: dict) -> dict[str, np.ndarray]:
    """The region masks the gaze run of anatomy record ``record_pk`` labelled its recording with (stored
    masks, an anatomy model's, EGD-CXR boxes, FG-CXR's halves), made once per recording of a case."""
    from labeling.gaze.sources import recording_region_masks
    from labeling.models import GazeAnatomyRecord

    found = GazeAnatomyRecord.objects.filter(pk=record_pk).select_related("recording").first()
    if found is None:
        return {}
    key = (found.recording_id, region_set)
    if key not in cache:
        cache[key] = recording_region_masks(found.recording, region_set)
    return cache[key]


def _gaze_record(g: dict, get: Callable, case_id: str, cache: dict | None = None) -> GazeRecordOut:
    from labeling.gaze.service import gaze_heatmap_array
    from labeling.models import GazeHeatmap

    focus = get(g["focus_key"], g["focus_sha256"], f"gaze.{g['anatomy']}.focus")
    mask = get(g["mask_key"], g["mask_sha256"], f"gaze.{g['anatomy']}.mask") if g["mask_key"] else None

    def region_mask() -> np.ndarray | None:  # no stored mask of that name: the run's region, made again
        regions = (g.get("params") or {}).get("regions", "anatomy")
        return _region_masks(g["record"], regions, {} if cache is None else cache).get(g["anatomy"])

    def heatmap() -> np.ndarray:
        found = GazeHeatmap.objects.filter(pk=g["heatmap"]).select_related("recording", "run").first()
        if found is None:
            raise ReleaseError(f"{case_id}.gaze.{g['anatomy']}", "its heatmap definition is gone")
        return gaze_heatmap_array(found)

    return GazeRecordOut(
        anatomy=g["anatomy"],
        caption=g["caption"],
        sentences=g["sentences"],
        dwell_s=g["dwell_s"],
        fixations=g["fixations"],
        time_to_first_s=g["time_to_first_s"],
        dwell_share=g["dwell_share"],
        reader=g["reader"],
        recording_id=g["recording_id"],
        load_heatmap=heatmap,
        load_mask=(lambda: _png_mask(mask)) if mask is not None else region_mask,
        load_focus=lambda: _png_mask(focus),
        provenance={"gaze_run": g["gaze_run"], "params": g["params"], "record": g["record"]},
    )


# --- exports --------------------------------------------------------------------------------------------


def export_check(release: DatasetRelease, fmt) -> None:
    """Refuse a format that cannot hold the release's grounded labels (a box in a mask-only format)."""
    unsupported = (
        ReleaseLabel.objects.filter(release=release)
        .exclude(kind__in=fmt.LABEL_KINDS)
        .values_list("case__case_id", "label_id", "kind")[:5]
    )
    if unsupported:
        listed = ", ".join(f"{c}/{lab} ({kind})" for c, lab, kind in unsupported)
        raise ReleaseError(
            "format",
            f"{fmt.NAME} holds only {', '.join(fmt.LABEL_KINDS)} labels, but {release} has others: {listed}"
            " - choose a format that holds them (e.g. radfact for boxes) or freeze a release without them",
        )


def _classes(release: DatasetRelease) -> dict[int, str]:
    """The release's class table; for a release frozen before tables were kept, its mask classes numbered
    in name order (``freeze.class_table`` of no previous table)."""
    if release.classes:
        return {int(k): v for k, v in release.classes.items()}
    from releases.freeze import class_table
    from releases.labels import class_name

    rows = ReleaseLabel.objects.filter(release=release, kind="mask").values("category", "code").distinct()
    return {int(k): v for k, v in class_table(None, {class_name(row) for row in rows}).items()}


def _meta(release: DatasetRelease) -> ReleaseMeta:
    d = release.dataset
    return ReleaseMeta(
        name=d.slug,
        version=release.version,
        description=d.description,
        licence=d.licence,
        citation=d.citation,
        extra={"title": d.name, "manifest_sha256": release.manifest_sha256, "selection": release.selection},
        frozen_at=release.frozen_at,
        classes=_classes(release),
        previous_version=(
            DatasetRelease.objects.filter(dataset=d, version__lt=release.version, status=ReleaseStatus.FROZEN)
            .order_by("-version")
            .values_list("version", flat=True)
            .first()
        ),
    )


def release_export_to(release: DatasetRelease, fmt_name: str, sink, progress=None) -> ExportSummary:
    """Write ``release`` in one format through ``sink``; the dataset card and manifest go beside it."""
    fmt = format_get(fmt_name)
    export_check(release, fmt)
    total = release.counts.get("cases", 0) or 1
    try:
        summary = fmt.export(
            release_cases(release),
            sink,
            _meta(release),
            (lambda n: progress(n / total)) if progress else None,
        )
    except FormatError as exc:
        raise ReleaseError(exc.field, exc.reason) from exc
    splits = _splits(release)
    sink.put_bytes("README.md", _readme(release, fmt.NAME, splits).encode())
    with storage_local_copy(release.manifest.name) as manifest:
        copy = sink.scratch() / "manifest.json"
        shutil.copyfile(manifest, copy)
        sink.put_file("manifest.json", copy)
    sink.put_bytes("croissant.json", _croissant(release, fmt.NAME, splits, sink.files))
    sums = sink.scratch() / "SHA256SUMS"
    with open(sums, "w", encoding="utf-8") as out:
        sink.files.write_sums(out)
    sink.put_file("SHA256SUMS", sums)  # every file but itself: `sha256sum -c SHA256SUMS` in the folder
    return summary


def _splits(release: DatasetRelease) -> list[str]:
    """The release's splits that hold cases: train, val, test first."""
    found = [s for s, n in (release.counts.get("cases_per_split") or {}).items() if n]
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(found, key=lambda s: (order.get(s, 3), s))


def _readme(release: DatasetRelease, fmt_name: str, splits: list[str]) -> str:
    """The export's README.md: the release's card with the format's Hugging Face ``configs``."""
    from releases.card_meta import export_readme
    from releases.card_sections import front_matter

    return export_readme(release.card, fmt_name, splits, front_matter(release.dataset, release))


def _croissant(release: DatasetRelease, fmt_name: str, splits: list[str], files: FileList) -> bytes:
    """``croissant.json``: the Croissant description of the files written so far (``releases/croissant``)."""
    from releases.croissant import croissant, croissant_bytes

    d = release.dataset
    doc = croissant(
        name=d.slug, title=d.name, description=d.description, version=release.version,
        frozen_at=release.frozen_at, licence=d.licence, citation=d.citation, fmt_name=fmt_name, splits=splits,
        files=files, keywords=["medical imaging", "radiology", "grounded findings", fmt_name],
    )  # fmt: skip
    return croissant_bytes(doc)


class StorageSink:
    """Writes an export's files into storage under ``prefix``; nothing is kept in memory."""

    def __init__(self, prefix: str):
        self.prefix = prefix.rstrip("/")
        self.files = FileList()
        self.keys: list[str] = []
        self._scratch = Path(tempfile.mkdtemp(prefix="export-"))

    def put_bytes(self, relpath: str, data: bytes) -> str:
        key = f"{self.prefix}/{relpath}"
        if default_storage.exists(key):
            default_storage.delete(key)
        self.keys.append(storage_save_bytes(key, data))
        digest = hashlib.sha256(data).hexdigest()
        self.files.append((relpath, len(data), digest))
        return digest

    def put_file(self, relpath: str, local: Path) -> str:
        key = f"{self.prefix}/{relpath}"
        if default_storage.exists(key):
            default_storage.delete(key)
        size, digest = Path(local).stat().st_size, sha256_file(local)
        if Path(local).parent != self._scratch and not str(local).startswith(str(self._scratch)):
            copy = self._scratch / Path(local).name
            shutil.copyfile(local, copy)
            local = copy
        self.keys.append(storage_put_file(key, local))
        self.files.append((relpath, size, digest))
        return digest

    def scratch(self) -> Path:
        return self._scratch

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)


def export_start(*, release: DatasetRelease, fmt_name: str, user=None) -> ReleaseExport:
    """Check the format now (a clear 400), then export as a job on the ``default`` queue."""
    from core.jobs import job_create, job_dispatch
    from releases.tasks import run_export

    fmt = format_get(fmt_name)
    if release.status != ReleaseStatus.FROZEN:
        raise ReleaseError("release", f"{release} is not frozen ({release.status})")
    export_check(release, fmt)
    project = release.dataset.projects.order_by("id").first()
    with transaction.atomic():
        export = ReleaseExport.objects.create(release=release, format=fmt.NAME, created_by=user)
        job = job_create(project=project, kind="release_export", params={"export": export.pk}, user=user)
        export.job = job
        export.prefix = f"releases/{release.dataset.slug}/v{release.version}/exports/{fmt.NAME}-{export.pk}"
        export.save(update_fields=["job", "prefix"])
        job_dispatch(job=job, task=run_export)
    return export


def export_job(*, job) -> tuple[dict, dict, list[dict]]:
    from core.jobs import job_progress

    export = ReleaseExport.objects.select_related("release__dataset").get(pk=job.params["export"])
    export.status = "running"
    export.save(update_fields=["status"])
    sink = StorageSink(export.prefix)
    try:
        summary = release_export_to(
            export.release,
            export.format,
            sink,
            progress=lambda f: job_progress(job_id=job.pk, progress=f, message=f"{export.format}: {f:.0%}"),
        )
    except Exception as exc:
        from core.storage import storage_delete_all

        storage_delete_all(sink.keys)
        export.status, export.error = "failed", public_message(exc)
        export.save(update_fields=["status", "error"])
        raise
    finally:
        sink.close()
    export.status, export.file_count, export.bytes = "succeeded", len(sink.files), sink.files.bytes
    export.summary = {"cases": summary.cases, "labels": summary.labels, "skipped": summary.skipped[:1000]}
    export.save(update_fields=["status", "file_count", "bytes", "summary"])
    counts = {"cases": summary.cases, "labels": summary.labels, "files": len(sink.files)}
    return (
        {"export": export.pk, "prefix": export.prefix},
        counts,
        [{"skipped": s} for s in summary.skipped[:100]],
    )
