"""The project list and a project's overview."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from console.selectors import accepted_findings, console_projects, project_overview
from console.views.base import LOGIN_URL, allow, console_page, render_page
from core.models import Role


@allow("get")
@login_required(login_url=LOGIN_URL)
def project_list(request):
    """The caller's projects with their role; those they manage link to their console pages."""
    projects = list(console_projects(request.user))
    for p in projects:
        p.manages = request.user.is_superuser or p.my_role == Role.MANAGER
        p.role_label = "manager (superuser)" if request.user.is_superuser and not p.my_role else p.my_role
    return render(request, "console/projects.html", {"projects": projects})


@allow("get")
@console_page()
def project_overview_page(request, project):
    """Counts, unfinished jobs, links into the review screen per queue, the newest accepted findings (each
    linked to its read-only view, ``?finding=<id>``) and the project's tools."""
    overview = project_overview(request.user, project)
    review = reverse("review", args=[project.slug])
    return render_page(
        request,
        project,
        "console/overview.html",
        {"overview": overview, "review_url": review, "accepted": accepted_findings(request.user, project)},
    )
