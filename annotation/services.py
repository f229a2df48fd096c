"""Review work: findings from proposals, the next task (never the same to two people), saves that name
the version they edit, the stage transitions, and the history of each.

With ``Project.readers_per_finding`` > 1 a task first waits in stage ``read`` for its readers
(``annotation/readers.py``), whose consensus then goes to ``review``.

Stages: ``annotate`` (an annotator accepts, edits or rejects the proposal, then submits) → ``review`` (a
radiologist approves or returns it with a comment the annotator sees) → ``qa`` for a random share of each
annotator's work (``Project.qa_sample_rate``) → ``accepted`` or ``rejected`` (the annotator's decision,
approved). A task is held by one person under a lease (``REVIEW_LEASE_MINUTES``); acting on a task whose
lease one does not hold is an error, as is a save naming an older version than the finding's current one
(``Conflict``, with both versions). Every change adds a ``HistoryEvent``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from annotation.errors import Conflict, LeaseError, ReviewError
from annotation.geometry import geometry_check
from annotation.models import (
    OPEN_STAGES,
    Annotation,
    AnnotationKind,
    Finding,
    FindingStatus,
    HistoryEvent,
    ReviewTask,
    Stage,
)
from annotation.proposals import Matched, Matcher, Start
from core.models import Job, JobStatus, Project
from core.storage import project_key, storage_all_or_nothing, storage_save_bytes
from labeling.models import FindingProposal, LabelRun, RegionProposal
from studies.ingest.volume_io import mask_file
from studies.models import Scan


def lease_length() -> timedelta:
    return timedelta(minutes=float(getattr(settings, "REVIEW_LEASE_MINUTES", 30)))


def _event(
    finding, task, user, action: str, before: dict | None = None, after: dict | None = None, comment=""
):
    project_id = finding.project_id if finding is not None else task.project_id
    HistoryEvent.objects.create(
        project_id=project_id,
        finding=finding,
        task=task,
        user=user,
        action=action,
        before=before or {},
        after=after or {},
        comment=comment,
    )


def _task_state(task: ReviewTask) -> dict[str, Any]:
    return {"stage": task.stage, "assignee": task.assignee_id, "decision": task.decision}


# --- findings from proposals ------------------------------------------------------------------------


def _scan_for(study, schema: str) -> Scan | None:
    scans = list(Scan.objects.filter(study=study).order_by("id"))
    wanted = {"chexpert": ("2", None), "petct": ("3", "PT"), "rexgroundingct": ("3", "CT")}.get(
        schema, ("3", None)
    )
    for scan in scans:
        if str(scan.ndim) == wanted[0] and (wanted[1] is None or scan.modality == wanted[1]):
            return scan
    return scans[0] if scans else None


def _copy_mask(project: Project, finding: Finding, key: str, number: int = 1) -> str:
    suffix = ".nii.gz" if key.endswith(".nii.gz") else ".png"
    with default_storage.open(key, "rb") as fh:
        data = fh.read()
    return storage_save_bytes(
        project_key(project, "annotations", f"finding-{finding.pk}", f"v{number}{suffix}"), data
    )


@dataclass
class FindingsMade:
    """What ``findings_made`` did: findings ``created`` (``started``: with a start version), waiting
    findings given a start (``attached``), how many of each rule chose a start, and findings shown
    anatomy context."""

    created: int = 0
    started: int = 0
    attached: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    with_context: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "started": self.started,
            "attached": self.attached,
            "rules": dict(sorted(self.rules.items())),
            "with_context": self.with_context,
        }

    def count(self, matched: Matched) -> None:
        if matched.start is not None:
            self.rules[matched.start.rule] = self.rules.get(matched.start.rule, 0) + 1
        if matched.context:
            self.with_context += 1


def _start_version(project: Project, finding: Finding, start: Start, written: list[str]) -> Annotation:
    """The finding's next version (its first) from ``start``: the proposal's mask copied, or the mask
    cut to the components of the finding's place."""
    region = start.candidate.proposal
    number = finding.current_version + 1
    if start.mask is None:
        key, box, voxels = _copy_mask(project, finding, region.mask.name, number), region.box, region.pixels
    else:
        data, suffix = mask_file(start.mask, np.asarray(finding.scan.affine, dtype=np.float64))
        key = storage_save_bytes(
            project_key(project, "annotations", f"finding-{finding.pk}", f"v{number}{suffix}"), data
        )
        where = np.nonzero(start.mask)
        box = [int(a.min()) for a in where] + [int(a.max()) + 1 for a in where]
        voxels = int(start.mask.sum())
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


def findings_from_proposals(*, project: Project, run: LabelRun | None = None, user=None) -> int:
    """``findings_made``; returns how many findings it created."""
    return findings_made(project=project, run=run, user=user).created


def findings_made(*, project: Project, run: LabelRun | None = None, user=None) -> FindingsMade:
    """A finding with a review task for every present finding proposal of ``run`` (default: the project's
    newest finished label run) that has none yet; version 1 is its start among the scan's region
    proposals, chosen by ``annotation.proposals`` (by link, seed, sentence, code or label, organ, or a
    lesion overlapping the anatomy of the finding's place), and the anatomy of its place is its context.
    Findings still waiting with no version (open, untouched, unheld) get a start from proposals that
    arrived since. The ``created`` history event records the start's rule and the context."""
    run = run or LabelRun.objects.filter(project=project, status=JobStatus.SUCCEEDED).order_by("-id").first()
    made = FindingsMade()
    matcher = Matcher()
    if run is not None:
        _findings_create(project, run, user, matcher, made)
    _findings_attach(project, user, matcher, made)
    return made


def _findings_create(project: Project, run: LabelRun, user, matcher: Matcher, made: FindingsMade) -> None:
    from ml.models import CaseScore

    proposals = (
        FindingProposal.objects.filter(run=run, assertion="present")
        .exclude(code="No Finding")
        .exclude(findings__isnull=False)
        .select_related("report__study")
        .order_by("id")
    )
    for fp in proposals:
        study = fp.report.study
        if study is None:
            continue
        scan = _scan_for(study, project.label_schema)
        sentence = (getattr(fp.report, fp.section, "") or "")[fp.start : fp.end] or fp.phrase
        finding = Finding(
            project=project,
            study=study,
            scan=scan,
            report=fp.report,
            section=fp.section,
            start=fp.start,
            end=fp.end,
            text=sentence,
            code=fp.code,
            location=fp.location,
            laterality=fp.laterality,
            finding_proposal=fp,
            created_by=user,
        )
        matched = matcher.match(finding, finding_proposal=fp)
        try:
            with storage_all_or_nothing() as written, transaction.atomic():
                finding.save()
                if matched.start is not None:
                    _start_version(project, finding, matched.start, written)
                score = CaseScore.objects.filter(scan=scan).aggregate(m=Max("score"))["m"] if scan else None
                task = ReviewTask.objects.create(project=project, finding=finding, priority=score or 0.0)
                _event(
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


def findings_job(*, job: Job) -> tuple[dict, dict, list[dict]]:
    """The body of a ``findings_from_proposals`` job: ``params["run_id"]`` (None: the newest finished)."""
    run_id = job.params.get("run_id")
    run = LabelRun.objects.get(pk=run_id) if run_id else None
    made = findings_made(project=job.project, run=run, user=job.created_by)
    counts = {"created": made.created, "started": made.started, "attached": made.attached}
    return made.as_dict(), counts, []


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
            _event(
                finding,
                task,
                user,
                "proposal_attached",
                {"version": 0},
                {"version": finding.current_version, **matched.summary()},
            )
        made.attached += 1
        made.count(matched)


# --- the queue --------------------------------------------------------------------------------------


def task_next(*, project: Project, user, stages: tuple[str, ...]) -> ReviewTask | None:
    """The task this person should do next in ``stages``: one they already hold, else the highest-priority
    free one (unheld or lease expired; for review and QA not their own annotation). Locked with
    ``SKIP LOCKED``, so two people asking at once never get the same task."""
    now = timezone.now()
    with transaction.atomic():
        held = (
            ReviewTask.objects.select_for_update()
            .filter(project=project, stage__in=stages, assignee=user)
            .filter(Q(lease_expires_at__gt=now) | Q(lease_expires_at__isnull=True))
            .order_by("-priority", "id")
            .first()
        )
        task = held
        if task is None:
            free = (
                ReviewTask.objects.select_for_update(skip_locked=True)
                .filter(project=project, stage__in=stages)
                .filter(Q(assignee__isnull=True) | Q(lease_expires_at__lte=now))
                .exclude(Q(stage__in=[Stage.REVIEW, Stage.QA]) & Q(annotated_by=user))
                .order_by("-priority", "id")
            )
            task = free.first()
        if task is None:
            return None
        # The case shows the finding with its report and scan: one query once the task is chosen (joined
        # into the locking queries, the queue's sort would carry every candidate's report and scan).
        task.finding = Finding.objects.select_related("report", "scan").get(pk=task.finding_id)
        before = _task_state(task)
        task.assignee, task.lease_expires_at = user, now + lease_length()
        task.save(update_fields=["assignee", "lease_expires_at", "updated_at"])
        if held is None:
            _event(task.finding, task, user, "claimed", before, _task_state(task))
    return task


def task_claim(*, task_id: int, user, stages: tuple[str, ...]) -> ReviewTask:
    """Take one named task (the case screen's findings list): free (unheld or lease expired) or already
    yours, in one of ``stages``; a reviewer cannot claim their own annotation. Held by someone else:
    ``LeaseError``."""
    now = timezone.now()
    with transaction.atomic():
        task = ReviewTask.objects.select_for_update(of=("self",)).select_related("finding").get(pk=task_id)
        if task.stage not in stages:
            raise ReviewError("stage", f"the task is in stage {task.stage}, not {' or '.join(stages)}")
        live = task.lease_expires_at is None or task.lease_expires_at > now
        if task.assignee_id not in (None, user.pk) and live:
            raise LeaseError("lease", "another reviewer holds this task; try again when they are done")
        if task.stage in (Stage.REVIEW, Stage.QA) and task.annotated_by_id == user.pk:
            raise ReviewError("reviewer", "you annotated this finding: another radiologist must review it")
        if task.assignee_id == user.pk and live and task.lease_expires_at is not None:
            return task
        before = _task_state(task)
        task.assignee, task.lease_expires_at = user, now + lease_length()
        task.save(update_fields=["assignee", "lease_expires_at", "updated_at"])
        _event(task.finding, task, user, "claimed", before, _task_state(task))
    return task


def finding_create(
    *,
    project: Project,
    user,
    study,
    scan: Scan | None,
    text: str,
    code: str = "",
    section: str = "",
    start: int | None = None,
    end: int | None = None,
) -> ReviewTask:
    """A finding the proposals missed, added by hand: a manual finding of ``study`` (on ``scan``, which
    must belong to it) with an annotate task held by its author."""
    text = text.strip()
    if not text:
        raise ReviewError("text", "say what the finding is")
    if scan is not None and scan.study_id != study.pk:
        raise ReviewError("scan_id", f"scan {scan.pk} is not a scan of study {study.pk}")
    report = study.reports.order_by("id").first()
    if start is not None or end is not None:
        body = getattr(report, section, None) if report is not None and section else None
        if not isinstance(body, str) or start is None or end is None or not 0 <= start < end <= len(body):
            raise ReviewError("start", "the span must lie inside the named report section")
    with transaction.atomic():
        finding = Finding.objects.create(
            project=project,
            study=study,
            scan=scan,
            report=report,
            section=section if start is not None else "",
            start=start,
            end=end,
            text=text,
            code=code,
            source="manual",
            created_by=user,
        )
        task = ReviewTask.objects.create(
            project=project, finding=finding, assignee=user, lease_expires_at=timezone.now() + lease_length()
        )
        _event(finding, task, user, "created", {}, {"text": text, "code": code, "scan": scan and scan.pk})
        readings_open(task, user=user, first_reader=user)  # several readers: its author holds reading 1
    return task


def _held(task_id: int, user, stages: tuple[str, ...]) -> ReviewTask:
    # Lock the task row only (not the finding or the project joined for reading).
    task = (
        ReviewTask.objects.select_for_update(of=("self",))
        .select_related("finding", "project")
        .get(pk=task_id)
    )
    if task.stage not in stages:
        raise ReviewError("stage", f"the task is in stage {task.stage}, not {' or '.join(stages)}")
    if task.assignee_id != user.pk:
        raise LeaseError("lease", "this task is not held by you (claim it with next-task)")
    if task.lease_expires_at is not None and task.lease_expires_at <= timezone.now():
        raise LeaseError("lease", "your lease on this task expired; claim it again to continue")
    return task


# --- saving annotations -----------------------------------------------------------------------------


def version_add(
    finding: Finding,
    written: list[str],
    *,
    user,
    kind: str,
    array: np.ndarray | None,
    voxels: int,
    box=None,
    points=None,
    parent: Annotation | None = None,
    comment: str = "",
    mask_encoded: bytes | None = None,
) -> Annotation:
    """The finding's next version (the caller holds the finding's row lock and has checked the geometry):
    its mask file stored (its key appended to ``written``), the row, ``current_version`` moved on.
    ``mask_encoded``: the mask's bytes when they already are the stored form (a gzipped uint8 NIfTI of
    0/1 on the scan's affine), kept as they are."""
    number = finding.current_version + 1
    key = ""
    if array is not None:
        if mask_encoded is not None and array.ndim == 3:
            data, suffix = mask_encoded, ".nii.gz"
        else:
            data, suffix = mask_file(array, np.asarray(finding.scan.affine, dtype=np.float64))
        key = storage_save_bytes(
            project_key(finding.project, "annotations", f"finding-{finding.pk}", f"v{number}{suffix}"), data
        )
        written.append(key)
    annotation = Annotation.objects.create(
        finding=finding,
        version=number,
        kind=kind,
        mask=key,
        box=list(box) if box is not None else None,
        points=[list(p) for p in points] if points is not None else None,
        voxels=voxels,
        author=user,
        parent=parent,
        comment=comment,
    )
    finding.current_version = number
    finding.save(update_fields=["current_version", "updated_at"])
    return annotation


def annotation_save(
    *,
    task_id: int,
    user,
    base_version: int,
    kind: str,
    mask=None,
    mask_encoded: bytes | None = None,
    box=None,
    points=None,
    comment: str = "",
) -> Annotation:
    """A new version of the task's finding (the task must be held by ``user`` in stage annotate).
    ``mask_encoded``: the mask's bytes when they already are the stored form (a gzipped uint8 NIfTI of 0/1
    on the scan's affine, checked by the caller), kept as they are."""
    with storage_all_or_nothing() as written, transaction.atomic():
        task = _held(task_id, user, (Stage.ANNOTATE,))
        # Lock only the finding: PostgreSQL refuses FOR UPDATE on the nullable side of the scan join.
        locked = Finding.objects.select_for_update(of=("self",))
        finding = locked.select_related("scan").get(pk=task.finding_id)
        if base_version != finding.current_version:
            raise Conflict(finding.annotations.filter(version=finding.current_version).first(), base_version)
        array, voxels = geometry_check(finding, kind, mask, box, points)
        parent = finding.annotations.filter(version=finding.current_version).first()
        annotation = version_add(
            finding, written, user=user, kind=kind, array=array, voxels=voxels, box=box, points=points,
            parent=parent, comment=comment, mask_encoded=mask_encoded,
        )  # fmt: skip
        number = annotation.version
        _event(
            finding,
            task,
            user,
            "annotation_saved",
            {"version": number - 1},
            {"version": number, "kind": kind, "voxels": voxels},
            comment,
        )
    return annotation


# --- transitions ------------------------------------------------------------------------------------


def _release(task: ReviewTask) -> None:
    task.assignee, task.lease_expires_at = None, None


def task_submit(*, task_id: int, user, decision: str, comment: str = "") -> ReviewTask:
    """Annotator: ``accept`` (the current version grounds the finding) or ``reject`` (the finding is not
    there); the task goes to review."""
    if decision not in ("accept", "reject"):
        raise ReviewError("decision", "must be accept or reject")
    with transaction.atomic():
        task = _held(task_id, user, (Stage.ANNOTATE,))
        current = task.finding.annotations.filter(version=task.finding.current_version).first()
        if decision == "accept" and (current is None or current.voxels == 0):
            raise ReviewError(
                "decision", "an empty annotation cannot be accepted: draw the finding, or reject it"
            )
        before = _task_state(task)
        task.stage, task.decision, task.annotated_by, task.returned_comment = Stage.REVIEW, decision, user, ""
        _release(task)
        task.save()
        _event(task.finding, task, user, "submitted", before, _task_state(task), comment)
    return task


def _qa_sampled(task: ReviewTask) -> bool:
    digest = hashlib.sha256(f"{task.pk}:{task.annotated_by_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < task.project.qa_sample_rate


def _close(task: ReviewTask) -> None:
    accepted = task.decision == "accept"
    task.stage = Stage.ACCEPTED if accepted else Stage.REJECTED
    Finding.objects.filter(pk=task.finding_id).update(
        status=FindingStatus.ACCEPTED if accepted else FindingStatus.REJECTED, updated_at=timezone.now()
    )
    if accepted:  # the learning loop counts it once committed (annotation/loop.py)
        from annotation.loop import loop_after_accept

        project_id = task.project_id
        transaction.on_commit(lambda: loop_after_accept(project_id=project_id), robust=True)


def task_approve(*, task_id: int, user, comment: str = "") -> ReviewTask:
    """Radiologist: approve in review (→ QA when sampled, else closed) or in QA (→ closed)."""
    with transaction.atomic():
        task = _held(task_id, user, (Stage.REVIEW, Stage.QA))
        if task.annotated_by_id == user.pk:
            raise ReviewError("reviewer", "you annotated this finding: another radiologist must approve it")
        before = _task_state(task)
        if task.stage == Stage.REVIEW and _qa_sampled(task):
            task.stage = Stage.QA
        else:
            _close(task)
        _release(task)
        task.save()
        _event(task.finding, task, user, "approved", before, _task_state(task), comment)
    return task


def task_return(*, task_id: int, user, comment: str) -> ReviewTask:
    """Radiologist: send back to the annotator with a comment they see."""
    if not comment.strip():
        raise ReviewError("comment", "say what to change")
    with transaction.atomic():
        task = _held(task_id, user, (Stage.REVIEW, Stage.QA))
        before = _task_state(task)
        task.stage, task.returned_comment = Stage.ANNOTATE, comment
        task.assignee, task.lease_expires_at = task.annotated_by, None
        task.save()
        _event(task.finding, task, user, "returned", before, _task_state(task), comment)
    return task


def task_assign(*, task_id: int, manager, assignee) -> ReviewTask:
    """Manager: give an open task to someone (their lease starts when they open it)."""
    with transaction.atomic():
        task = ReviewTask.objects.select_for_update().get(pk=task_id)
        if task.stage not in OPEN_STAGES:
            raise ReviewError("stage", f"the task is closed ({task.stage})")
        if task.stage == Stage.READ:
            raise ReviewError("stage", "the finding is with its readers (stage read): it has no one assignee")
        before = _task_state(task)
        task.assignee, task.lease_expires_at = assignee, None
        task.save()
        _event(task.finding, task, manager, "assigned", before, _task_state(task))
    return task


def queue_reprioritise(*, project: Project, strategy: str, model_version=None, seed: int = 0) -> int:
    """Order the open tasks by an active-learning score: each task's priority becomes its scan's stored
    ``CaseScore`` for ``strategy`` and ``model_version`` (a ``power_`` strategy: the scan's place in the
    seeded noisy ranking of those scores, ``(n - k) / n`` for the k-th of n); tasks whose scan has none
    go last (-1). An unknown strategy, a model strategy without a model, or a strategy and version with no
    stored score at all is an ``ActiveLearningError`` and changes nothing. Returns how many tasks
    changed."""
    from ml.active_learning import ActiveLearningError, ranked, strategy_check

    base = strategy_check(strategy, model_version)
    rows = ranked(project=project, strategy=strategy, version=model_version, seed=seed)
    if not rows:
        of = f"of {model_version.name} v{model_version.version} " if model_version is not None else ""
        raise ActiveLearningError(
            "strategy", f"no {base} scores {of}are stored in {project.slug}: compute them first"
        )
    if strategy.startswith("power_"):
        scores = {r.scan_id: (len(rows) - k) / len(rows) for k, r in enumerate(rows)}
    else:
        scores = {r.scan_id: r.score for r in rows}
    changed = 0
    with transaction.atomic():
        for task in (
            ReviewTask.objects.select_for_update(of=("self",))
            .filter(project=project, stage__in=OPEN_STAGES)
            .select_related("finding")
        ):
            priority = scores.get(task.finding.scan_id, -1.0)
            if task.priority != priority:
                task.priority = priority
                task.save(update_fields=["priority", "updated_at"])
                changed += 1
    return changed


def readings_open(task: ReviewTask, **kwargs) -> None:
    """Several readers (``annotation.readers.readings_open``): nothing when the project has one reader."""
    if (task.project.readers_per_finding or 1) > 1:
        from annotation.readers import readings_open as open_readings

        open_readings(task, **kwargs)
