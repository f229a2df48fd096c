"""The managers' PACS page: sources, a QIDO-RS search, picking studies to import, the import's progress
and the store-back sends. A Django page with one plain script (``pacs/static/pacs/pacs.js``) that talks to
the PACS API only; everyone but the project's managers gets 404."""

from django.contrib.auth.decorators import login_required
from django.middleware.csrf import get_token
from django.shortcuts import render

from pacs.selectors import project_for_pacs_manager

LOGIN_URL = "/review/login/"


@login_required(login_url=LOGIN_URL)
def pacs_page(request, slug: str):
    project = project_for_pacs_manager(request.user, slug)
    return render(request, "pacs/pacs.html", {"project": project, "csrf": get_token(request)})
