"""Freezing a release: the selected labels of a dataset's projects, grouped by scan into cases, patients
split (``releases/splits.py``, stable against the previous version), every file hashed, ``manifest.json``
written to storage and mirrored in ``ReleaseCase`` / ``ReleaseLabel`` rows, the dataset card made.

Label sources:
- ``human``: findings an expert decided in review (accepted, or rejected when asked for); their current
  annotation version (mask or box; none for a rejected one). A finding still in review is ``weak``.
- ``weak``: the report labeler's finding proposals (newest finished label run per project, every
  assertion; kind none) and the region proposals of models and generators not behind a selected
  finding (``model``: mask and box). Radiographs with gaze anatomy records (the newest finished gaze
  label run) become cases with them, for FG-CXR exports.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from annotation.models import Annotation, Finding, FindingStatus, HistoryEvent
from core.models import JobStatus
from core.storage import sha256_file, storage_local_copy, storage_put_file
from labeling.models import FindingProposal, GazeAnatomyRecord, GazeLabelRun, LabelRun, RegionProposal
from releases.card import CardStats, dataset_card
from releases.errors import ReleaseError
from releases.models import Dataset, DatasetRelease, ReleaseCase, ReleaseLabel, ReleaseStatus
from releases.records import LabelRecord
from releases.splits import DEFAULT_RATIOS, assign_splits, check_ratios
from studies.models import Scan

STATUSES = ("accepted", "rejected", "open")
SOURCES = ("human", "weak")
CATEGORY = re.compile(r"^[12][a-h]$")


@dataclass
class Selection:
    statuses: list[str] = field(default_factory=lambda: ["accepted"])
    sources: list[str] = field(default_factory=lambda: ["human"])
    seed: int = 0
    ratios: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATIOS))

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> Selection:
        raw = dict(raw or {})
        sel = cls()
        if "statuses" in raw:
            sel.statuses = list(raw["statuses"])
        if "sources" in raw:
            src = raw["sources"]
            sel.sources = (
                list(SOURCES) if src in ("both", ["both"]) else [src] if isinstance(src, str) else src
            )
        bad = [s for s in sel.statuses if s not in STATUSES]
        if bad or not sel.statuses:
            raise ReleaseError("statuses", f"choose from {', '.join(STATUSES)} (got {bad or 'none'})")
        bad = [s for s in sel.sources if s not in SOURCES]
        if bad or not sel.sources:
            raise ReleaseError("sources", f"choose human, weak or both (got {bad or 'none'})")
        sel.seed = int(raw.get("seed", 0))
        try:
            sel.ratios = check_ratios(raw.get("ratios", DEFAULT_RATIOS))
        except ValueError as exc:
            raise ReleaseError("ratios", str(exc).split(": ", 1)[-1]) from exc
        return sel

    def as_dict(self) -> dict[str, Any]:
        return {"statuses": self.statuses, "sources": self.sources, "seed": self.seed, "ratios": self.ratios}


def _category(code: str) -> str:
    return code if CATEGORY.match(code or "") else ""


def _digest(entry: dict[str, Any]) -> str:
    keep = {k: v for k, v in entry.items() if k not in ("label_id", "mask_key", "provenance")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


class _Hasher:
    """sha256 of stored files; the most recent few thousand are remembered (files shared by cases, like a
    series behind several findings, are hashed once) without growing with the release."""

    def __init__(self, remember: int = 4096):
        self.seen: OrderedDict[str, str] = OrderedDict()
        self.remember = remember

    def __call__(self, key: str) -> str:
        if key in self.seen:
            self.seen.move_to_end(key)
            return self.seen[key]
        if not key or not default_storage.exists(key):
            raise ReleaseError("file", f"{key or '(none)'} is missing from storage")
        with storage_local_copy(key) as path:
            digest = sha256_file(path)
        self.seen[key] = digest
        if len(self.seen) > self.remember:
            self.seen.popitem(last=False)
        return digest


def _no_hash(key: str) -> str:
    """The first pass over the labels only looks at their categories."""
    return ""


def _human_labels(projects, sel: Selection, hasher, scan_ids: list[int]) -> dict[int, list[dict]]:
    by_scan: dict[int, list[dict]] = defaultdict(list)
    findings = list(
        Finding.objects.filter(project__in=projects, status__in=sel.statuses, scan_id__in=scan_ids)
        .select_related("finding_proposal__run")
        .order_by("id")
    )
    # The current versions and approving radiologists of the chunk's findings: two queries, not two each.
    versions = {
        a.finding_id: a
        for a in Annotation.objects.filter(
            finding__in=findings, version=F("finding__current_version")
        ).select_related("author")
    }
    reviewers: dict[int, set[str]] = defaultdict(set)
    approvals = HistoryEvent.objects.filter(finding__in=findings, action="approved", user__isnull=False)
    for finding_id, username in approvals.values_list("finding_id", "user__username"):
        reviewers[finding_id].add(username)
    for f in findings:
        reviewed = f.status in (FindingStatus.ACCEPTED, FindingStatus.REJECTED)
        source = "human" if reviewed else "weak"
        if source not in sel.sources:
            continue
        current = versions.get(f.pk) if f.current_version else None
        kind, box, mask_key = "none", None, ""
        if f.status != FindingStatus.REJECTED and current is not None:
            if current.kind == "mask" and current.mask:
                kind, mask_key = "mask", current.mask.name
            elif current.kind == "box" and current.box:
                kind, box = "box", current.box
        proposal = f.finding_proposal
        entry = {
            "label_id": f"finding-{f.pk}",
            "text": f.text,
            "kind": kind,
            "code": f.code,
            "category": _category(f.code),
            "location": f.location,
            "laterality": f.laterality,
            "assertion": "absent" if f.status == FindingStatus.REJECTED else "present",
            "source": source,
            "box": box,
            "mask_key": mask_key,
            "mask_sha256": hasher(mask_key) if mask_key else "",
            "provenance": {
                "finding": f.pk,
                "status": f.status,
                "finding_source": f.source,
                "version": f.current_version,
                "annotation": current.pk if current else None,
                "author": current.author.username if current and current.author_id else None,
                "region_proposal": current.region_proposal_id if current else None,
                "reviewed_by": sorted(reviewers[f.pk]),
                "label_run": proposal.run_id if proposal else None,
                "labeler": proposal.run.labeler if proposal else None,
                "span": [f.section, f.start, f.end] if f.start is not None else None,
                "readers": _readers_summary(f.agreement),
            },
        }
        entry["digest"] = _digest(entry)
        by_scan[f.scan_id].append(entry)
    return by_scan


def _readers_summary(agreement: dict | None) -> dict | None:
    """Several readers' agreement on a finding (``annotation.readers``), as a release keeps it."""
    if not agreement:
        return None
    return {
        "readers": len(agreement.get("readers", [])),
        "method": agreement.get("method"),
        "mean_dice": agreement.get("mean_dice"),
        "mean_iou": agreement.get("mean_iou"),
        "decisions": agreement.get("decisions"),
        "decision_agreement": agreement.get("decision_agreement"),
    }


def _first_scans(project, study_ids=None) -> dict[int, int]:
    """study id -> its first scan (report-level labels go there)."""
    scans = Scan.objects.filter(project=project)
    if study_ids is not None:
        scans = scans.filter(study_id__in=study_ids)
    out: dict[int, int] = {}
    for scan_id, study_id in scans.order_by("-id").values_list("id", "study_id"):
        out[study_id] = scan_id  # the lowest id wins
    return out


def _weak_labels(
    projects, sel: Selection, hasher, taken: set[int], scan_ids: list[int]
) -> dict[int, list[dict]]:
    """Report-level proposals (kind none) on their study's first scan and unreviewed region proposals."""
    by_scan: dict[int, list[dict]] = defaultdict(list)
    if "weak" not in sel.sources:
        return by_scan
    chunk = set(scan_ids)
    studies = set(Scan.objects.filter(pk__in=scan_ids).values_list("study_id", flat=True))
    for project in projects:
        run = LabelRun.objects.filter(project=project, status=JobStatus.SUCCEEDED).order_by("-id").first()
        if run is not None:
            first = _first_scans(project, studies)
            proposals = (
                FindingProposal.objects.filter(run=run, report__study_id__in=studies)
                .select_related("report")
                .order_by("id")
            )
            for p in proposals.iterator(chunk_size=2000):
                for scan_id in [first[p.report.study_id]] if first.get(p.report.study_id) in chunk else []:
                    entry = {
                        "label_id": f"proposal-{p.pk}",
                        "text": p.phrase,
                        "kind": "none",
                        "code": p.code,
                        "category": _category(p.code),
                        "location": p.location,
                        "laterality": p.laterality,
                        "assertion": p.assertion,
                        "source": "weak",
                        "box": None,
                        "mask_key": "",
                        "mask_sha256": "",
                        "provenance": {
                            "label_run": run.pk,
                            "labeler": run.labeler,
                            "schema": run.schema,
                            "model": run.model_name,
                            "prompt_version": run.prompt_version,
                            "report": p.report.external_id,
                            "span": [p.section, p.start, p.end],
                        },
                    }
                    entry["digest"] = _digest(entry)
                    by_scan[scan_id].append(entry)
        regions = RegionProposal.objects.filter(project=project, scan_id__in=scan_ids).exclude(pk__in=taken)
        for r in regions.select_related("model_version").order_by("id").iterator(chunk_size=2000):
            entry = {
                "label_id": f"region-{r.pk}",
                "text": r.text or r.phrase or r.label or r.code,
                "kind": "mask" if r.mask else "box",
                "code": r.code,
                "category": _category(r.code),
                "location": "",
                "laterality": "",
                "assertion": "present",
                "source": "model",
                "box": r.box if not r.mask else None,
                "mask_key": r.mask.name if r.mask else "",
                "mask_sha256": hasher(r.mask.name) if r.mask else "",
                "provenance": {
                    "region_proposal": r.pk,
                    "source": r.source,
                    "model_version": str(r.model_version) if r.model_version_id else None,
                    "params": r.params,
                    "confidence": r.confidence,
                },
            }
            entry["digest"] = _digest(entry)
            by_scan[r.scan_id].append(entry)
    return by_scan


def _gaze_entries(scan: Scan, hasher: _Hasher) -> list[dict]:
    """The FG-CXR records of a radiograph: the newest finished gaze label run of its project."""
    if scan.ndim != 2:
        return []
    run = (
        GazeLabelRun.objects.filter(project_id=scan.project_id, status=JobStatus.SUCCEEDED)
        .order_by("-id")
        .first()
    )
    if run is None:
        return []
    from labeling.models import GazeSentence

    out = []
    records = GazeAnatomyRecord.objects.filter(run=run, recording__scan=scan).select_related("recording")
    for rec in records.order_by("recording_id", "anatomy"):
        sentences = list(
            GazeSentence.objects.filter(run=run, recording=rec.recording, index__in=rec.sentence_indexes)
            .order_by("index")
            .values_list("text", flat=True)
        )
        mask = rec.recording.anatomy_masks.filter(name=rec.anatomy).first()
        out.append(
            {
                "record": rec.pk,
                "anatomy": rec.anatomy,
                "caption": rec.caption,
                "sentences": sentences,
                "dwell_s": rec.dwell_s,
                "dwell_share": rec.dwell_share,
                "fixations": rec.fixation_count,
                "time_to_first_s": rec.time_to_first_s,
                "reader": rec.recording.reader,
                "recording_id": rec.recording.external_id,
                "heatmap": rec.heatmap_id,
                "focus_key": rec.focus_mask.name,
                "focus_sha256": hasher(rec.focus_mask.name),
                "mask_key": mask.file.name if mask else "",
                "mask_sha256": hasher(mask.file.name) if mask else "",
                "gaze_run": run.pk,
                "params": run.params,
            }
        )
    return out


def _gaze_scans(projects) -> set[int]:
    """Radiographs with anatomy records in their project's newest finished gaze label run."""
    out: set[int] = set()
    for project in projects:
        run = GazeLabelRun.objects.filter(project=project, status=JobStatus.SUCCEEDED).order_by("-id").first()
        if run is not None:
            out |= set(
                GazeAnatomyRecord.objects.filter(run=run, recording__scan__ndim=2).values_list(
                    "recording__scan_id", flat=True
                )
            )
    return out


def _case_id(scan: Scan) -> str:
    return f"{scan.study.patient.pseudonym}-s{scan.pk}"


def _next_version(dataset: Dataset) -> int:
    """The dataset's next version number (call inside a transaction; the dataset row is locked)."""
    Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
    return (DatasetRelease.objects.filter(dataset=dataset).aggregate(v=Max("version"))["v"] or 0) + 1


def selection_empty(dataset: Dataset, sel: Selection) -> bool:
    """A quick look (a few EXISTS queries) whether ``sel`` can hold any label of ``dataset``."""
    projects = list(dataset.projects.all())
    findings = Finding.objects.filter(project__in=projects, status__in=sel.statuses, scan__isnull=False)
    if "human" in sel.sources and findings.exclude(status=FindingStatus.OPEN).exists():
        return False
    if "weak" in sel.sources and (
        findings.filter(status=FindingStatus.OPEN).exists()
        or FindingProposal.objects.filter(project__in=projects, run__status=JobStatus.SUCCEEDED).exists()
        or RegionProposal.objects.filter(project__in=projects, scan__isnull=False).exists()
        or _gaze_scans(projects)
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
            DatasetRelease.objects.filter(pk=release.pk).update(status=ReleaseStatus.FAILED, error=str(exc))
            raise
        release.refresh_from_db()
    return {"release": release.pk, "version": release.version}, {"cases": release.counts.get("cases", 0)}, []


FREEZE_CHUNK = 500  # scans whose labels are gathered, hashed, written and stored together


def _chunks(items: list[int], size: int = FREEZE_CHUNK) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _candidate_scans(projects, sel: Selection, taken: set[int], gaze: set[int]) -> list[int]:
    """Every scan that may hold a selected label (ids only; the labels are read a chunk at a time)."""
    ids = set(
        Finding.objects.filter(project__in=projects, status__in=sel.statuses, scan__isnull=False).values_list(
            "scan_id", flat=True
        )
    )
    if "weak" in sel.sources:
        ids |= gaze
        for project in projects:
            run = LabelRun.objects.filter(project=project, status=JobStatus.SUCCEEDED).order_by("-id").first()
            if run is not None:
                studies = set(
                    FindingProposal.objects.filter(run=run).values_list("report__study_id", flat=True)
                )
                ids |= {scan for study, scan in _first_scans(project).items() if study in studies}
            regions = RegionProposal.objects.filter(project=project, scan__isnull=False).exclude(pk__in=taken)
            ids |= set(regions.values_list("scan_id", flat=True))
    return sorted(ids)


def _labels_of(projects, sel: Selection, hasher, taken: set[int], gaze: set[int], scan_ids: list[int]):
    by_scan: dict[int, list[dict]] = defaultdict(list)
    for part in (
        _human_labels(projects, sel, hasher, scan_ids),
        _weak_labels(projects, sel, hasher, taken, scan_ids),
    ):
        for scan_id, entries in part.items():
            by_scan[scan_id].extend(entries)
    if "weak" in sel.sources:  # radiographs with gaze records are cases of their own (FG-CXR)
        for scan_id in gaze.intersection(scan_ids):
            by_scan.setdefault(scan_id, [])
    return by_scan


def _case_entry(scan: Scan, labels: list[dict], split: str, hasher) -> dict[str, Any]:
    return {
        "case_id": _case_id(scan),
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
        "gaze": _gaze_entries(scan, hasher),
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
    gaze = _gaze_scans(projects) if "weak" in sel.sources else set()
    candidates = _candidate_scans(projects, sel, taken, gaze)
    patients: dict[str, set[str]] = defaultdict(set)
    case_scans: list[int] = []
    for n, chunk in enumerate(_chunks(candidates), 1):
        by_scan = _labels_of(projects, sel, _no_hash, taken, gaze, chunk)
        owners = dict(
            Scan.objects.filter(pk__in=list(by_scan)).values_list("id", "study__patient__pseudonym")
        )
        for scan_id in sorted(by_scan):
            entries = by_scan[scan_id]
            patients[owners[scan_id]].update(
                e["category"] or e["code"] for e in entries if e["assertion"] == "present"
            )
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
    splits = assign_splits(
        {p: sorted(c) for p, c in patients.items()}, previous=earlier, ratios=sel.ratios, seed=sel.seed
    )
    del patients

    hasher = _Hasher()
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
                "created_at": timezone.now().isoformat(),
                "created_by": user.username if user else None,
            }
            tally, stats, compared = _Tally(), CardStats(), []
            path = scratch / "manifest.json"
            with open(path, "w", encoding="utf-8") as out:
                out.write(json.dumps(head, default=str)[:-1] + ',\n"cases": [')
                done = 0
                for chunk in _chunks(case_scans):
                    by_scan = _labels_of(projects, sel, hasher, taken, gaze, chunk)
                    scans = Scan.objects.filter(pk__in=chunk).select_related("study__patient").order_by("id")
                    cases = [
                        _case_entry(scan, by_scan[scan.pk], splits[scan.study.patient.pseudonym], hasher)
                        for scan in scans
                        if scan.pk in by_scan
                    ]
                    for case in cases:
                        out.write(("\n" if done == 0 else ",\n") + json.dumps(case, default=str))
                        done += 1
                        tally.add(case)
                        stats.add(case)
                        compared += _proposal_results(case)
                    _store_rows(release, cases)
                    report(0.2 + 0.8 * done / len(case_scans))
                release.counts = tally.as_dict()
                release.metrics = _aggregate_metrics(compared)
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


class _Tally:
    """The release's counts, added up case by case."""

    def __init__(self):
        self.cases, self.gaze = Counter(), 0
        self.patients: dict[str, set[str]] = defaultdict(set)
        self.categories: dict[str, Counter] = defaultdict(Counter)
        self.sources, self.kinds = Counter(), Counter()

    def add(self, c: dict) -> None:
        self.cases[c["split"]] += 1
        self.patients[c["split"]].add(c["patient"])
        self.gaze += len(c["gaze"])
        for e in c["labels"]:
            self.sources[e["source"]] += 1
            self.kinds[e["kind"]] += 1
            if e["assertion"] == "present":
                self.categories[e["category"] or e["code"] or "(none)"][c["split"]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": sum(self.cases.values()),
            "patients": len(set().union(*self.patients.values())),
            "labels": sum(self.sources.values()),
            "cases_per_split": dict(self.cases),
            "patients_per_split": {split: len(p) for split, p in self.patients.items()},
            "labels_per_source": dict(self.sources),
            "labels_per_kind": dict(self.kinds),
            "categories": {k: dict(v) for k, v in sorted(self.categories.items())},
            "gaze_records": self.gaze,
        }


def _proposal_results(c: dict) -> list[dict]:
    """ReXGroundingCT metrics of the proposals this case's accepted masks started from, against them."""
    from releases import metrics

    results = []
    for e in c["labels"]:
        region = e["provenance"].get("region_proposal") if e["source"] == "human" else None
        if e["kind"] != "mask" or region is None:
            continue
        proposal = RegionProposal.objects.filter(pk=region).first()
        if proposal is None or not proposal.mask:
            continue
        pred = _read_mask(proposal.mask.name)
        true = _read_mask(e["mask_key"])
        if pred is None or true is None or pred.shape != true.shape:
            continue
        spacing = [float(s) for s in c["spacing"]]
        if true.ndim == 2:  # PNG rows x columns: spacing (row, column)
            spacing = spacing[::-1]
        result = metrics.case_metrics(
            [pred], [true], spacing=spacing, categories=[e["category"] or e["code"]]
        )
        results.append(result)
    return results


def _aggregate_metrics(results: list[dict]) -> dict[str, Any]:
    from releases import metrics

    if not results:
        return {"compared": 0}
    summary = metrics.aggregate(results)
    summary["compared"] = len(results)
    return summary


def _read_mask(key: str) -> np.ndarray | None:
    with storage_local_copy(key) as path:
        record = LabelRecord(label_id="", text="", mask_path=path)
        return record.load_mask()
