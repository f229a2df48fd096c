"""Projects, memberships with roles, and the record of every background job."""

import secrets

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models


def _project_secret() -> str:
    return secrets.token_hex(32)


class Project(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # Label schema of report findings: chexpert (chest X-ray), rexgroundingct (chest CT), petct.
    label_schema = models.CharField(
        max_length=16,
        choices=[("chexpert", "CheXpert (chest X-ray)"), ("rexgroundingct", "ReXGroundingCT (chest CT)"),
                 ("petct", "PET/CT SUVmax seeds")],
        default="chexpert",
    )  # fmt: skip
    # Keep the original-to-pseudonym map (patient id and name); readable by managers only.
    keep_identity_map = models.BooleanField(default=False)
    # Key for pseudonyms, date shifts and UID remapping; never shown through the API.
    deid_secret = models.CharField(max_length=64, default=_project_secret, editable=False)
    # Review: the share of reviewed findings a radiologist QAs again (sampled per annotator).
    qa_sample_rate = models.FloatField(default=0.1)
    # Several readers: N independent readings per finding (1 = one annotator, as before), then a consensus
    # (majority vote or STAPLE of the readers' masks) a radiologist confirms. See annotation/readers.py.
    readers_per_finding = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    consensus_method = models.CharField(
        max_length=16, choices=[("majority", "Majority vote"), ("staple", "STAPLE")], default="majority"
    )
    # The learning loop: a finished label run makes its findings and review tasks at once (with their
    # starting masks from the region proposals, annotation/proposals.py) ...
    findings_after_label_run = models.BooleanField(default=False)
    # ... and this many newly accepted findings start a training run (0: never by itself).
    train_after_accepted = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    MANAGER = "manager"
    ANNOTATOR = "annotator"
    RADIOLOGIST = "radiologist"
    RESEARCHER = "researcher"


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class JobStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Job(models.Model):
    """A background job. Its state lives here (not in Celery's result store).

    ``counts`` holds named counters (``stored``, ``skipped``, ``errors`` ...); ``errors`` is a list of
    ``{"file": ..., "reason": ...}``; ``result`` is the job's summary once it has finished.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=500, blank=True)
    params = models.JSONField(default=dict, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # While running: renewed by the process that runs it; a lapsed lease means that process died.
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["project", "kind", "status"]),
            models.Index(fields=["status", "lease_until"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"
