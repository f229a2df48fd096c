"""Dataset releases: freeze a selection into an immutable manifest, diff versions, export formats.

``release_create`` freezes: it picks the labels of the dataset's projects that the selection asks for
(finding statuses, accepted only by default; sources human-reviewed, weak or both), groups them by scan
into cases, splits patients (``releases/splits.py``, stable against the previous version), hashes every
file, writes ``manifest.json`` to storage and mirrors it in ``ReleaseCase`` / ``ReleaseLabel`` rows.
``release_cases`` reads a frozen release back as ``CaseRecord``s, checking every file's sha256 against
the manifest; ``release_export`` writes them in one format through a sink (a folder, or storage as a
job). ``release_diff`` compares two versions.

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
import itertools
import json
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Finding, FindingStatus
from core.models import JobStatus, Project
from core.storage import sha256_file, storage_local_copy, storage_put_file, storage_save_bytes
from labeling.models import FindingProposal, GazeAnatomyRecord, GazeLabelRun, LabelRun, RegionProposal
from releases import formats as formats_pkg
from releases.models import Dataset, DatasetRelease, ReleaseCase, ReleaseExport, ReleaseLabel, ReleaseStatus
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
from releases.splits import DEFAULT_RATIOS, assign_splits, check_ratios
from studies.models import Scan

STATUSES = ("accepted", "rejected", "open")
SOURCES = ("human", "weak")
CATEGORY = re.compile(r"^[12][a-h]$")


class ReleaseError(ValueError):
    """A release that cannot be made or exported; ``field`` names what was wrong."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


# --- formats --------------------------------------------------------------------------------------------


def export_formats() -> dict[str, Any]:
    """Format name -> exporter module (``NAME``, ``LABEL_KINDS``, ``export``)."""
    from importlib import import_module

    out = {}
    for module in ("rexgroundingct", "monai_datalist", "dicom_seg", "fgcxr", "chexpert", "radfact"):
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


# --- datasets -------------------------------------------------------------------------------------------


def dataset_create(
    *, slug: str, name: str, projects: list[Project], user=None, description="", licence="", citation=""
) -> Dataset:
    if not projects:
        raise ReleaseError("projects", "name at least one project")
    if Dataset.objects.filter(slug=slug).exists():
        raise ReleaseError("slug", f"a dataset {slug!r} exists already")
    with transaction.atomic():
        dataset = Dataset.objects.create(
            slug=slug, name=name or slug, description=description, licence=licence, citation=citation,
            created_by=user,
        )  # fmt: skip
        dataset.projects.set(projects)
    return dataset


# --- freezing -------------------------------------------------------------------------------------------


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


def release_create(
    *, dataset: Dataset, selection: dict | None = None, user=None, notes: str = "", progress=None
) -> DatasetRelease:
    """Freeze the next version of ``dataset``. Raises ``ReleaseError`` (nothing stored) when the
    selection holds no labels or a file is missing."""
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
        what = " or ".join(sel.statuses)
        raise ReleaseError(
            "selection",
            f"no labels to release: the projects {', '.join(p.slug for p in projects)} have no {what} "
            f"findings from the sources {', '.join(sel.sources)} (review and accept some first, or select "
            "weak labels)",
        )
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
        version = (
            DatasetRelease.objects.select_for_update()
            .filter(dataset=dataset)
            .aggregate(v=Max("version"))["v"]
            or 0
        ) + 1
        release = DatasetRelease.objects.create(
            dataset=dataset, version=version, selection=sel.as_dict(), notes=notes, created_by=user
        )
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


# --- reading a frozen release back --------------------------------------------------------------------


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
    for scan_id, uid in (
        ScanSource.objects.filter(scan_id__in=dicom).order_by("id").values_list("scan_id", "sop_uid")
    ):
        if uid:
            uids[scan_id].append(uid)
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
                )
                for e in c["labels"]
            ]
            gaze = [_gaze_record(g, get, c["case_id"]) for g in c.get("gaze", [])]
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
            )


def _png_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def _gaze_record(g: dict, get: Callable, case_id: str) -> GazeRecordOut:
    from labeling.gaze.service import gaze_heatmap_array
    from labeling.models import GazeHeatmap

    focus = get(g["focus_key"], g["focus_sha256"], f"gaze.{g['anatomy']}.focus")
    mask = get(g["mask_key"], g["mask_sha256"], f"gaze.{g['anatomy']}.mask") if g["mask_key"] else None

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
        load_mask=(lambda: _png_mask(mask)) if mask is not None else (lambda: None),
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


def _meta(release: DatasetRelease) -> ReleaseMeta:
    d = release.dataset
    return ReleaseMeta(
        name=d.slug,
        version=release.version,
        description=d.description,
        licence=d.licence,
        citation=d.citation,
        extra={"title": d.name, "manifest_sha256": release.manifest_sha256, "selection": release.selection},
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
    sink.put_bytes("README.md", release.card.encode())
    with storage_local_copy(release.manifest.name) as manifest:
        copy = sink.scratch() / "manifest.json"
        shutil.copyfile(manifest, copy)
        sink.put_file("manifest.json", copy)
    sums = sink.scratch() / "SHA256SUMS"
    with open(sums, "w", encoding="utf-8") as out:
        sink.files.write_sums(out)
    sink.put_file("SHA256SUMS", sums)  # every file but itself: `sha256sum -c SHA256SUMS` in the folder
    return summary


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
        export.status, export.error = "failed", str(exc)
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


# --- diffs ----------------------------------------------------------------------------------------------


def release_diff(new: DatasetRelease, old: DatasetRelease | None = None) -> dict[str, Any]:
    """Cases and labels added, removed and changed from ``old`` (default: the previous version)."""
    if old is None:
        old = (
            DatasetRelease.objects.filter(
                dataset=new.dataset, version__lt=new.version, status=ReleaseStatus.FROZEN
            )
            .order_by("-version")
            .first()
        )
    if old is not None and old.dataset_id != new.dataset_id:
        raise ReleaseError("against", f"{old} is a release of another dataset")

    def cases(r):
        return dict(ReleaseCase.objects.filter(release=r).values_list("case_id", "split")) if r else {}

    def labels(r):
        if r is None:
            return {}
        rows = ReleaseLabel.objects.filter(release=r).values_list("case__case_id", "label_id", "digest")
        return {(c, lab): d for c, lab, d in rows}

    a, b = cases(old), cases(new)
    la, lb = labels(old), labels(new)
    return {
        "from": old.version if old else None,
        "to": new.version,
        "cases": {
            "added": sorted(set(b) - set(a)),
            "removed": sorted(set(a) - set(b)),
            "split_changed": sorted(c for c in set(a) & set(b) if a[c] != b[c]),
        },
        "labels": {
            "added": sorted(f"{c}/{lab}" for c, lab in set(lb) - set(la)),
            "removed": sorted(f"{c}/{lab}" for c, lab in set(la) - set(lb)),
            "changed": sorted(f"{c}/{lab}" for c, lab in set(la) & set(lb) if la[(c, lab)] != lb[(c, lab)]),
        },
    }


# --- the dataset card -----------------------------------------------------------------------------------


def _table(rows: list[list[Any]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_card(dataset: Dataset, release: DatasetRelease, cases: list[dict]) -> str:
    counts, metrics = release.counts, release.metrics
    splits = ["train", "val", "test"]
    labelers: Counter = Counter()
    models: Counter = Counter()
    readers: Counter = Counter()
    for c in cases:
        for e in c["labels"]:
            p = e["provenance"]
            if p.get("labeler"):
                labelers[f"{p['labeler']} (label run {p.get('label_run')})"] += 1
            if p.get("model_version") or (e["source"] == "model" and p.get("source")):
                models[p.get("model_version") or p["source"]] += 1
            if p.get("author"):
                readers[p["author"]] += 1
    total = max(1, counts["labels"])
    src = counts["labels_per_source"]
    cats = counts["categories"]
    lines = [
        f"# {dataset.name} — version {release.version}",
        "",
        dataset.description or "",
        "",
        f"Frozen {release.frozen_at or timezone.now():%Y-%m-%d %H:%M} UTC from the projects "
        f"{', '.join(p.slug for p in dataset.projects.all())}; manifest `manifest.json` lists every file "
        "with its sha256 and every label with its provenance.",
        "",
        "## Contents",
        "",
        _table(
            [
                ["cases", *[counts["cases_per_split"].get(s, 0) for s in splits], counts["cases"]],
                ["patients", *[counts["patients_per_split"].get(s, 0) for s in splits], counts["patients"]],
            ],
            ["", *splits, "total"],
        ),
        "",
        "Splits are by patient (no patient in two splits), seeded "
        f"(seed {release.selection.get('seed', 0)}, ratios {release.selection.get('ratios')}), stratified by "
        "finding category, and stable: a patient keeps its split in later versions.",
        "",
        "Positive labels per category and split:",
        "",
        _table(
            [[k, *[v.get(s, 0) for s in splits]] for k, v in cats.items()] or [["(none)", 0, 0, 0]],
            ["category", *splits],
        ),  # fmt: skip
        "",
        "## How the labels were made",
        "",
        f"Selection: finding statuses {', '.join(release.selection.get('statuses', []))}; sources "
        f"{', '.join(release.selection.get('sources', []))}.",
        "",
        f"- human-reviewed: {src.get('human', 0)} ({src.get('human', 0) / total:.0%}) — grounded by "
        "annotators and approved by radiologists in the platform's review"
        + (f" (annotators: {', '.join(f'{k} {v}' for k, v in readers.most_common())})" if readers else ""),
        f"- weak (report labelers, not reviewed): {src.get('weak', 0)} ({src.get('weak', 0) / total:.0%})",
        f"- model proposals (not reviewed): {src.get('model', 0)} ({src.get('model', 0) / total:.0%})",
    ]
    if labelers:
        lines.append("- labelers: " + ", ".join(f"{k}: {v}" for k, v in labelers.most_common()))
    if models:
        lines.append("- models and generators: " + ", ".join(f"{k}: {v}" for k, v in models.most_common()))
    multi = [e["provenance"]["readers"] for c in cases for e in c["labels"] if e["provenance"].get("readers")]
    lines += ["", "### Agreement between readers", ""]
    if multi:
        dice = [m["mean_dice"] for m in multi if m.get("mean_dice") is not None]
        iou = [m["mean_iou"] for m in multi if m.get("mean_iou") is not None]
        agree = [m["decision_agreement"] for m in multi if m.get("decision_agreement") is not None]

        def mean(xs: list[float]) -> str:
            return f"{sum(xs) / len(xs):.3f}" if xs else "n/a"

        counts_of_readers = ", ".join(sorted({str(m["readers"]) for m in multi}))
        methods = ", ".join(sorted({str(m["method"]) for m in multi}))
        lines.append(
            f"{len(multi)} labels were read independently by {counts_of_readers}"
            f" readers, then merged ({methods} consensus) and "
            f"confirmed by a radiologist: mean pairwise Dice {mean(dice)}, IoU {mean(iou)}, share of reader "
            f"pairs agreeing on the finding {mean(agree)}."
        )
    else:
        lines.append("Each human-reviewed label was grounded by one annotator and approved by a radiologist.")
    lines += ["", "### Proposals against the accepted labels (ReXGroundingCT metrics)", ""]
    if metrics.get("compared"):

        def row(name: str, m: dict) -> list[Any]:
            inst, dist = m.get("instance", {}), m.get("distance", {})
            return [
                name, m.get("findings", 0), f"{m.get('dice_mean') or 0:.3f}", f"{m.get('hit_rate') or 0:.3f}",
                f"{inst.get('precision', 0):.3f} / {inst.get('recall', 0):.3f} / {inst.get('f1', 0):.3f}",
                f"{dist.get('precision', 0):.3f} / {dist.get('recall', 0):.3f} / {dist.get('f1', 0):.3f}",
            ]  # fmt: skip

        rows = [row("all", metrics)] + [row(k, v) for k, v in sorted(metrics.get("by_category", {}).items())]
        lines += [
            f"Over {metrics['compared']} accepted masks that started from a model or generator proposal "
            "(Dice per finding; hit rate = share with Dice ≥ 0.1; instances match one-to-one at Dice ≥ 0.2; "
            "distance matches within 2 × the largest voxel spacing, by centroid for focal findings and ASSD "
            "for non-focal ones):",
            "",
            _table(
                rows,
                [
                    "category",
                    "findings",
                    "mean Dice",
                    "hit rate",
                    "instance P / R / F1",
                    "distance P / R / F1",
                ],
            ),  # fmt: skip
        ]
    else:
        lines.append("No accepted mask in this release started from a model or generator proposal.")
    lines += [
        "",
        "## Licence",
        "",
        dataset.licence or "Not stated: ask the dataset's maintainers before use.",
        "",
        "## Citation",
        "",
        dataset.citation or "Not stated.",
        "",
    ]
    return "\n".join(lines)
