"""Datasets and their releases: immutable, versioned freezes of what the experts accepted.

A ``Dataset`` names a set of projects; each ``DatasetRelease`` (version 1, 2, ...) freezes a selection of
their labels (statuses, sources) into a manifest: every file with its sha256, every label with its
provenance. ``ReleaseCase`` (one scan, its patient and split) and ``ReleaseLabel`` rows mirror the
manifest for diffs and split stability; nothing of a frozen release is changed afterwards. A
``ReleaseExport`` writes a release in one format (``releases/formats/``) to storage, as a job.
"""

from django.conf import settings
from django.db import models

from core.models import Job, Project
from studies.models import Scan


class Dataset(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    licence = models.CharField(max_length=200, blank=True)
    citation = models.TextField(blank=True)
    projects = models.ManyToManyField(Project, related_name="datasets")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ReleaseStatus(models.TextChoices):
    BUILDING = "building"
    FROZEN = "frozen"
    FAILED = "failed"


class DatasetRelease(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="releases")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=ReleaseStatus.choices, default=ReleaseStatus.BUILDING)
    selection = models.JSONField(default=dict)  # projects, statuses, sources, seed, ratios
    notes = models.TextField(blank=True)
    manifest = models.FileField(max_length=512, blank=True)
    manifest_sha256 = models.CharField(max_length=64, blank=True)
    card = models.TextField(blank=True)  # the dataset card (README.md of every export)
    counts = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # the dataset's class table as of this version: {"<label value>": class name}, the previous version's
    # extended by the classes new in this one (``releases.freeze``); never renumbered
    classes = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    frozen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset_id", "-version"]
        constraints = [models.UniqueConstraint(fields=["dataset", "version"], name="one_release_per_version")]

    def __str__(self) -> str:
        return f"{self.dataset.slug} v{self.version}"


class ReleaseCase(models.Model):
    release = models.ForeignKey(DatasetRelease, on_delete=models.CASCADE, related_name="cases")
    case_id = models.CharField(max_length=128)
    scan = models.ForeignKey(Scan, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    patient = models.CharField(max_length=64)  # the patient's pseudonym
    split = models.CharField(max_length=8)
    image_key = models.CharField(max_length=512)
    image_sha256 = models.CharField(max_length=64)
    categories = models.JSONField(default=list, blank=True)
    entry = models.JSONField(default=dict, blank=True)  # the case's manifest entry, as frozen

    class Meta:
        ordering = ["release_id", "case_id"]
        constraints = [models.UniqueConstraint(fields=["release", "case_id"], name="one_case_id_per_release")]


class ReleaseLabel(models.Model):
    release = models.ForeignKey(DatasetRelease, on_delete=models.CASCADE, related_name="labels")
    case = models.ForeignKey(ReleaseCase, on_delete=models.CASCADE, related_name="labels")
    label_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=8)  # mask, box, none
    source = models.CharField(max_length=8)  # human, weak, model
    text = models.TextField()
    code = models.CharField(max_length=64, blank=True)
    category = models.CharField(max_length=8, blank=True)
    assertion = models.CharField(max_length=16, blank=True)
    mask_key = models.CharField(max_length=512, blank=True)
    mask_sha256 = models.CharField(max_length=64, blank=True)
    digest = models.CharField(max_length=64)  # of everything above but the ids: "changed" in a diff

    class Meta:
        ordering = ["case_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["release", "case", "label_id"], name="one_label_id_per_case")
        ]


class ReleaseExport(models.Model):
    release = models.ForeignKey(DatasetRelease, on_delete=models.CASCADE, related_name="exports")
    format = models.CharField(max_length=32)
    status = models.CharField(max_length=16, default="pending")  # pending, running, succeeded, failed
    prefix = models.CharField(max_length=512, blank=True)  # storage folder of the files
    file_count = models.PositiveIntegerField(default=0)  # listed with sizes and sha256s in SHA256SUMS
    bytes = models.PositiveBigIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
