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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Finding, FindingStatus
from core.models import JobStatus
from core.storage import sha256_file, storage_local_copy, storage_save_bytes
from labeling.models import FindingProposal, GazeAnatomyRecord, GazeLabelRun, LabelRun, RegionProposal
from releases.card import dataset_card
from releases.errors import ReleaseError
from releases.models import Dataset, DatasetRelease, ReleaseCase, ReleaseLabel, ReleaseStatus
from releases.records import (
    LabelRecord,
)
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
    """sha256 of stored files, each once per freeze."""

    def __init__(self):
        self.seen: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        if key not in self.seen:
            if not key or not default_storage.exists(key):
                raise ReleaseError("file", f"{key or '(none)'} is missing from storage")
            with storage_local_copy(key) as path:
                self.seen[key] = sha256_file(path)
        return self.seen[key]


def _human_labels(projects, sel: Selection, hasher: _Hasher) -> dict[int, list[dict]]:
    by_scan: dict[int, list[dict]] = defaultdict(list)
    findings = (
        Finding.objects.filter(project__in=projects, status__in=sel.statuses, scan__isnull=False)
        .select_related("task", "finding_proposal__run")
        .order_by("id")
    )
    for f in findings.iterator(chunk_size=2000):
        reviewed = f.status in (FindingStatus.ACCEPTED, FindingStatus.REJECTED)
        source = "human" if reviewed else "weak"
        if source not in sel.sources:
            continue
        current = f.annotations.filter(version=f.current_version).first() if f.current_version else None
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
                "reviewed_by": _reviewers(f),
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


def _reviewers(finding: Finding) -> list[str]:
    return sorted(
        {
            e.user.username
            for e in finding.history.filter(action="approved").select_related("user")
            if e.user_id is not None
        }
    )


def _weak_labels(projects, sel: Selection, hasher: _Hasher, taken: set[int]) -> dict[int, list[dict]]:
    """Report-level proposals (kind none) on their study's scans and unreviewed region proposals."""
    by_scan: dict[int, list[dict]] = defaultdict(list)
    if "weak" not in sel.sources:
        return by_scan
    for project in projects:
        run = LabelRun.objects.filter(project=project, status=JobStatus.SUCCEEDED).order_by("-id").first()
        if run is not None:
            scans_of_study: dict[int, list[int]] = defaultdict(list)
            for scan_id, study_id in Scan.objects.filter(project=project).values_list("id", "study_id"):
                scans_of_study[study_id].append(scan_id)
            proposals = FindingProposal.objects.filter(run=run).select_related("report").order_by("id")
            for p in proposals.iterator(chunk_size=2000):
                for scan_id in scans_of_study.get(p.report.study_id, [])[:1]:
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
        regions = RegionProposal.objects.filter(project=project, scan__isnull=False).exclude(pk__in=taken)
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
    ``ReleaseError`` (nothing stored) when the selection holds no labels or a file is missing."""
    sel = Selection.parse(selection)
    projects = list(dataset.projects.all())
    hasher = _Hasher()
    human = _human_labels(projects, sel, hasher)
    taken = set(
        Finding.objects.filter(project__in=projects, status__in=sel.statuses)
        .exclude(annotations__region_proposal=None)
        .values_list("annotations__region_proposal", flat=True)
    )
    weak = _weak_labels(projects, sel, hasher, taken)
    by_scan: dict[int, list[dict]] = defaultdict(list)
    for part in (human, weak):
        for scan_id, entries in part.items():
            by_scan[scan_id].extend(entries)
    if "weak" in sel.sources:  # radiographs with gaze records are cases of their own (FG-CXR)
        for scan_id in _gaze_scans(projects):
            by_scan.setdefault(scan_id, [])
    if not by_scan:
        raise _nothing_to_release(projects, sel)
    scans = {
        s.pk: s
        for s in Scan.objects.filter(pk__in=list(by_scan)).select_related("study__patient").order_by("id")
    }
    previous = (
        DatasetRelease.objects.filter(dataset=dataset, status=ReleaseStatus.FROZEN)
        .order_by("-version")
        .first()
    )
    earlier = {}
    if previous is not None:
        earlier = dict(ReleaseCase.objects.filter(release=previous).values_list("patient", "split"))
    patients: dict[str, list[str]] = defaultdict(list)
    for scan_id, entries in by_scan.items():
        patients[scans[scan_id].study.patient.pseudonym].extend(
            e["category"] or e["code"] for e in entries if e["assertion"] == "present"
        )
    splits = assign_splits(patients, previous=earlier, ratios=sel.ratios, seed=sel.seed)

    cases = []
    for n, (scan_id, scan) in enumerate(scans.items(), 1):
        gaze = _gaze_entries(scan, hasher)
        cases.append(
            {
                "case_id": _case_id(scan),
                "scan": scan.pk,
                "project": scan.project_id,
                "patient": scan.study.patient.pseudonym,
                "study": scan.study.study_uid,
                "split": splits[scan.study.patient.pseudonym],
                "modality": scan.modality,
                "shape": scan.shape,
                "spacing": scan.spacing,
                "affine": scan.affine,
                "image_key": scan.file.name,
                "image_sha256": hasher(scan.file.name),
                "labels": by_scan[scan_id],
                "gaze": gaze,
            }
        )
        if progress:
            progress(n / max(1, len(scans)))
    with transaction.atomic():
        if release is None:
            release = DatasetRelease.objects.create(
                dataset=dataset, version=_next_version(dataset), selection=sel.as_dict(), notes=notes,
                created_by=user,
            )  # fmt: skip
        version = release.version
        manifest = {
            "dataset": dataset.slug,
            "name": dataset.name,
            "version": version,
            "selection": sel.as_dict(),
            "previous": previous.version if previous else None,
            "created_at": timezone.now().isoformat(),
            "created_by": user.username if user else None,
            "cases": cases,
        }
        _store_rows(release, cases)
        release.counts = _counts(cases)
        release.metrics = _proposal_metrics(cases)
        release.card = dataset_card(dataset, release, cases)
        manifest["counts"], manifest["metrics"] = release.counts, release.metrics
        data = json.dumps(manifest, indent=1, default=str).encode()
        key = f"releases/{dataset.slug}/v{version}/manifest.json"
        if default_storage.exists(key):
            default_storage.delete(key)
        release.manifest = storage_save_bytes(key, data)
        release.manifest_sha256 = hashlib.sha256(data).hexdigest()
        release.status, release.frozen_at = ReleaseStatus.FROZEN, timezone.now()
        release.save()
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


def _counts(cases: list[dict]) -> dict[str, Any]:
    per_split = Counter(c["split"] for c in cases)
    patients = {split: len({c["patient"] for c in cases if c["split"] == split}) for split in per_split}
    categories: dict[str, Counter] = defaultdict(Counter)
    sources, kinds = Counter(), Counter()
    for c in cases:
        for e in c["labels"]:
            sources[e["source"]] += 1
            kinds[e["kind"]] += 1
            if e["assertion"] == "present":
                categories[e["category"] or e["code"] or "(none)"][c["split"]] += 1
    return {
        "cases": len(cases),
        "patients": len({c["patient"] for c in cases}),
        "labels": sum(sources.values()),
        "cases_per_split": dict(per_split),
        "patients_per_split": patients,
        "labels_per_source": dict(sources),
        "labels_per_kind": dict(kinds),
        "categories": {k: dict(v) for k, v in sorted(categories.items())},
        "gaze_records": sum(len(c["gaze"]) for c in cases),
    }


def _proposal_metrics(cases: list[dict]) -> dict[str, Any]:
    """ReXGroundingCT metrics of the proposals the accepted masks started from, against those masks."""
    try:
        from releases import metrics
    except ImportError:  # pragma: no cover
        return {}
    results = []
    for c in cases:
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
            results.append(
                metrics.case_metrics([pred], [true], spacing=spacing, categories=[e["category"] or e["code"]])
            )
    if not results:
        return {"compared": 0}
    summary = metrics.aggregate(results)
    summary["compared"] = len(results)
    return summary


def _read_mask(key: str) -> np.ndarray | None:
    with storage_local_copy(key) as path:
        record = LabelRecord(label_id="", text="", mask_path=path)
        return record.load_mask()
