"""Findings to ground, their annotation versions, the review tasks that move them to accepted, and an
append-only history of every change.

A ``Finding`` is a report finding to be grounded on a scan (made from a finding proposal, or by hand).
Its ``Annotation``s are versions 1, 2, ... (mask, box or points), each with its author (a person) or its
source (a region proposal of a model or generator) and the version it was edited from; a finding's
``current_version`` is the newest. Saves name the version they edit: a save against an older one is a
conflict, never a silent overwrite. A ``ReviewTask`` carries a finding through the stages annotate →
review → (QA) → accepted / rejected, held by one person at a time under a lease that expires.
``HistoryEvent`` rows are only ever added.

With ``Project.readers_per_finding`` N > 1 the task starts in stage ``read``: N ``Reading``s, each one
reader's independent accept / reject and mask (their own annotation versions), then a consensus version
and ``Finding.agreement``, and the task goes to review (see ``annotation/readers.py``).
"""

from django.conf import settings
from django.db import models

from core.models import Project
from labeling.models import FindingProposal, RegionProposal
from studies.models import Report, Scan, Study


class FindingStatus(models.TextChoices):
    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Finding(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="findings")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="findings")
    scan = models.ForeignKey(Scan, null=True, blank=True, on_delete=models.SET_NULL, related_name="findings")
    report = models.ForeignKey(
        Report, null=True, blank=True, on_delete=models.SET_NULL, related_name="grounded_findings"
    )
    section = models.CharField(max_length=32, blank=True)
    start = models.PositiveIntegerField(null=True, blank=True)
    end = models.PositiveIntegerField(null=True, blank=True)
    text = models.TextField()
    code = models.CharField(max_length=64, blank=True)
    location = models.CharField(max_length=128, blank=True)
    laterality = models.CharField(max_length=16, blank=True)
    size_mm = models.FloatField(null=True, blank=True)  # the largest size the report states, in mm
    status = models.CharField(max_length=16, choices=FindingStatus.choices, default=FindingStatus.OPEN)
    source = models.CharField(max_length=16, default="proposal")  # proposal or manual
    finding_proposal = models.ForeignKey(
        FindingProposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="findings"
    )
    current_version = models.PositiveIntegerField(default=0)
    # Several readers: agreement of the readings and the consensus made of them ({} until then).
    agreement = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["study_id", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "finding_proposal"],
                condition=models.Q(finding_proposal__isnull=False),
                name="one_finding_per_proposal",
            )
        ]
        indexes = [models.Index(fields=["project", "status"]), models.Index(fields=["project", "code"])]

    def __str__(self) -> str:
        return f"{self.code or 'finding'}: {self.text[:40]}"


class FindingSpan(models.Model):
    """One mention of a finding in its report: ``report.<section>[start:end]`` is its sentence. A finding
    made from proposals has one span per finding proposal it merges (the same entity named in Findings
    and in Impression: ``annotation/findings.py``); its own ``section``/``start``/``end``/``text`` are its
    first span's."""

    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="spans")
    finding_proposal = models.ForeignKey(
        FindingProposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="finding_spans"
    )
    section = models.CharField(max_length=32)
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    text = models.TextField()

    class Meta:
        ordering = ["finding_id", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["finding_proposal"],
                condition=models.Q(finding_proposal__isnull=False),
                name="one_span_per_proposal",
            )
        ]

    def __str__(self) -> str:
        return f"{self.section}[{self.start}:{self.end}] of finding {self.finding_id}"


class AnnotationKind(models.TextChoices):
    MASK = "mask"
    BOX = "box"
    POINTS = "points"


class Annotation(models.Model):
    """One version of a finding's grounding. ``mask``: 1-bit PNG (2D, rows = Y) or gzipped uint8 NIfTI on
    the scan's grid (3D); ``box``: ``[xmin, ymin(, zmin), xmax, ymax(, zmax)]`` voxels, max exclusive;
    ``points``: ``[[x, y(, z)], ...]``."""

    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="annotations")
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=AnnotationKind.choices)
    mask = models.FileField(max_length=512, blank=True)
    box = models.JSONField(null=True, blank=True)
    points = models.JSONField(null=True, blank=True)
    voxels = models.PositiveBigIntegerField(default=0)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    region_proposal = models.ForeignKey(
        RegionProposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations"
    )
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["finding_id", "version"]
        constraints = [
            models.UniqueConstraint(fields=["finding", "version"], name="one_annotation_per_version")
        ]


class Stage(models.TextChoices):
    READ = "read"  # several readers: waiting for its readings (never in the annotate queue)
    ANNOTATE = "annotate"
    REVIEW = "review"
    QA = "qa"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


OPEN_STAGES = (Stage.READ, Stage.ANNOTATE, Stage.REVIEW, Stage.QA)


class ReviewTask(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="review_tasks")
    finding = models.OneToOneField(Finding, on_delete=models.CASCADE, related_name="task")
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.ANNOTATE)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="review_tasks",
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    priority = models.FloatField(default=0.0)  # higher first (e.g. an active-learning score)
    annotated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The radiologist who approved it in review: QA goes to another one when the project has one.
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decision = models.CharField(max_length=16, blank=True)  # the annotator's: accept or reject the finding
    returned_comment = models.TextField(blank=True)  # the reviewer's, shown to the annotator
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "id"]
        indexes = [models.Index(fields=["project", "stage", "-priority", "id"])]


class ReadingStatus(models.TextChoices):
    OPEN = "open"
    SUBMITTED = "submitted"


class Reading(models.Model):
    """One of a finding's N independent readings (``Project.readers_per_finding`` > 1): its reader (none
    until claimed; held under a lease like a task), their decision (accept: the finding is there, reject:
    it is not) and the version they submitted (an ``Annotation`` of the finding authored by them, or the
    proposal's version 1 when they accepted it as it was). A reader holds at most one reading per
    finding."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="readings")
    index = models.PositiveSmallIntegerField()  # 1..N
    reader = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="readings"
    )
    status = models.CharField(max_length=16, choices=ReadingStatus.choices, default=ReadingStatus.OPEN)
    decision = models.CharField(max_length=16, blank=True)  # accept or reject, once submitted
    annotation = models.ForeignKey(
        Annotation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["finding_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["finding", "index"], name="one_reading_per_index"),
            models.UniqueConstraint(
                fields=["finding", "reader"],
                condition=models.Q(reader__isnull=False),
                name="one_reading_per_reader",
            ),
        ]
        indexes = [models.Index(fields=["project", "status"]), models.Index(fields=["reader", "status"])]

    def __str__(self) -> str:
        return f"reading {self.index} of finding {self.finding_id} ({self.status})"


class HistoryEvent(models.Model):
    """An append-only record: who did what, when, to which finding or task, with before and after."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    finding = models.ForeignKey(
        Finding, null=True, blank=True, on_delete=models.SET_NULL, related_name="history"
    )
    task = models.ForeignKey(ReviewTask, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=32)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    comment = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["finding", "at"]), models.Index(fields=["user", "at"])]
