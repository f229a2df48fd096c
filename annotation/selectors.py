"""Reads of findings, review tasks, readings, versions and history: the visibility rules in one place.

Every view that returns one of these objects reads it through here. The rules:
- **project**: members of the object's project see it (superusers: every project); to anyone else it does
  not exist (404).
- **role**: review work in progress is the reviewers' (managers, annotators, radiologists). Researchers see a
  finding once it is accepted, its current version and its history; tasks, readings, open or rejected
  findings and earlier versions do not exist for them (404).
- **blinding**: while a finding is with its readers (stage ``read``), a reader's versions, reading and
  history events are seen by that reader alone, managers included (see ``annotation/readers.py``).
"""

from __future__ import annotations

from django.db.models import F, Q, QuerySet

from annotation.models import Annotation, Finding, FindingStatus, HistoryEvent, Reading, ReviewTask, Stage
from core.errors import NotFound
from core.models import Membership, Role
from core.selectors import projects_for_user

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


def annotations_for_user(user) -> QuerySet[Annotation]:
    """Versions of visible findings; researchers: the current version of accepted findings only; nobody
    sees another reader's version while the finding is with its readers."""
    ids, researcher = _projects(user)
    qs = Annotation.objects.filter(finding__project_id__in=ids).exclude(_blinded(user, "finding__", "author"))
    if researcher:
        qs = qs.exclude(
            Q(finding__project_id__in=researcher)
            & (~Q(finding__status=FindingStatus.ACCEPTED) | ~Q(version=F("finding__current_version")))
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
