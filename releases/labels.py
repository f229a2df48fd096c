"""What a release selection holds: the labels of a dataset's projects as manifest entries, a chunk of scans
at a time, with the scans that may hold them.

Label sources:
- ``human``: findings an expert decided in review (accepted, or rejected when asked for); their current
  grounding (``annotation.versions.groundings``: the newest mask version and the newest box version; a
  box never replaces a mask). ``kind`` is ``mask`` when the finding has a mask, else ``box``, else
  ``none`` (always none for a rejected one); ``box`` holds the drawn box whenever there is one, beside a
  mask too. A finding still in review is ``weak``.
- ``weak``: the report labeler's finding proposals (newest finished label run per project, every
  assertion; kind none) and the region proposals of models and generators not behind a selected
  finding (``model``: mask and box). Radiographs with gaze anatomy records (the newest finished gaze
  label run) become cases with them, for FG-CXR exports.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.core.files.storage import default_storage

from annotation.models import Finding, FindingStatus, HistoryEvent
from annotation.versions import Grounding, groundings
from core.models import JobStatus
from core.storage import sha256_file, storage_local_copy
from labeling.models import FindingProposal, GazeAnatomyRecord, GazeLabelRun, LabelRun, RegionProposal
from releases.errors import ReleaseError
from releases.splits import DEFAULT_RATIOS, check_ratios
from studies.models import Scan

STATUSES = ("accepted", "rejected", "open")
SOURCES = ("human", "weak")
CATEGORY = re.compile(r"^[12][a-h]$")
# What to do with anatomy masks that generators and models propose (the lungs generator's left_lung /
# right_lung, an anatomy model's heart): "context" keeps them as context labels (role "context"), which
# formats keep apart from the finding classes; "findings" makes them classes like any finding; "none"
# leaves them out.
ANATOMY_CHOICES = ("context", "findings", "none")
ANATOMY_CODES = frozenset(
    {
        "lung", "lungs", "left_lung", "right_lung", "heart", "mediastinum", "aortic_knob", "trachea",
        "airway", "airways", "aorta", "liver", "spleen", "kidney", "left_kidney", "right_kidney",
        "stomach", "pancreas", "esophagus", "spine", "vertebrae", "rib", "ribs", "body",
        "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
        "lung_lower_lobe_right",
    }
)  # fmt: skip


def class_name(entry: dict[str, Any]) -> str:
    """The class a mask label is counted under (a release's class table, MONAI label values): its
    ReXGroundingCT category, else its code, else ``finding``."""
    return entry.get("category") or entry.get("code") or "finding"


def is_anatomy(code: str) -> bool:
    return (code or "").strip().lower() in ANATOMY_CODES


@dataclass
class Selection:
    statuses: list[str] = field(default_factory=lambda: ["accepted"])
    sources: list[str] = field(default_factory=lambda: ["human"])
    seed: int = 0
    ratios: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATIOS))
    modalities: list[str] = field(default_factory=list)  # scans of these modalities only; [] = all
    anatomy: str = "context"  # ANATOMY_CHOICES

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
        modalities = raw.get("modalities") or []
        if isinstance(modalities, str):
            modalities = [m for m in modalities.split(",") if m.strip()]
        if not isinstance(modalities, list) or not all(isinstance(m, str) and m.strip() for m in modalities):
            raise ReleaseError("modalities", 'give a list of DICOM modalities, e.g. ["CR", "DX"]')
        sel.modalities = sorted({m.strip().upper() for m in modalities})
        sel.anatomy = raw.get("anatomy", "context")
        if sel.anatomy not in ANATOMY_CHOICES:
            raise ReleaseError("anatomy", f"choose {', '.join(ANATOMY_CHOICES)} (got {sel.anatomy!r})")
        try:
            sel.ratios = check_ratios(raw.get("ratios", DEFAULT_RATIOS))
        except ValueError as exc:
            raise ReleaseError("ratios", str(exc).split(": ", 1)[-1]) from exc
        return sel

    def as_dict(self) -> dict[str, Any]:
        return {
            "statuses": self.statuses, "sources": self.sources, "seed": self.seed, "ratios": self.ratios,
            "modalities": self.modalities, "anatomy": self.anatomy,
        }  # fmt: skip


def _category(code: str) -> str:
    return code if CATEGORY.match(code or "") else ""


class_category = _category  # the ReXGroundingCT category of a finding code (pacs.storeback labels with it)


def _digest(entry: dict[str, Any]) -> str:
    keep = {k: v for k, v in entry.items() if k not in ("label_id", "mask_key", "provenance")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


class Hasher:
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


def no_hash(key: str) -> str:
    """The first pass over the labels only looks at their categories."""
    return ""


def _human_labels(projects, sel: Selection, hasher, scan_ids: list[int]) -> dict[int, list[dict]]:
    by_scan: dict[int, list[dict]] = defaultdict(list)
    findings = list(
        Finding.objects.filter(project__in=projects, status__in=sel.statuses, scan_id__in=scan_ids)
        .select_related("finding_proposal__run")
        .order_by("id")
    )
    # The groundings (newest mask, newest box) and approving radiologists of the chunk's findings: two
    # queries, not two each.
    grounded = groundings(findings, related=("author",))
    reviewers: dict[int, set[str]] = defaultdict(set)
    approvals = HistoryEvent.objects.filter(finding__in=findings, action="approved", user__isnull=False)
    for finding_id, username in approvals.values_list("finding_id", "user__username"):
        reviewers[finding_id].add(username)
    for f in findings:
        reviewed = f.status in (FindingStatus.ACCEPTED, FindingStatus.REJECTED)
        source = "human" if reviewed else "weak"
        if source not in sel.sources:
            continue
        g = grounded[f.pk] if f.status != FindingStatus.REJECTED else Grounding()
        current = g.primary
        kind = g.kind
        mask_key = g.mask.mask.name if g.mask is not None else ""
        box = list(g.box.box) if g.box is not None else None
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
                # ``annotation``, ``author``, ``region_proposal``: of the version ``kind`` names (the mask,
                # else the box); ``versions``: both, each ``{version, annotation, author}`` or None.
                "annotation": current.pk if current else None,
                "author": current.author.username if current and current.author_id else None,
                "region_proposal": current.region_proposal_id if current else None,
                "versions": {name: _version_summary(v) for name, v in (("mask", g.mask), ("box", g.box))},
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


def _version_summary(version) -> dict | None:
    """A grounding version as a label's provenance keeps it."""
    if version is None:
        return None
    return {
        "version": version.version,
        "annotation": version.pk,
        "author": version.author.username if version.author_id else None,
    }


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
            anatomy = is_anatomy(r.code)
            if anatomy and sel.anatomy == "none":
                continue
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
            if anatomy and sel.anatomy == "context":
                entry["role"] = "context"  # only then: the digests of finding labels stay as they were
            entry["digest"] = _digest(entry)
            by_scan[r.scan_id].append(entry)
    return by_scan


def gaze_entries(scan: Scan, hasher: Hasher) -> list[dict]:
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


def gaze_lacking(scan: Scan) -> list[dict]:
    """The radiograph's recordings that the newest finished gaze label run of its project labelled without
    any anatomy record (no anatomy for its region set, unusable), with the problems or error it recorded:
    the FG-CXR and I-AI exports name them."""
    if scan.ndim != 2:
        return []
    run = (
        GazeLabelRun.objects.filter(project_id=scan.project_id, status=JobStatus.SUCCEEDED)
        .order_by("-id")
        .first()
    )
    if run is None:
        return []
    from labeling.models import GazeLabelResult

    recorded = GazeAnatomyRecord.objects.filter(run=run, recording__scan=scan).values("recording_id")
    results = (
        GazeLabelResult.objects.filter(run=run, recording__scan=scan)
        .exclude(recording_id__in=recorded)
        .select_related("recording")
        .order_by("recording_id")
    )
    return [
        {
            "recording_id": r.recording.external_id,
            "reader": r.recording.reader,
            "gaze_run": run.pk,
            "status": r.status,
            "problems": [*(r.problems or []), *([r.error] if r.error else [])],
        }
        for r in results
    ]


def gaze_scans(projects) -> set[int]:
    """Radiographs with recordings in their project's newest finished gaze label run (with anatomy records,
    or without: the FG-CXR and I-AI exports name what those lack)."""
    from labeling.models import GazeLabelResult

    out: set[int] = set()
    for project in projects:
        run = GazeLabelRun.objects.filter(project=project, status=JobStatus.SUCCEEDED).order_by("-id").first()
        if run is not None:
            out |= set(
                GazeAnatomyRecord.objects.filter(run=run, recording__scan__ndim=2).values_list(
                    "recording__scan_id", flat=True
                )
            )
            out |= set(
                GazeLabelResult.objects.filter(run=run, recording__scan__ndim=2).values_list(
                    "recording__scan_id", flat=True
                )
            )
    return out


def case_id(scan: Scan) -> str:
    return f"{scan.study.patient.pseudonym}-s{scan.pk}"


def candidate_scans(projects, sel: Selection, taken: set[int], gaze: set[int]) -> list[int]:
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
    if sel.modalities:
        ids &= set(
            Scan.objects.filter(project__in=projects, modality__in=sel.modalities).values_list(
                "id", flat=True
            )
        )
    return sorted(ids)


def labels_of(projects, sel: Selection, hasher, taken: set[int], gaze: set[int], scan_ids: list[int]):
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
