"""Reads of the console's pages. Each goes through the selector of the app that owns the rows (membership
and role rules live there); this module only narrows them to one project and counts. The console is the
manager's: ``console_project_get`` admits managers of the project (superusers too) and answers 404 to
everyone else, as role-restricted reads do (``core.selectors.project_get_for_user``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from annotation.models import OPEN_STAGES, FindingStatus, Stage
from annotation.selectors import findings_for_user, history_for_user, tasks_for_user
from core.models import Job, JobStatus, Membership, Project, Role
from core.selectors import jobs_for_user, project_get_for_user, projects_for_user
from labeling.selectors import (
    gaze_runs_for_user,
    label_runs_for_user,
    proposals_for_user,
    region_proposals_for_user,
)
from ml.models import ModelStatus
from ml.selectors import model_versions_for_user
from releases.models import Dataset
from releases.selectors import datasets_for_user
from studies.selectors import (
    gaze_recordings_for_user,
    patients_for_user,
    reports_for_user,
    scans_for_user,
    studies_for_user,
)

MANAGERS = (Role.MANAGER,)
UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)


def console_project_get(user, slug: str) -> Project:
    """The project ``slug`` for its managers; 404 for every other caller."""
    return project_get_for_user(user, slug, roles=MANAGERS)


def console_projects(user) -> QuerySet[Project]:
    """The caller's projects with ``role`` (theirs; superusers: manager) and counts, in one query."""
    role = Membership.objects.filter(project=OuterRef("pk"), user=user.pk).values("role")[:1]
    return (
        projects_for_user(user)
        .annotate(
            my_role=Subquery(role),
            n_scans=Count("scans", distinct=True),
            n_reports=Count("reports", distinct=True),
            n_findings=Count("findings", distinct=True),
        )
        .order_by("slug")
    )


@dataclass
class Overview:
    counts: dict[str, int]
    findings: dict[str, int]
    stages: dict[str, int]
    running: list[Job] = field(default_factory=list)


def project_overview(user, project: Project) -> Overview:
    """Counts of the project's data, labels and review work, and its unfinished jobs."""

    def n(qs) -> int:
        return qs.filter(project=project).count()

    counts = {
        "patients": n(patients_for_user(user)),
        "studies": n(studies_for_user(user)),
        "scans": n(scans_for_user(user)),
        "reports": n(reports_for_user(user)),
        "gaze recordings": n(gaze_recordings_for_user(user)),
        "label runs": n(label_runs_for_user(user)),
        "present finding proposals": n(proposals_for_user(user).filter(assertion="present")),
    }
    by_status = dict(
        findings_for_user(user).filter(project=project).values_list("status").annotate(n=Count("id"))
    )
    findings = {s: by_status.get(s, 0) for s in FindingStatus.values}
    by_stage = dict(tasks_for_user(user).filter(project=project).values_list("stage").annotate(n=Count("id")))
    stages = {s: by_stage.get(s, 0) for s in Stage.values}
    running = list(jobs_for_user(user).filter(project=project, status__in=UNFINISHED).order_by("-id")[:10])
    return Overview(counts=counts, findings=findings, stages=stages, running=running)


def project_members(user, project: Project) -> QuerySet[Membership]:
    """The project's memberships with their users (the caller reached the project through
    ``console_project_get``)."""
    console_project_get(user, project.slug)
    return Membership.objects.filter(project=project).select_related("user").order_by("user__username")


def project_jobs(user, project: Project, *, kinds: tuple[str, ...] = ()) -> QuerySet[Job]:
    qs = jobs_for_user(user).filter(project=project).select_related("created_by")
    return qs.filter(kind__in=kinds) if kinds else qs


def project_label_runs(user, project: Project):
    return label_runs_for_user(user).filter(project=project).select_related("job").order_by("-id")


def project_gaze_runs(user, project: Project):
    return gaze_runs_for_user(user).filter(project=project).select_related("job").order_by("-id")


def project_gaze_count(user, project: Project) -> int:
    return gaze_recordings_for_user(user).filter(project=project).count()


def project_report_count(user, project: Project) -> int:
    return reports_for_user(user).filter(project=project).count()


def project_scans(user, project: Project, *, limit: int = 200) -> list:
    """The project's newest scans, each with ``n_proposals``: its region proposals (two queries)."""
    scans = list(scans_for_user(user).filter(project=project).order_by("-id")[:limit])
    counts = dict(
        region_proposals_for_user(user)
        .filter(project=project, scan_id__in=[s.pk for s in scans])
        .values_list("scan_id")
        .annotate(n=Count("id"))
    )
    for scan in scans:
        scan.n_proposals = counts.get(scan.pk, 0)
    return scans


def project_ready_models(user, project: Project) -> list[str]:
    """``model:<name>`` of every model of the project with a ready version."""
    names = (
        model_versions_for_user(user)
        .filter(project=project, status=ModelStatus.READY)
        .values_list("name", flat=True)
        .distinct()
    )
    return [f"model:{name}" for name in sorted(names)]


@dataclass
class ProposalState:
    newest_run: object | None
    present: int
    with_finding: int


def proposal_state(user, project: Project) -> ProposalState:
    """The newest finished label run and how many of its present proposals already have a finding."""
    run = (
        label_runs_for_user(user).filter(project=project, status=JobStatus.SUCCEEDED).order_by("-id").first()
    )
    if run is None:
        return ProposalState(None, 0, 0)
    present = proposals_for_user(user).filter(run=run, assertion="present")
    counted = present.aggregate(n=Count("id", distinct=True), made=Count("findings", distinct=True))
    return ProposalState(run, counted["n"], counted["made"])


@dataclass
class PersonQueue:
    username: str
    role: str
    open: int  # free tasks in the stages this person works on
    held: int  # tasks held now (a lease running, or given by a manager and not opened yet)
    submitted: int  # annotations submitted (accept or reject) and readings submitted
    reviewed: int  # reviews approved or returned


@dataclass
class QueueStatus:
    stages: list[dict]  # per open stage: free, held
    people: list[PersonQueue]


# The stages each role takes work from (annotation.api: annotators and managers annotate; radiologists
# review and QA).
ROLE_STAGES = {
    Role.MANAGER: (Stage.ANNOTATE,),
    Role.ANNOTATOR: (Stage.ANNOTATE,),
    Role.RADIOLOGIST: (Stage.REVIEW, Stage.QA),
}
DONE_ACTIONS = {"submitted": "submitted", "reading_submitted": "submitted", "approved": "reviewed",
                "returned": "reviewed"}  # fmt: skip


def queue_status(user, project: Project) -> QueueStatus:
    """Open, held and done review work per stage and per member: four queries whatever the queue's size.
    Tasks and history come through the annotation selectors, so blinded readings stay blinded: a reader's
    submitted reading counts once the finding's consensus is made (tasks waiting for readers show in the
    stage ``read``)."""
    now = timezone.now()
    # Held as annotation.services.task_next sees it: an assignee whose lease runs, or who was given the
    # task by a manager and has not opened it yet (no lease); everything else is free to take.
    held_q = Q(assignee__isnull=False) & (Q(lease_expires_at__gt=now) | Q(lease_expires_at__isnull=True))
    tasks = tasks_for_user(user).filter(project=project, stage__in=OPEN_STAGES)
    per_stage = {
        row["stage"]: row
        for row in tasks.values("stage").annotate(held=Count("id", filter=held_q), all=Count("id"))
    }
    stages = [
        {"stage": s, "free": per_stage.get(s, {}).get("all", 0) - per_stage.get(s, {}).get("held", 0),
         "held": per_stage.get(s, {}).get("held", 0)}
        for s in OPEN_STAGES
    ]  # fmt: skip
    held_tasks = dict(tasks.filter(held_q).values_list("assignee").annotate(n=Count("id")))
    done: dict[int, dict[str, int]] = {}
    events = (
        history_for_user(user)
        .filter(project=project, action__in=list(DONE_ACTIONS), user__isnull=False)
        .values_list("user", "action")
        .annotate(n=Count("id"))
    )
    for uid, action, count in events:
        kind = DONE_ACTIONS[action]
        done.setdefault(uid, {}).setdefault(kind, 0)
        done[uid][kind] += count
    free = {s["stage"]: s["free"] for s in stages}
    people = []
    for m in Membership.objects.filter(project=project).select_related("user").order_by("user__username"):
        if m.role == Role.RESEARCHER:
            continue
        open_work = sum(free.get(s, 0) for s in ROLE_STAGES.get(m.role, ()))
        people.append(
            PersonQueue(
                username=m.user.username,
                role=m.role,
                open=open_work,
                held=held_tasks.get(m.user_id, 0),
                submitted=done.get(m.user_id, {}).get("submitted", 0),
                reviewed=done.get(m.user_id, {}).get("reviewed", 0),
            )
        )
    return QueueStatus(stages=stages, people=people)


def open_tasks(user, project: Project, *, limit: int = 50) -> list:
    """The queue's open tasks in the order the queue hands them out (priority, then age), with their
    finding and holder; ``held`` says whether a lease is running."""
    now = timezone.now()
    tasks = list(
        tasks_for_user(user)
        .filter(project=project, stage__in=OPEN_STAGES)
        .select_related("finding", "assignee")
        .order_by("-priority", "id")[:limit]
    )
    for task in tasks:
        task.held = bool(task.assignee_id and task.lease_expires_at and task.lease_expires_at > now)
        task.expired = bool(task.assignee_id and task.lease_expires_at and task.lease_expires_at <= now)
    return tasks


def project_tasks(user, project: Project, *, limit: int = 50) -> list:
    """The project's review tasks, newest first (every stage), with their finding and holder, for links
    into the review screen (``held``: a lease is running)."""
    now = timezone.now()
    tasks = list(
        tasks_for_user(user)
        .filter(project=project)
        .select_related("finding", "assignee")
        .order_by("-id")[:limit]
    )
    for task in tasks:
        task.held = bool(task.assignee_id and task.lease_expires_at and task.lease_expires_at > now)
    return tasks


def accepted_findings(user, project: Project, *, limit: int = 20) -> list:
    """The project's accepted findings, the newest first, for their read-only view in the review
    screen."""
    return list(
        findings_for_user(user)
        .filter(project=project, status=FindingStatus.ACCEPTED)
        .select_related("scan")
        .order_by("-id")[:limit]
    )


def assignable_members(user, project: Project) -> list[Membership]:
    """Members a manager may give a task to: annotators, managers and radiologists (as the API's assign)."""
    return [m for m in project_members(user, project) if m.role != Role.RESEARCHER]


def project_datasets(user, project: Project) -> list[Dataset]:
    """The datasets drawing from ``project`` the caller may read, with their releases and exports."""
    return list(
        datasets_for_user(user)
        .filter(projects=project)
        .prefetch_related("releases__job", "releases__exports__job", "projects")
        .order_by("slug")
    )
