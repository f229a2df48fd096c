"""Review work: the next task (never the same to two people), saves that name the version they edit,
the stage transitions, and the history of each. Findings from proposals: ``annotation/findings.py``.

With ``Project.readers_per_finding`` > 1 a task first waits in stage ``read`` for its readers
(``annotation/readers.py``), whose consensus then goes to ``review``.

Stages: ``annotate`` (an annotator accepts, edits or rejects the proposal, then submits; the submission
records what changed from the proposal) → ``review`` (a radiologist approves or returns it with a comment
the annotator sees) → ``qa`` for a random share of each annotator's work (``Project.qa_sample_rate``), done
by another radiologist than the reviewer when the project has one → ``accepted`` or ``rejected`` (the
annotator's decision, approved). A task is held by one person under a lease (``REVIEW_LEASE_MINUTES``);
acting on a task whose lease one does not hold is an error, as is a save naming an older version than the
finding's current one (``Conflict``, with both versions). Every change adds a ``HistoryEvent``.

Locks: the services that change a task lock its row (``select_for_update(of=("self",))``) and, for a save,
the finding's row; callers hold none.
"""

from __future__ import annotations

import hashlib

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotation.errors import Conflict, LeaseError, ReviewError
from annotation.events import event_add, lease_length, task_state
from annotation.findings import findings_from_proposals, findings_job, findings_made  # noqa: F401 - re-exported
from annotation.geometry import geometry_check
from annotation.loop import loop_after_accept
from annotation.models import OPEN_STAGES, Annotation, Finding, FindingSpan, FindingStatus, ReviewTask, Stage
from annotation.queue import queue_reprioritise  # noqa: F401 - re-exported
from annotation.readers import readings_open
from annotation.versions import version_add, version_change
from core.models import Membership, Project, Role
from core.storage import storage_all_or_nothing
from studies.models import Scan

__all__ = [
    "Conflict", "LeaseError", "ReviewError", "annotation_save", "finding_create", "findings_from_proposals",
    "findings_job", "findings_made", "queue_reprioritise", "task_approve", "task_assign", "task_claim",
    "task_next", "task_return", "task_submit",
]  # fmt: skip


def other_radiologist_exists(project: Project, *, besides) -> bool:
    """Whether ``project`` has a radiologist other than ``besides`` (a user). Annotators are never
    radiologists of the same project (one role per member), so the annotator need not be excluded."""
    return Membership.objects.filter(project=project, role=Role.RADIOLOGIST).exclude(user=besides).exists()


def _qa_by_reviewer(task: ReviewTask, user) -> bool:
    """A QA task its reviewer may not take while the project has another radiologist for it."""
    return (
        task.stage == Stage.QA
        and task.reviewed_by_id == user.pk
        and other_radiologist_exists(task.project, besides=user)
    )


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
            if Stage.QA in stages and other_radiologist_exists(project, besides=user):
                # QA is a second radiologist's look: not the reviewer's, while another one can do it.
                free = free.exclude(stage=Stage.QA, reviewed_by=user)
            task = free.first()
        if task is None:
            return None
        # The case shows the finding with its report and scan: one query once the task is chosen (joined
        # into the locking queries, the queue's sort would carry every candidate's report and scan).
        task.finding = Finding.objects.select_related("report", "scan").get(pk=task.finding_id)
        before = task_state(task)
        task.assignee, task.lease_expires_at = user, now + lease_length()
        task.save(update_fields=["assignee", "lease_expires_at", "updated_at"])
        if held is None:
            event_add(task.finding, task, user, "claimed", before, task_state(task))
    return task


def task_claim(*, task_id: int, user, stages: tuple[str, ...]) -> ReviewTask:
    """Take one named task (the case screen's findings list): free (unheld or lease expired) or already
    yours, in one of ``stages``; a reviewer cannot claim their own annotation. Held by someone else:
    ``LeaseError``."""
    now = timezone.now()
    with transaction.atomic():
        task = (
            ReviewTask.objects.select_for_update(of=("self",))
            .select_related("finding", "project")
            .get(pk=task_id)
        )
        if task.stage not in stages:
            raise ReviewError("stage", f"the task is in stage {task.stage}, not {' or '.join(stages)}")
        live = task.lease_expires_at is None or task.lease_expires_at > now
        if task.assignee_id not in (None, user.pk) and live:
            raise LeaseError("lease", "another reviewer holds this task; try again when they are done")
        if task.stage in (Stage.REVIEW, Stage.QA) and task.annotated_by_id == user.pk:
            raise ReviewError("reviewer", "you annotated this finding: another radiologist must review it")
        if _qa_by_reviewer(task, user):
            raise ReviewError("reviewer", "you reviewed this finding: another radiologist does its QA")
        if task.assignee_id == user.pk and live and task.lease_expires_at is not None:
            return task
        before = task_state(task)
        task.assignee, task.lease_expires_at = user, now + lease_length()
        task.save(update_fields=["assignee", "lease_expires_at", "updated_at"])
        event_add(task.finding, task, user, "claimed", before, task_state(task))
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
        if start is not None:
            FindingSpan.objects.create(finding=finding, section=section, start=start, end=end, text=text)
        task = ReviewTask.objects.create(
            project=project, finding=finding, assignee=user, lease_expires_at=timezone.now() + lease_length()
        )
        event_add(finding, task, user, "created", {}, {"text": text, "code": code, "scan": scan and scan.pk})
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
        event_add(
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
        before = task_state(task)
        task.stage, task.decision, task.annotated_by, task.returned_comment = Stage.REVIEW, decision, user, ""
        task.reviewed_by = None  # a new submission: its review is to come
        _release(task)
        task.save()
        # What the radiologists see of the submission (QA included): the decision, the comment (the event's)
        # and what changed from the proposal, measured once here.
        change = version_change(Finding.objects.select_related("scan").get(pk=task.finding_id), current)
        event_add(
            task.finding, task, user, "submitted", before, {**task_state(task), "change": change}, comment
        )
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
        project_id = task.project_id
        transaction.on_commit(lambda: loop_after_accept(project_id=project_id), robust=True)


def task_approve(*, task_id: int, user, comment: str = "") -> ReviewTask:
    """Radiologist: approve in review (→ QA when sampled, else closed) or in QA (→ closed)."""
    with transaction.atomic():
        task = _held(task_id, user, (Stage.REVIEW, Stage.QA))
        if task.annotated_by_id == user.pk:
            raise ReviewError("reviewer", "you annotated this finding: another radiologist must approve it")
        if _qa_by_reviewer(task, user):
            raise ReviewError("reviewer", "you reviewed this finding: another radiologist does its QA")
        before = task_state(task)
        if task.stage == Stage.REVIEW:
            task.reviewed_by = user
        if task.stage == Stage.REVIEW and _qa_sampled(task):
            task.stage = Stage.QA
        else:
            _close(task)
        _release(task)
        task.save()
        event_add(task.finding, task, user, "approved", before, task_state(task), comment)
    return task


def task_return(*, task_id: int, user, comment: str) -> ReviewTask:
    """Radiologist: send back to the annotator with a comment they see."""
    if not comment.strip():
        raise ReviewError("comment", "say what to change")
    with transaction.atomic():
        task = _held(task_id, user, (Stage.REVIEW, Stage.QA))
        before = task_state(task)
        task.stage, task.returned_comment = Stage.ANNOTATE, comment
        task.assignee, task.lease_expires_at = task.annotated_by, None
        task.save()
        event_add(task.finding, task, user, "returned", before, task_state(task), comment)
    return task


def task_assign(*, task_id: int, manager, assignee) -> ReviewTask:
    """Manager: give an open task to someone (their lease starts when they open it)."""
    with transaction.atomic():
        task = ReviewTask.objects.select_for_update(of=("self",)).select_related("project").get(pk=task_id)
        if task.stage not in OPEN_STAGES:
            raise ReviewError("stage", f"the task is closed ({task.stage})")
        if task.stage == Stage.READ:
            raise ReviewError("stage", "the finding is with its readers (stage read): it has no one assignee")
        if _qa_by_reviewer(task, assignee):
            raise ReviewError(
                "user", f"{assignee.username} reviewed this finding: give its QA to another radiologist"
            )
        before = task_state(task)
        task.assignee, task.lease_expires_at = assignee, None
        task.save()
        event_add(task.finding, task, manager, "assigned", before, task_state(task))
    return task
