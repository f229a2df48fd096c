"""Findings from a label run's finding proposals: one finding per entity, each with a review task and a
start version from the region proposal that fits it.

**One finding, one task.** A report names the same nodule in Findings and again in Impression; the
labeler proposes each mention. Mentions of one entity become one finding with several spans
(``FindingSpan``): a mention joins a finding of the same run, report and code named in another section
(Findings, Impression) when their laterality, location and size are the same, an attribute one of them
does not state counting as the same (Impression often drops the size). Two mentions in one section are
two findings: on the 1,122 real IU reports (``bench/bench_findings_merge.py``) such merges were mostly
two different things of one code (a PICC and a chest tube, both "Support Devices" on the left). A
mention that two findings would take stays its own finding. The finding keeps the first mention's
sentence as its text and takes the attributes the later ones add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Exists, Max, OuterRef
from django.utils import timezone

from annotation.events import event_add
from annotation.models import (
    Annotation,
    AnnotationKind,
    Finding,
    FindingSpan,
    FindingStatus,
    ReviewTask,
    Stage,
)
from annotation.proposals import Matched, Matcher, Start
from annotation.readers import readings_open
from annotation.versions import version_key
from core.models import Job, JobStatus, Project
from core.storage import storage_all_or_nothing, storage_save_bytes
from labeling.models import FindingProposal, LabelRun, RegionProposal
from ml.models import CaseScore
from studies.masks import mask_box, mask_encode
from studies.models import Scan

SIZE_TOLERANCE_MM = 0.5  # sizes stated as 14 mm and 1.4 cm are the same size


@dataclass
class FindingsMade:
    """What ``findings_made`` did: findings ``created`` (``started``: with a start version), mentions
    ``merged`` into a finding as another span, waiting findings given a start (``attached``), how many of
    each rule chose a start, and findings shown anatomy context."""

    created: int = 0
    started: int = 0
    merged: int = 0
    attached: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    with_context: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "started": self.started,
            "merged": self.merged,
            "attached": self.attached,
            "rules": dict(sorted(self.rules.items())),
            "with_context": self.with_context,
        }

    def count(self, matched: Matched) -> None:
        if matched.start is not None:
            self.rules[matched.start.rule] = self.rules.get(matched.start.rule, 0) + 1
        if matched.context:
            self.with_context += 1


def findings_from_proposals(*, project: Project, run: LabelRun | None = None, user=None) -> int:
    """``findings_made``; returns how many findings it created."""
    return findings_made(project=project, run=run, user=user).created


def findings_made(*, project: Project, run: LabelRun | None = None, user=None) -> FindingsMade:
    """A finding with a review task for every entity among the present finding proposals of ``run``
    (default: the project's newest finished label run) that have none yet (mentions of one entity merged,
    see the module's docstring); version 1 is its start among the scan's region proposals, chosen by
    ``annotation.proposals`` (by link, seed, sentence, code or label, organ, or a lesion overlapping the
    anatomy of the finding's place), and the anatomy of its place is its context. Findings still waiting
    with no version (open, untouched, unheld) get a start from proposals that arrived since. The
    ``created`` history event records the start's rule and the context; ``merged`` events the spans
    added."""
    run = run or LabelRun.objects.filter(project=project, status=JobStatus.SUCCEEDED).order_by("-id").first()
    made = FindingsMade()
    matcher = Matcher()
    if run is not None:
        _findings_create(project, run, user, matcher, made)
    _findings_attach(project, user, matcher, made)
    return made


def findings_job(*, job: Job) -> tuple[dict, dict, list[dict]]:
    """The body of a ``findings_from_proposals`` job: ``params["run_id"]`` (None: the newest finished)."""
    run_id = job.params.get("run_id")
    run = LabelRun.objects.get(pk=run_id) if run_id else None
    made = findings_made(project=job.project, run=run, user=job.created_by)
    counts = {
        "created": made.created,
        "started": made.started,
        "merged": made.merged,
        "attached": made.attached,
    }
    return made.as_dict(), counts, []


# --- one finding per entity -----------------------------------------------------------------------------


def _same(a: str, b: str) -> bool:
    return a == b or not (a and b)


def _same_size(a: float | None, b: float | None) -> bool:
    return a is None or b is None or abs(a - b) <= SIZE_TOLERANCE_MM


def mentions_match(finding: Finding, sections: set[str], fp: FindingProposal) -> bool:
    """Whether ``fp`` names the entity of ``finding`` (whose spans lie in ``sections``) again: in another
    section, with the same code, laterality, location and size, an attribute one side leaves unsaid
    counting as the same."""
    if fp.code != finding.code or fp.section in sections:
        return False
    return (
        _same(finding.laterality, fp.laterality)
        and _same(finding.location, fp.location)
        and _same_size(finding.size_mm, fp.size_mm)
    )


def merge_target(findings: list[tuple[Finding, set[str]]], fp: FindingProposal) -> Finding | None:
    """Of ``findings`` (each with the sections of its spans), the one ``fp`` names again, if exactly one
    does (a mention two findings could take stays its own finding)."""
    found = [f for f, sections in findings if mentions_match(f, sections, fp)]
    return found[0] if len(found) == 1 else None


def attributes_taken(finding: Finding, fp: FindingProposal) -> list[str]:
    """Set on ``finding`` the attributes it lacks and ``fp`` states; returns their names."""
    taken = []
    for name, value in (("laterality", fp.laterality), ("location", fp.location), ("size_mm", fp.size_mm)):
        if value not in ("", None) and getattr(finding, name) in ("", None):
            setattr(finding, name, value)
            taken.append(name)
    return taken


def _merge_target(project: Project, run: LabelRun, fp: FindingProposal) -> Finding | None:
    """The one finding of this run and report that ``fp`` names again, if exactly one does."""
    candidates = Finding.objects.filter(
        project=project, report_id=fp.report_id, code=fp.code, finding_proposal__run=run
    ).prefetch_related("spans")
    return merge_target([(f, {s.section for s in f.spans.all()}) for f in candidates], fp)


def _sentence(fp: FindingProposal) -> str:
    return (getattr(fp.report, fp.section, "") or "")[fp.start : fp.end] or fp.phrase


def finding_merge_mention(*, finding: Finding, fp: FindingProposal, user=None) -> FindingSpan:
    """Add ``fp`` to ``finding`` as another span (the caller checked ``mentions_match``); attributes the
    finding lacks are taken from it. Call inside a transaction."""
    span = FindingSpan.objects.create(
        finding=finding,
        finding_proposal=fp,
        section=fp.section,
        start=fp.start,
        end=fp.end,
        text=_sentence(fp),
    )
    changed = attributes_taken(finding, fp)
    if changed:
        finding.save(update_fields=[*changed, "updated_at"])
    event_add(
        finding,
        getattr(finding, "task", None),
        user,
        "merged",
        after={"finding_proposal": fp.pk, "section": fp.section, "start": fp.start, "end": fp.end},
    )
    return span


def _scan_for(study, schema: str) -> Scan | None:
    scans = list(Scan.objects.filter(study=study).order_by("id"))
    wanted = {"chexpert": ("2", None), "petct": ("3", "PT"), "rexgroundingct": ("3", "CT")}.get(
        schema, ("3", None)
    )
    for scan in scans:
        if str(scan.ndim) == wanted[0] and (wanted[1] is None or scan.modality == wanted[1]):
            return scan
    return scans[0] if scans else None


def _findings_create(project: Project, run: LabelRun, user, matcher: Matcher, made: FindingsMade) -> None:
    proposals = (
        FindingProposal.objects.filter(run=run, assertion="present")
        .exclude(code="No Finding")
        .exclude(findings__isnull=False)
        .exclude(finding_spans__isnull=False)
        .select_related("report__study")
        .order_by("report_id", "id")
    )
    for fp in proposals:
        study = fp.report.study
        if study is None:
            continue
        target = _merge_target(project, run, fp)
        if target is not None:
            try:
                with transaction.atomic():
                    finding_merge_mention(finding=target, fp=fp, user=user)
            except IntegrityError:  # another call merged it meanwhile
                continue
            made.merged += 1
            continue
        scan = _scan_for(study, project.label_schema)
        finding = Finding(
            project=project,
            study=study,
            scan=scan,
            report=fp.report,
            section=fp.section,
            start=fp.start,
            end=fp.end,
            text=_sentence(fp),
            code=fp.code,
            location=fp.location,
            laterality=fp.laterality,
            size_mm=fp.size_mm,
            finding_proposal=fp,
            created_by=user,
        )
        matched = matcher.match(finding, finding_proposal=fp)
        try:
            with storage_all_or_nothing() as written, transaction.atomic():
                finding.save()
                FindingSpan.objects.create(
                    finding=finding, finding_proposal=fp, section=fp.section, start=fp.start, end=fp.end,
                    text=finding.text,
                )  # fmt: skip
                if matched.start is not None:
                    _start_version(project, finding, matched.start, written)
                score = CaseScore.objects.filter(scan=scan).aggregate(m=Max("score"))["m"] if scan else None
                task = ReviewTask.objects.create(project=project, finding=finding, priority=score or 0.0)
                event_add(
                    finding,
                    task,
                    user,
                    "created",
                    after={
                        "source": "proposal",
                        "finding_proposal": fp.pk,
                        "version": finding.current_version,
                        **matched.summary(),
                    },
                )
                readings_open(task, user=user)  # several readers: N readings, the task waits in stage read
        except IntegrityError:  # another call made it meanwhile (the button and a label run's job)
            continue
        made.created += 1
        made.started += matched.start is not None
        made.count(matched)


# --- start versions ---------------------------------------------------------------------------------


def _copy_mask(finding: Finding, key: str, number: int = 1) -> str:
    suffix = ".nii.gz" if key.endswith(".nii.gz") else ".png"
    with default_storage.open(key, "rb") as fh:
        data = fh.read()
    return storage_save_bytes(version_key(finding, number, suffix), data)


def _start_version(project: Project, finding: Finding, start: Start, written: list[str]) -> Annotation:
    """The finding's next version (its first) from ``start``: the proposal's mask copied, or the mask
    cut to the components of the finding's place."""
    region = start.candidate.proposal
    number = finding.current_version + 1
    if start.mask is None:
        key, box, voxels = _copy_mask(finding, region.mask.name, number), region.box, region.pixels
    else:
        data, suffix = mask_encode(start.mask, np.asarray(finding.scan.affine, dtype=np.float64))
        key = storage_save_bytes(version_key(finding, number, suffix), data)
        box, voxels = mask_box(start.mask), int(start.mask.sum())
    written.append(key)
    annotation = Annotation.objects.create(
        finding=finding,
        version=number,
        kind=AnnotationKind.MASK,
        mask=key,
        box=box,
        voxels=voxels,
        region_proposal=region,
        comment=f"start: proposal {region.pk} ({start.rule})",
    )
    finding.current_version = number
    finding.save(update_fields=["current_version", "updated_at"])
    return annotation


def _waiting(task: ReviewTask, now) -> bool:
    """Open, no version yet, and nobody working on it: unheld (or lease lapsed), no reader yet."""
    finding = task.finding
    if finding.current_version != 0 or finding.status != FindingStatus.OPEN or finding.scan_id is None:
        return False
    if task.stage == Stage.ANNOTATE:
        lapsed = task.lease_expires_at is not None and task.lease_expires_at <= now
        return task.assignee_id is None or lapsed
    if task.stage == Stage.READ:
        return not task.finding.readings.filter(reader__isnull=False).exists()
    return False


def _findings_attach(project: Project, user, matcher: Matcher, made: FindingsMade) -> None:
    # Only findings whose scan got a proposal after the finding was made: the others were matched then.
    newer = RegionProposal.objects.filter(
        scan_id=OuterRef("finding__scan_id"), created_at__gt=OuterRef("finding__created_at")
    )
    waiting = (
        ReviewTask.objects.filter(
            project=project,
            stage__in=[Stage.ANNOTATE, Stage.READ],
            finding__current_version=0,
            finding__status=FindingStatus.OPEN,
            finding__scan__isnull=False,
        )
        .filter(Exists(newer))
        .select_related("finding__scan", "finding__finding_proposal", "finding__project")
        .order_by("id")
    )
    for candidate in waiting:
        if not _waiting(candidate, timezone.now()):
            continue
        matched = matcher.match(candidate.finding)
        if matched.start is None:
            continue
        with storage_all_or_nothing() as written, transaction.atomic():
            task = ReviewTask.objects.select_for_update(of=("self",)).get(pk=candidate.pk)
            locked = Finding.objects.select_for_update(of=("self",)).select_related("scan")
            finding = locked.get(pk=task.finding_id)
            task.finding = finding
            if not _waiting(task, timezone.now()):
                continue
            _start_version(project, finding, matched.start, written)
            event_add(
                finding,
                task,
                user,
                "proposal_attached",
                {"version": 0},
                {"version": finding.current_version, **matched.summary()},
            )
        made.attached += 1
        made.count(matched)
