"""What every console page shares: login, the manager-only project read, errors to messages.

A page answers GET with its template; a form posts (with its CSRF token) to the page's own URL or to an
action URL and is answered with a redirect back to the page and a message. Errors reach the user as a
message that names the field (``field: reason``); a 404 or 403 of a selector or role check is answered as
such; anything else is logged with its traceback and shown as a short message with an incident id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from console.selectors import console_project_get
from console.tools import tools_for_project
from core.errors import ApplicationError, public_message

log = logging.getLogger("groundlab.console")
LOGIN_URL = "/review/login/"


def field_message(field: str | None, message: str) -> str:
    return f"{field}: {message}" if field and field not in ("non_field_errors", "__all__") else message


def serializer_messages(errors) -> list[str]:
    """A DRF serializer's ``errors`` (field → messages, nested for lists) as ``field: reason`` lines."""
    out = []
    for name, value in (errors or {}).items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, dict):  # a list field's per-item errors
                out += [field_message(name, str(v[0] if isinstance(v, list) else v)) for v in item.values()]
            else:
                out.append(field_message(name, str(item)))
    return out


def allow(*methods: str) -> Callable:
    """Answer 405 to other methods; ``allowed_methods`` tells the access matrix which to test."""

    def decorate(view: Callable) -> Callable:
        wrapped = require_http_methods([m.upper() for m in methods])(view)
        wrapped.allowed_methods = list(methods)
        return wrapped

    return decorate


def back_to(page: str, slug: str) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse(page, args=[slug]))


def console_page(page: str | None = None) -> Callable:
    """Decorate a view ``view(request, project, *args)`` of ``/console/<slug>/...``: log-in required, the
    project read for its managers (404 to everyone else), and a POST's errors as messages with a redirect
    to ``page`` (default: the same URL)."""

    def decorate(view: Callable) -> Callable:
        @login_required(login_url=LOGIN_URL)
        @wraps(view)
        def wrapper(request, slug: str, *args, **kwargs):
            project = console_project_get(request.user, slug)
            status = 500
            try:
                return view(request, project, *args, **kwargs)
            except ApplicationError as exc:
                if exc.status == 404:
                    raise Http404(exc.message) from exc
                if exc.status == 403:
                    raise PermissionDenied(exc.message) from exc
                status = exc.status
                messages.error(request, field_message(exc.field, exc.message))
            except (Http404, PermissionDenied):
                raise
            except Exception as exc:
                incident = uuid.uuid4().hex[:12]
                log.exception("console %s failed (incident %s)", request.path, incident)
                messages.error(request, f"{public_message(exc)} (incident {incident}; it has been logged)")
            if request.method != "POST":
                return render_page(request, project, "console/error.html", {}, status=status)
            return HttpResponseRedirect(reverse(page, args=[slug]) if page else request.path)

        return wrapper

    return decorate


def render_page(request, project, template: str, context: dict, *, tool: str = "", status: int = 200):
    """Render a project page with the project, its tools (the navigation) and the current tool."""
    return render(
        request,
        template,
        {"project": project, "tools": tools_for_project(project.slug), "current": tool, **context},
        status=status,
    )
