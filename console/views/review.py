"""Review work: findings and review tasks from the newest label run's proposals, and the queue per
person."""

from django.contrib import messages
from django.urls import reverse

from annotation import services as annotation_services
from console.selectors import proposal_state, queue_status
from console.views.base import allow, back_to, console_page, render_page
from core.models import Role
from core.selectors import role_require


@allow("get", "post")
@console_page("console-tasks")
def tasks_page(request, project):
    """GET: the newest finished label run, its present proposals and how many already have a finding.
    POST: a finding and a review task for each present proposal that has none, each starting from the
    region proposal that fits it (``annotation.proposals``), as ``findings_from_proposals`` does."""
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
        "waiting": max(state.present - state.with_finding, 0),
        "review_url": reverse("review", args=[project.slug]),
    }
    return render_page(request, project, "console/tasks.html", context, tool="tasks")


@allow("get")
@console_page()
def queue_page(request, project):
    """Per open stage: free and held tasks; per member: open work in their stages, held now, done."""
    context = {
        "queue": queue_status(request.user, project),
        "review_url": reverse("review", args=[project.slug]),
    }
    return render_page(request, project, "console/queue.html", context, tool="queue")
