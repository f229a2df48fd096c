"""The releases app's error: what cannot be done, and which field (or case and file) was wrong."""


class ReleaseError(ValueError):
    """A release that cannot be made or exported; ``field`` names what was wrong."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")
