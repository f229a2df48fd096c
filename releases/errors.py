"""The releases app's error: what cannot be done, and which field (or case and file) was wrong."""

from core.errors import FieldError


class ReleaseError(FieldError):
    """A release that cannot be made or exported: ``(field, reason)``, a 400."""
