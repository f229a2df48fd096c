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

from dataclasses import dataclass, field

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
from labeling.models import (
    GazeAnatomyRecord,
    GazeHeatmap,
    GazeLabelResult,
    GazeSentence,
    RegionProposal,
)
from labeling.models.gaze import GazeResultStatus
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
    """The eye-gaze recordings of the finding's scan (in the finding's project)."""
    if finding.scan_id is None:
        return []
    return list(
        GazeRecording.objects.filter(scan_id=finding.scan_id, project_id=finding.project_id).order_by("id")
    )


@dataclass
class CaseGazeLabels:
    """What the newest gaze label run with a done result for a recording made of it (``result``, its run
    loaded): the transcript's sentences in order, the heatmaps (the whole recording's, one per sentence
    window, one per anatomy) and the anatomy records (dwell, time to first fixation) by anatomy."""

    result: GazeLabelResult
    sentences: list[GazeSentence] = field(default_factory=list)
    heatmaps: list[GazeHeatmap] = field(default_factory=list)
    records: list[GazeAnatomyRecord] = field(default_factory=list)


def case_gaze_labels(recordings: list[GazeRecording]) -> tuple[dict[int, CaseGazeLabels], dict[int, str]]:
    """The gaze labels of ``recordings`` (from ``case_gaze``): recording id -> the newest run whose result
    for it is done (a run that labelled it whole, whatever the run's own state: the synchronous labelling
    of one recording leaves its run pending), and recording id -> why the newest run without a done result
    could not label it (unusable or failed, with the reason) for those with none done. Four queries
    whatever the number of recordings, sentences and anatomies (none without recordings)."""
    ids = [r.pk for r in recordings]
    if not ids:
        return {}, {}
    project_ids = {r.project_id for r in recordings}
    # The newest result per recording and status (DISTINCT ON): one done, one unusable, one failed at most.
    newest = (
        GazeLabelResult.objects.filter(recording_id__in=ids, run__project_id__in=project_ids)
        .select_related("run")
        .order_by("recording_id", "status", "-run_id")
        .distinct("recording_id", "status")
    )
    done: dict[int, CaseGazeLabels] = {}
    other: dict[int, GazeLabelResult] = {}
    for result in newest:
        if result.status == GazeResultStatus.DONE:
            done[result.recording_id] = CaseGazeLabels(result=result)
        elif result.recording_id not in other or result.run_id > other[result.recording_id].run_id:
            other[result.recording_id] = result
    notes = {
        rec: f"gaze run {r.run_id}: {r.status}" + (f" ({r.error})" if r.error else "")
        for rec, r in other.items()
        if rec not in done
    }
    if not done:
        return {}, notes
    pairs = Q()
    for labels in done.values():
        pairs |= Q(run_id=labels.result.run_id, recording_id=labels.result.recording_id)
    for row in GazeSentence.objects.filter(pairs).order_by("recording_id", "index"):
        done[row.recording_id].sentences.append(row)
    for row in GazeHeatmap.objects.filter(pairs).order_by("recording_id", "id"):
        done[row.recording_id].heatmaps.append(row)
    for row in GazeAnatomyRecord.objects.filter(pairs).order_by("recording_id", "-dwell_s", "anatomy"):
        done[row.recording_id].records.append(row)
    return done, notes


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
