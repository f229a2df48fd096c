"""The browser review screen: a Django page that loads the Vite bundle (frontend/src/review.ts) with the
project slug, the reviewer's role and the CSRF token; the bundle talks to the review API."""

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.middleware.csrf import get_token
from django.shortcuts import render

from core.models import Role
from core.selectors import project_get_for_user, user_role

REVIEWERS = [Role.ANNOTATOR, Role.MANAGER, Role.RADIOLOGIST]
LOGIN_URL = "/review/login/"


class ReviewLogin(LoginView):
    """A plain login page for annotators and radiologists (the admin login admits staff only)."""

    template_name = "annotation/login.html"
    redirect_authenticated_user = True
    next_page = "/"


@login_required(login_url=LOGIN_URL)
def review(request, slug: str):
    """The case screen of project ``slug``: radiologists review (stage ``review``), annotators and
    managers annotate (stage ``annotate``; managers also make review tasks from proposals); other members
    and outsiders get 404."""
    project = project_get_for_user(request.user, slug, roles=REVIEWERS)
    found = user_role(request.user, project)
    role = "radiologist" if found == Role.RADIOLOGIST else "annotator"
    return render(
        request,
        "annotation/review.html",
        {"project": project, "role": role, "manager": found == Role.MANAGER, "csrf": get_token(request)},
    )
