"""The browser review screen: a Django page that loads the Vite bundle (frontend/src/review.ts) with the
project slug, the reviewer's role and the CSRF token; the bundle talks to the review API.

A deep link names one case: ``/review/<slug>/?task=<id>`` or ``?finding=<id>`` (README "Links to a case").
The page resolves it through the annotation selectors (the caller's visibility rules) to a task of this
project, or to the caller's reading of its finding, and hands the bundle its id; the bundle claims it when
the caller may work on it and opens it read-only otherwise, saying why. A bad, unknown, invisible or other
project's id gets one message, the same for all of them (nothing tells an invisible case from a missing one).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.middleware.csrf import get_token
from django.shortcuts import render

from annotation import selectors
from annotation.models import Stage
from core.models import Project, Role
from core.selectors import project_get_for_user, user_role

REVIEWERS = [Role.ANNOTATOR, Role.MANAGER, Role.RADIOLOGIST]
LOGIN_URL = "/review/login/"
LINK_PARAMS = ("task", "finding")
MAX_ID = 2**31 - 1  # PostgreSQL's integer: a larger id names nothing


class ReviewLogin(LoginView):
    """A plain login page for annotators and radiologists (the admin login admits staff only)."""

    template_name = "annotation/login.html"
    redirect_authenticated_user = True
    next_page = "/"


@dataclass
class Link:
    """What a deep link opens: ``task`` (a task of the project the caller sees), ``reading`` (the caller's
    reading of that task's finding, while it is with its readers), or ``error`` (said on the screen)."""

    task: int | None = None
    reading: int | None = None
    error: str = ""


def link_resolve(user, project: Project, params) -> Link | None:
    """The case ``?task=`` or ``?finding=`` names (``task`` wins when both are given); None without
    either."""
    name = next((p for p in LINK_PARAMS if p in params), None)
    if name is None:
        return None
    raw = params.get(name, "").strip()
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_ID:
        return Link(error=f"The link's {name} “{raw[:40]}” is not a {name} number: no case opened.")
    number = int(raw)
    missing = Link(error=f"No {name} {number} in this project that you can open: no case opened.")
    if name == "task":
        task = selectors.tasks_for_user(user).filter(project=project, pk=number).select_related("finding")
        found = task.first()
    else:
        finding = selectors.findings_for_user(user).filter(project=project, pk=number).first()
        if finding is None:
            return missing
        found = selectors.tasks_for_user(user).filter(finding=finding).first()
        if found is None:
            return Link(error=f"Finding {number} has no review task yet: no case opened.")
    if found is None:
        return missing
    if found.stage == Stage.READ:
        # With its readers (blinded): the caller's own reading opens, anyone else's case waits.
        reading = selectors.reading_of_finding(user, found.finding_id)
        if reading is None:
            return Link(
                error=f"Finding {found.finding_id} is being read: its readers work blinded, and its "
                "task opens after their consensus. No case opened."
            )
        return Link(task=found.pk, reading=reading.pk)
    return Link(task=found.pk)


@login_required(login_url=LOGIN_URL)
def review(request, slug: str):
    """The case screen of project ``slug``: radiologists review (stage ``review``), annotators and
    managers annotate (stage ``annotate``; managers also make review tasks from proposals); other members
    and outsiders get 404. ``?task=<id>`` or ``?finding=<id>`` opens that case (``link_resolve``)."""
    project = project_get_for_user(request.user, slug, roles=REVIEWERS)
    found = user_role(request.user, project)
    role = "radiologist" if found == Role.RADIOLOGIST else "annotator"
    link = link_resolve(request.user, project, request.GET)
    return render(
        request,
        "annotation/review.html",
        {
            "project": project,
            "role": role,
            "manager": found == Role.MANAGER,
            "csrf": get_token(request),
            "link": link,
        },
    )
