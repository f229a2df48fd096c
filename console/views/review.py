"""Review work: findings and review tasks from the newest label run's proposals, and the queue per
person."""

from django.contrib import messages
from django.urls import reverse

from annotation import services as annotation_services
from annotation.selectors import task_get_for_user
from console.selectors import (
    assignable_members,
    open_tasks,
    project_tasks,
    proposal_state,
    queue_status,
)
from console.views.base import allow, back_to, console_page, render_page
from core.errors import FieldError
from core.models import Role
from core.selectors import role_require, user_has_role

REVIEWERS = [Role.MANAGER, Role.ANNOTATOR, Role.RADIOLOGIST]


@allow("get", "post")
@console_page("console-tasks")
def tasks_page(request, project):
    """GET: the newest finished label run, its present proposals and how many already have a finding;
    the project's newest review tasks, each linked into the review screen (``?task=<id>``). POST: a
    finding and a review task for each present proposal that has none, each starting from the region
    proposal that fits it (``annotation.proposals``), as ``findings_from_proposals`` does."""
    if request.method == "POST":
        role_require(request.user, project, [Role.MANAGER], "managers")
        made = annotation_services.findings_made(project=project, user=request.user)
        messages.success(
            request,
            f"{made.created} finding{'s' if made.created != 1 else ''} with review tasks created "
            f"({made.started} with a start from a region proposal); {made.attached} waiting finding"
            f"{'s' if made.attached != 1 else ''} given a start.",
        )
        return back_to("console-tasks", project.slug)
    state = proposal_state(request.user, project)
    context = {
        "state": state,
        "tasks": project_tasks(request.user, project),
        "waiting": max(state.present - state.with_finding, 0),
        "review_url": reverse("review", args=[project.slug]),
    }
    return render_page(request, project, "console/tasks.html", context, tool="tasks")


@allow("get")
@console_page()
def queue_page(request, project):
    """Per open stage: free and held tasks; per member: open work in their stages, held now, done; the
    open tasks in queue order, each linked into the review screen and with a form to give it to someone."""
    context = {
        "queue": queue_status(request.user, project),
        "tasks": open_tasks(request.user, project),
        "assignable": assignable_members(request.user, project),
        "review_url": reverse("review", args=[project.slug]),
    }
    return render_page(request, project, "console/queue.html", context, tool="queue")


@allow("post")
@console_page("console-queue")
def task_assign_view(request, project, task_id: int):
    """Give an open task to ``user`` (an annotator, manager or radiologist of the project), as the API's
    ``/api/tasks/<id>/assign/``: their lease starts when they open it."""
    task = task_get_for_user(request.user, task_id)
    if task.project_id != project.pk:
        raise FieldError("task", f"task {task_id} is not in {project.slug}")
    role_require(request.user, project, [Role.MANAGER], "managers")
    name = request.POST.get("user", "")
    assignee = next(
        (m.user for m in assignable_members(request.user, project) if m.user.username == name), None
    )
    if assignee is None or not user_has_role(assignee, project, REVIEWERS):
        raise FieldError("user", f"{name!r} is not an annotator or radiologist of this project")
    annotation_services.task_assign(task_id=task.pk, manager=request.user, assignee=assignee)
    messages.success(request, f"Task {task.pk} is now {assignee.username}'s.")
    return back_to("console-queue", project.slug)
