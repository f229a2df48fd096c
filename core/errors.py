"""The one application error, and its mapping to HTTP in one DRF exception handler.

Services and selectors raise ``ApplicationError`` (or a subclass) with a message a user can act on, the
field (or file) it concerns and the HTTP status it means; views do not catch it. ``exception_handler``
turns it into ``{"detail": message, "field": field, field: message}``. Anything else that escapes a view
is logged with its traceback and answered with a plain 500 message: tracebacks and server paths reach the
log, never a user.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

log = logging.getLogger("groundlab.errors")


class ApplicationError(Exception):
    """An error a user caused or can fix: ``message`` for them, the ``field`` it is about, the HTTP
    ``status`` it means (400 bad input, 403 role, 404 not visible, 409 conflict, 413 too large, 503 a
    service down). ``extra`` goes into the response body as is (for example a 409's both versions)."""

    status: int = 400

    def __init__(
        self, message: str, *, field: str | None = None, status: int | None = None, extra: dict | None = None
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        if status is not None:
            self.status = status
        self.extra = extra or {}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def body(self) -> dict[str, Any]:
        """The response body: ``detail`` (the message), ``field`` and ``{field: message}`` (the shape DRF
        clients read field errors in), plus ``extra``."""
        body: dict[str, Any] = {"detail": self.message}
        if self.field:
            body["field"] = self.field
            body[self.field] = self.message
        body.update(self.extra)
        return body


class FieldError(ApplicationError, ValueError):
    """An application error built as ``(field, reason)``, the shape the apps' errors share; ``reason`` is
    the message. (Also a ``ValueError``, as these errors were before: callers that catch bad values still
    catch them.)"""

    def __init__(self, field: str, reason: str, *, status: int | None = None, extra: dict | None = None):
        super().__init__(reason, field=field, status=status, extra=extra)
        self.reason = reason

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.field, self.reason))


# Absolute paths in an error's text (the server's layout: /srv/..., /tmp/..., C:\...) are not for users.
_PATH = re.compile(r"(?:[A-Za-z]:\\|/)(?:[\w.@+-]+[/\\])+[\w.@+-]*")


def public_message(exc: BaseException) -> str:
    """What users read of an error a job or a run stored: an application error's own message, else the
    error's kind and first line with server paths cut out (the traceback goes to the log)."""
    if isinstance(exc, ApplicationError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    first = _PATH.sub("<path>", first)[:300]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class NotFound(ApplicationError):
    status = 404


class Forbidden(ApplicationError):
    status = 403


class Conflict(ApplicationError):
    status = 409


class TooLarge(ApplicationError):
    status = 413


class ServiceUnavailable(ApplicationError):
    status = 503


def exception_handler(exc: Exception, context: dict):
    """REST_FRAMEWORK's EXCEPTION_HANDLER: application errors by their status, DRF's own errors as DRF
    answers them, anything else a logged 500 with an incident id and no detail. (DRF is imported here:
    the error classes above are raised by modules that run without it, such as ML workers.)"""
    from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
    from django.http import Http404
    from rest_framework import exceptions, status
    from rest_framework.response import Response
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, ApplicationError):
        return Response(exc.body(), status=exc.status)
    if isinstance(exc, (exceptions.APIException, Http404, DjangoPermissionDenied)):
        return drf_exception_handler(exc, context)
    incident = uuid.uuid4().hex[:12]
    view = context.get("view")
    log.error("unhandled error %s in %s", incident, type(view).__name__ if view else "?", exc_info=exc)
    return Response(
        {"detail": f"Internal error (incident {incident}); it has been logged."},
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
