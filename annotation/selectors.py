"""Reads of findings, review tasks, readings, versions and history: the visibility rules in one place.

Every view that returns one of these objects reads it through here. The rules:
- **project**: members of the object's project see it (superusers: every project); to anyone else it does
  not exist (404).
- **role**: review work in progress is the reviewers' (managers, annotators, radiologists). Researchers see a
  finding once it is accepted, its current version (and its newest mask and box) and its history; tasks,
  readings, open or rejected findings and earlier versions do not exist for them (404).
- **blinding**: while a finding is with its readers (stage ``read``), a reader's versions, reading and
  history events are seen by that reader alone, managers included (see ``annotation/readers.py``).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import F, Prefetch, Q, QuerySet

from annotation.models import (
    Annotation,
    Finding,
    FindingSpan,
    FindingStatus,
    HistoryEvent,
    Reading,
    ReviewTask,
    Stage,
)
from annotation.versions import in_grounding
from core.errors import FieldError, NotFound
from core.models import Membership, Project, Role
from core.selectors import projects_for_user
from labeling.models import RegionProposal
from studies.models import GazeRecording, Scan, Study

REVIEWERS = (Role.MANAGER, Role.ANNOTATOR, Role.RADIOLOGIST)


def _projects(user) -> tuple[list[int], list[int]]:
    """(ids of the caller's projects, ids of those where the caller is a researcher): two queries, so that
    the querysets below filter on ``project_id`` alone (an index-only COUNT(*) without a join)."""
    ids = list(projects_for_user(user).values_list("id", flat=True))
    if user.is_superuser or not ids:
        return ids, []
    # One membership (one role) per project and user: a researcher there has no other role.
    researcher = Membership.objects.filter(user=user, project_id__in=ids, role=Role.RESEARCHER)
    return ids, list(researcher.values_list("project_id", flat=True))


def _review_projects(user) -> list[int]:
    ids, researcher = _projects(user)
    return [pk for pk in ids if pk not in set(researcher)]


def _blinded(user, prefix: str, author: str) -> Q:
    """Rows some other reader made while their finding is with its readers (``prefix``: the path to the
    finding, ``author``: the field naming who made the row)."""
    return (
        Q(**{f"{prefix}task__stage": Stage.READ})
        & Q(**{f"{author}__isnull": False})
        & ~Q(**{author: user.pk if user.is_authenticated else None})
    )


def findings_for_user(user) -> QuerySet[Finding]:
    ids, researcher = _projects(user)
    qs = Finding.objects.filter(project_id__in=ids)
    if researcher:
        qs = qs.exclude(Q(project_id__in=researcher) & ~Q(status=FindingStatus.ACCEPTED))
    return qs


def with_spans(qs: QuerySet[Finding]) -> QuerySet[Finding]:
    """Findings as the API lists them: their task joined, their spans prefetched (two queries in all)."""
    return qs.select_related("task").prefetch_related(
        Prefetch("spans", queryset=FindingSpan.objects.order_by("id"))
    )


def finding_get_for_user(user, finding_id: int) -> Finding:
    found = findings_for_user(user).filter(pk=finding_id).first()
    if found is None:
        raise NotFound("No such finding.", field="finding")
    return found


def tasks_for_user(user) -> QuerySet[ReviewTask]:
    return ReviewTask.objects.filter(project_id__in=_review_projects(user))


def task_get_for_user(user, task_id: int) -> ReviewTask:
    task = (
        tasks_for_user(user)
        .filter(pk=task_id)
        .select_related("finding__report", "finding__scan", "assignee", "project")
        .select_related("annotated_by", "reviewed_by")
        .first()
    )
    if task is None:
        raise NotFound("No such task.")
    return task


def readings_for_user(user) -> QuerySet[Reading]:
    """A reading exists for its reader only (blinding)."""
    if not user.is_authenticated:
        return Reading.objects.none()
    return Reading.objects.filter(project_id__in=_review_projects(user), reader=user)


def reading_get_for_user(user, reading_id: int) -> Reading:
    reading = (
        readings_for_user(user)
        .filter(pk=reading_id)
        .select_related("finding__report", "finding__scan", "finding__task", "project")
        .select_related("reader", "annotation")
        .first()
    )
    if reading is None:
        raise NotFound("No such reading.")
    return reading


def reading_of_finding(user, finding_id: int) -> Reading | None:
    """The reading ``user`` holds of a finding (several readers), if any."""
    return readings_for_user(user).filter(finding_id=finding_id).first()


def annotations_for_user(user) -> QuerySet[Annotation]:
    """Versions of visible findings; researchers: of accepted findings only the current version and the
    current grounding (the newest mask and the newest box: ``annotation.versions.in_grounding``); nobody
    sees another reader's version while the finding is with its readers."""
    ids, researcher = _projects(user)
    qs = Annotation.objects.filter(finding__project_id__in=ids).exclude(_blinded(user, "finding__", "author"))
    if researcher:
        current = Q(version=F("finding__current_version")) | in_grounding()
        qs = qs.exclude(
            Q(finding__project_id__in=researcher) & (~Q(finding__status=FindingStatus.ACCEPTED) | ~current)
        )
    return qs


def annotation_get_for_user(user, annotation_id: int) -> Annotation:
    found = annotations_for_user(user).filter(pk=annotation_id).first()
    if found is None:
        raise NotFound("No such annotation.")
    return found


def history_for_user(user) -> QuerySet[HistoryEvent]:
    """Events of visible findings (researchers: accepted ones); while a finding is with its readers, each
    reader sees their own events of it only."""
    ids, researcher = _projects(user)
    qs = HistoryEvent.objects.filter(project_id__in=ids).exclude(_blinded(user, "finding__", "user"))
    if researcher:
        qs = qs.exclude(Q(project_id__in=researcher) & ~Q(finding__status=FindingStatus.ACCEPTED))
    return qs


# --- what a case shows (the review screen's payload, annotation/api/cases.py) ---------------------------


def case_versions(task: ReviewTask) -> QuerySet[Annotation]:
    """The versions a case lists: all of them, or while the finding is with its readers (stage read) only
    those no reader made."""
    versions = task.finding.annotations.select_related("author").order_by("version")
    if task.stage == Stage.READ:
        versions = versions.filter(author__isnull=True)
    return versions


def case_siblings(finding: Finding) -> QuerySet[Finding]:
    """The findings of the finding's study in its project (the case's findings list)."""
    return with_spans(
        Finding.objects.filter(project_id=finding.project_id, study_id=finding.study_id)
    ).order_by("id")


def case_proposals(finding: Finding) -> list[RegionProposal]:
    """The region proposals of the finding's scan (none without a scan)."""
    if finding.scan_id is None:
        return []
    return list(
        RegionProposal.objects.filter(scan_id=finding.scan_id).select_related("model_version").order_by("id")
    )


def case_gaze(finding: Finding) -> list[GazeRecording]:
    """The eye-gaze recordings of the finding's scan."""
    if finding.scan_id is None:
        return []
    return list(GazeRecording.objects.filter(scan_id=finding.scan_id).order_by("id"))


def task_submission(task: ReviewTask) -> HistoryEvent | None:
    """The annotator's newest submission of the task (its ``submitted`` event: decision, comment, and
    what changed from the proposal); None before one, and for a consensus of several readers."""
    if task.annotated_by_id is None:
        return None
    return (
        HistoryEvent.objects.filter(task_id=task.pk, action="submitted")
        .select_related("user")
        .order_by("-at", "-id")
        .first()
    )


# --- what actions name in their requests -------------------------------------------------------------------


def study_get_in_project(project: Project, study_id: int) -> Study:
    found = Study.objects.filter(project=project, pk=study_id).first()
    if found is None:
        raise FieldError("study_id", f"no study {study_id} in project {project.slug}")
    return found


def scan_get_in_project(project: Project, scan_id: int) -> Scan:
    found = Scan.objects.filter(project=project, pk=scan_id).first()
    if found is None:
        raise FieldError("scan_id", f"no scan {scan_id} in project {project.slug}")
    return found


def member_get(project: Project, username: str, roles) -> object:
    """The user ``username`` if they have one of ``roles`` in ``project``; else a 400 naming ``user``."""
    found = get_user_model().objects.filter(username=username).first()
    if found is None or not (
        found.is_superuser
        or Membership.objects.filter(project=project, user=found, role__in=list(roles)).exists()
    ):
        raise FieldError("user", "not an annotator or radiologist of this project")
    return found


def accepted_finding_ids(project: Project) -> list[int]:
    """Ids of the project's accepted findings."""
    return list(
        Finding.objects.filter(project=project, status=FindingStatus.ACCEPTED).values_list("pk", flat=True)
    )


def accepted_mask_finding_ids(project: Project) -> list[int]:
    """Ids of the project's accepted findings that have a mask version."""
    return list(
        Finding.objects.filter(project=project, status=FindingStatus.ACCEPTED, annotations__kind="mask")
        .values_list("pk", flat=True)
        .distinct()
    )
