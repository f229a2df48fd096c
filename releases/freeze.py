"""Freezing a release: the selected labels (``releases/labels.py``) grouped by scan into cases, patients
split (``releases/splits.py``, stable against the previous version), every file hashed, ``manifest.json``
written to storage and mirrored in ``ReleaseCase`` / ``ReleaseLabel`` rows, the dataset card made; a chunk
of scans at a time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Finding, FindingStatus
from core.errors import public_message
from core.models import JobStatus
from core.storage import sha256_file, storage_put_file
from labeling.models import FindingProposal, RegionProposal
from releases.card import CardStats, Tally, aggregate_metrics, dataset_card, proposal_results
from releases.errors import ReleaseError
from releases.labels import (
    SOURCES,
    STATUSES,
    Hasher,
    Selection,
    candidate_scans,
    case_id,
    class_name,
    gaze_entries,
    gaze_lacking,
    gaze_scans,
    labels_of,
    no_hash,
)
from releases.models import Dataset, DatasetRelease, ReleaseCase, ReleaseLabel, ReleaseStatus
from releases.splits import assign_splits
from studies.models import Scan

__all__ = ["SOURCES", "STATUSES", "Selection", "freeze_job", "release_create", "release_start"]


def _next_version(dataset: Dataset) -> int:
    """The dataset's next version number (call inside a transaction; the dataset row is locked)."""
    Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
    return (DatasetRelease.objects.filter(dataset=dataset).aggregate(v=Max("version"))["v"] or 0) + 1


def selection_empty(dataset: Dataset, sel: Selection) -> bool:
    """A quick look (a few EXISTS queries) whether ``sel`` can hold any label of ``dataset``."""
    projects = list(dataset.projects.all())
    findings = Finding.objects.filter(project__in=projects, status__in=sel.statuses, scan__isnull=False)
    if sel.modalities:
        findings = findings.filter(scan__modality__in=sel.modalities)
    if "human" in sel.sources and findings.exclude(status=FindingStatus.OPEN).exists():
        return False
    if "weak" in sel.sources and (
        findings.filter(status=FindingStatus.OPEN).exists()
        or FindingProposal.objects.filter(project__in=projects, run__status=JobStatus.SUCCEEDED).exists()
        or RegionProposal.objects.filter(project__in=projects, scan__isnull=False).exists()
        or gaze_scans(projects)
    ):
        return False
    return True


def _nothing_to_release(projects, sel: Selection) -> ReleaseError:
    return ReleaseError(
        "selection",
        f"no labels to release: the projects {', '.join(p.slug for p in projects)} have no "
        f"{' or '.join(sel.statuses)} findings from the sources {', '.join(sel.sources)} (review and accept "
        "some first, or select weak labels)",
    )


def release_start(
    *, dataset: Dataset, selection: dict | None = None, user=None, notes: str = ""
) -> DatasetRelease:
    """Reserve the next version and freeze it as a job on the ``default`` queue (hashing every file of a
    large release takes a while). A selection that can hold nothing is refused now."""
    from core.jobs import job_create, job_dispatch
    from releases.tasks import run_freeze

    sel = Selection.parse(selection)
    if selection_empty(dataset, sel):
        raise _nothing_to_release(list(dataset.projects.all()), sel)
    with transaction.atomic():
        release = DatasetRelease.objects.create(
            dataset=dataset, version=_next_version(dataset), selection=sel.as_dict(), notes=notes,
            created_by=user,
        )  # fmt: skip
        project = dataset.projects.order_by("id").first()
        release.job = job_create(
            project=project, kind="release_freeze", params={"release": release.pk}, user=user
        )
        release.save(update_fields=["job"])
        job_dispatch(job=release.job, task=run_freeze)
    return release


def freeze_job(*, job) -> tuple[dict, dict, list[dict]]:
    from core.jobs import job_progress

    release = DatasetRelease.objects.select_related("dataset", "created_by").get(pk=job.params["release"])
    if release.status != ReleaseStatus.FROZEN:  # a job delivered again after it froze has nothing to do
        try:
            release_create(
                dataset=release.dataset, selection=release.selection, user=release.created_by,
                notes=release.notes, release=release,
                progress=lambda f: job_progress(job_id=job.pk, progress=f, message=f"hashing files: {f:.0%}"),
            )  # fmt: skip
        except Exception as exc:
            DatasetRelease.objects.filter(pk=release.pk).update(
                status=ReleaseStatus.FAILED, error=public_message(exc)
            )
            raise
        release.refresh_from_db()
    return {"release": release.pk, "version": release.version}, {"cases": release.counts.get("cases", 0)}, []


FREEZE_CHUNK = 500  # scans whose labels are gathered, hashed, written and stored together


def _chunks(items: list[int], size: int = FREEZE_CHUNK) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def class_table(previous: dict[str, str] | None, names: set[str]) -> dict[str, str]:
    """The dataset's class table: the previous version's (never renumbered) extended by the classes new in
    this version, numbered on in name order. Keys are label values as text (JSON)."""
    table = {str(int(k)): v for k, v in (previous or {}).items()}
    known = set(table.values())
    top = max((int(k) for k in table), default=0)
    for name in sorted(names - known):
        top += 1
        table[str(top)] = name
    return dict(sorted(table.items(), key=lambda kv: int(kv[0])))


def _numbering(scans: list[Scan]) -> dict[int, dict[str, int]]:
    """scan id -> {"patient": the patient's row id, "study": 1 + the study's rank among the patient's
    studies, "scan": 1 + the scan's rank among the study's scans} (ranks by row id, so they never change
    for stored rows): the numbers of published names like ReXGroundingCT's ``train_1741_b_2``."""
    from studies.models import Study

    patients = {scan.study.patient_id for scan in scans}
    study_rank: dict[int, int] = {}
    seen: dict[int, int] = defaultdict(int)
    for study_id, patient_id in (
        Study.objects.filter(patient_id__in=patients).order_by("id").values_list("id", "patient_id")
    ):
        seen[patient_id] += 1
        study_rank[study_id] = seen[patient_id]
    scan_rank: dict[int, int] = {}
    seen = defaultdict(int)
    studies = {scan.study_id for scan in scans}
    for scan_id, study_id in (
        Scan.objects.filter(study_id__in=studies).order_by("id").values_list("id", "study_id")
    ):
        seen[study_id] += 1
        scan_rank[scan_id] = seen[study_id]
    return {
        scan.pk: {
            "patient": scan.study.patient_id,
            "study": study_rank[scan.study_id],
            "scan": scan_rank[scan.pk],
        }
        for scan in scans
    }


def _case_entry(
    scan: Scan, labels: list[dict], split: str, hasher, numbering: dict[str, int]
) -> dict[str, Any]:
    return {
        "case_id": case_id(scan),
        "scan": scan.pk,
        "project": scan.project_id,
        "patient": scan.study.patient.pseudonym,
        "study": scan.study.study_uid,
        "split": split,
        "modality": scan.modality,
        "shape": scan.shape,
        "spacing": scan.spacing,
        "affine": scan.affine,
        "image_key": scan.file.name,
        "image_sha256": hasher(scan.file.name),
        "labels": labels,
        "gaze": gaze_entries(scan, hasher),
        **({"gaze_lacking": lacking} if (lacking := gaze_lacking(scan)) else {}),
        "numbering": numbering,
    }


def release_create(
    *,
    dataset: Dataset,
    selection: dict | None = None,
    user=None,
    notes: str = "",
    progress=None,
    release: DatasetRelease | None = None,
) -> DatasetRelease:
    """Freeze the next version of ``dataset`` (or fill ``release``, reserved by ``release_start``). Raises
    ``ReleaseError`` (nothing stored) when the selection holds no labels or a file is missing.

    Two passes over the candidate scans, a chunk at a time: the first reads the labels' categories for the
    patient splits, the second hashes the files, writes each case to the manifest (a scratch file, then
    storage) and stores its rows; memory holds one chunk, not the release."""
    sel = Selection.parse(selection)
    projects = list(dataset.projects.all())
    report = progress or (lambda f: None)
    taken = set(
        Finding.objects.filter(project__in=projects, status__in=sel.statuses)
        .exclude(annotations__region_proposal=None)
        .values_list("annotations__region_proposal", flat=True)
    )
    gaze = gaze_scans(projects) if "weak" in sel.sources else set()
    candidates = candidate_scans(projects, sel, taken, gaze)
    patients: dict[str, set[str]] = defaultdict(set)
    names: set[str] = set()  # the mask classes of this version
    case_scans: list[int] = []
    for n, chunk in enumerate(_chunks(candidates), 1):
        by_scan = labels_of(projects, sel, no_hash, taken, gaze, chunk)
        owners = dict(
            Scan.objects.filter(pk__in=list(by_scan)).values_list("id", "study__patient__pseudonym")
        )
        for scan_id in sorted(by_scan):
            entries = by_scan[scan_id]
            patients[owners[scan_id]].update(
                e["category"] or e["code"] for e in entries if e["assertion"] == "present"
            )
            names.update(class_name(e) for e in entries if e["kind"] == "mask")
            case_scans.append(scan_id)
        report(0.2 * n * FREEZE_CHUNK / max(1, len(candidates)))
    if not case_scans:
        raise _nothing_to_release(projects, sel)
    previous = (
        DatasetRelease.objects.filter(dataset=dataset, status=ReleaseStatus.FROZEN)
        .order_by("-version")
        .first()
    )
    earlier = {}
    if previous is not None:
        earlier = dict(ReleaseCase.objects.filter(release=previous).values_list("patient", "split"))
    classes = class_table(previous.classes if previous else None, names)
    splits = assign_splits(
        {p: sorted(c) for p, c in patients.items()}, previous=earlier, ratios=sel.ratios, seed=sel.seed
    )
    del patients

    hasher = Hasher()
    scratch = Path(tempfile.mkdtemp(prefix="manifest-"))
    try:
        with transaction.atomic():
            if release is None:
                release = DatasetRelease.objects.create(
                    dataset=dataset, version=_next_version(dataset), selection=sel.as_dict(), notes=notes,
                    created_by=user,
                )  # fmt: skip
            head = {
                "dataset": dataset.slug,
                "name": dataset.name,
                "version": release.version,
                "selection": sel.as_dict(),
                "previous": previous.version if previous else None,
                "classes": classes,
                "created_at": timezone.now().isoformat(),
                "created_by": user.username if user else None,
            }
            tally, stats, compared = Tally(), CardStats(), []
            path = scratch / "manifest.json"
            with open(path, "w", encoding="utf-8") as out:
                out.write(json.dumps(head, default=str)[:-1] + ',\n"cases": [')
                done = 0
                for chunk in _chunks(case_scans):
                    by_scan = labels_of(projects, sel, hasher, taken, gaze, chunk)
                    scans = [
                        scan
                        for scan in Scan.objects.filter(pk__in=chunk)
                        .select_related("study__patient")
                        .order_by("id")
                        if scan.pk in by_scan
                    ]
                    numbers = _numbering(scans)
                    cases = [
                        _case_entry(
                            scan,
                            by_scan[scan.pk],
                            splits[scan.study.patient.pseudonym],
                            hasher,
                            numbers[scan.pk],
                        )
                        for scan in scans
                    ]
                    for case in cases:
                        out.write(("\n" if done == 0 else ",\n") + json.dumps(case, default=str))
                        done += 1
                        tally.add(case)
                        stats.add(case)
                        compared += proposal_results(case)
                    _store_rows(release, cases)
                    report(0.2 + 0.8 * done / len(case_scans))
                release.counts = tally.as_dict()
                release.classes = classes
                release.metrics = aggregate_metrics(compared)
                out.write(
                    "\n],\n"
                    + json.dumps({"counts": release.counts, "metrics": release.metrics}, default=str)[1:]
                )
            release.frozen_at = timezone.now()
            release.card = dataset_card(dataset, release, stats)
            key = f"releases/{dataset.slug}/v{release.version}/manifest.json"
            if default_storage.exists(key):
                default_storage.delete(key)
            release.manifest_sha256 = sha256_file(path)
            release.manifest = storage_put_file(key, path)
            release.status = ReleaseStatus.FROZEN
            release.save()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return release


def _store_rows(release: DatasetRelease, cases: list[dict]) -> None:
    rows = ReleaseCase.objects.bulk_create(
        [
            ReleaseCase(
                release=release,
                case_id=c["case_id"],
                scan_id=c["scan"],
                patient=c["patient"],
                split=c["split"],
                image_key=c["image_key"],
                image_sha256=c["image_sha256"],
                categories=sorted({e["category"] for e in c["labels"] if e["category"]}),
                entry=c,
            )
            for c in cases
        ],
        batch_size=1000,
    )
    labels = []
    for row, c in zip(rows, cases, strict=True):
        for e in c["labels"]:
            labels.append(
                ReleaseLabel(
                    release=release,
                    case=row,
                    label_id=e["label_id"],
                    kind=e["kind"],
                    source=e["source"],
                    text=e["text"],
                    code=e["code"][:64],
                    category=e["category"],
                    assertion=e["assertion"],
                    mask_key=e["mask_key"],
                    mask_sha256=e["mask_sha256"],
                    digest=e["digest"],
                )
            )
    ReleaseLabel.objects.bulk_create(labels, batch_size=2000)
