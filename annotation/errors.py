"""The review app's errors: a request that cannot be done (400), a lease not held (409), a stale save (409
with both versions)."""

from __future__ import annotations

from annotation.models import Annotation
from core.errors import FieldError


class ReviewError(FieldError):
    """A request that cannot be done: ``(field, reason)``; ``status`` the HTTP status (400)."""


class LeaseError(ReviewError):
    status = 409


class Conflict(ReviewError):
    """The save names a version older than the finding's current one."""

    status = 409

    def __init__(self, current: Annotation | None, yours: int):
        self.current, self.yours = current, yours
        number = current.version if current else 0
        super().__init__("base_version", f"you edited version {yours}, but version {number} was saved since")

    def body(self) -> dict:
        """Both versions: the current one (as the case payload lists versions) and the one you edited."""
        from annotation.api.serializers import AnnotationOut  # the one shape of a version on the wire

        return {**super().body(), "current": AnnotationOut(self.current).data if self.current else None,
                "yours": self.yours}  # fmt: skip

    def __reduce__(self):
        return (type(self), (self.current, self.yours))
