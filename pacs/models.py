"""DICOMweb sources of a project, their imports, the link of imported series to the source's own UIDs, and
store-back of accepted masks as DICOM SEG.

Only managers see any of it (``pacs.selectors``). ``PacsSeriesLink`` holds original (identifying) UIDs and
exists only for projects that keep the identity map (``Project.keep_identity_map``), as ``PatientIdentity``
does: the store-back needs them, since the PACS knows only the original UIDs.
"""

from django.conf import settings
from django.db import models

from core.models import Job, Project


class AuthKind(models.TextChoices):
    NONE = "none"
    BASIC = "basic"
    BEARER = "bearer"


class PacsSource(models.Model):
    """A DICOMweb service (QIDO-RS, WADO-RS, STOW-RS under one base URL) a manager registered.

    ``base_url`` is configuration entered by a manager of this project (http or https only), never a URL
    taken from a request or an uploaded file; see docs/pacs.md on SSRF."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pacs_sources")
    name = models.SlugField(max_length=64)
    base_url = models.URLField(max_length=500)
    auth = models.CharField(max_length=8, choices=AuthKind.choices, default=AuthKind.NONE)
    # Fernet token of {"username", "password"} or {"token"} (pacs.crypto); never returned by the API.
    credentials = models.TextField(blank=True)
    verify_tls = models.BooleanField(default=True)
    # Send accepted findings' masks back as DICOM SEG (needs the project's identity map).
    store_back = models.BooleanField(default=False)
    checked_at = models.DateTimeField(null=True, blank=True)
    check_ok = models.BooleanField(null=True)  # the last check's outcome (None: never checked)
    check_message = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="pacs_source_name_per_project")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"


class PacsImport(models.Model):
    """One import job: the studies picked (original StudyInstanceUIDs, managers only) and what became of
    each (``outcome``: study UID -> ``{"status", "stored", "duplicates", "failed": [...]}``)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    source = models.ForeignKey(PacsSource, on_delete=models.CASCADE, related_name="imports")
    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="pacs_import")
    study_uids = models.JSONField(default=list)
    modality = models.CharField(max_length=16, blank=True)  # only series of this modality
    outcome = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]


class PacsSeriesLink(models.Model):
    """A scan imported from a source, with the source's original study and series UIDs (identity map)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    source = models.ForeignKey(PacsSource, on_delete=models.CASCADE, related_name="series_links")
    scan = models.OneToOneField("studies.Scan", on_delete=models.CASCADE, related_name="pacs_link")
    study_uid = models.CharField(max_length=64)  # original
    series_uid = models.CharField(max_length=64)  # original
    created_at = models.DateTimeField(auto_now_add=True)


class StoreBackStatus(models.TextChoices):
    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"


class PacsStoreBack(models.Model):
    """One accepted finding's mask version sent to a source as a DICOM SEG (STOW-RS): outcome, tries."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    source = models.ForeignKey(PacsSource, on_delete=models.CASCADE, related_name="store_backs")
    finding = models.ForeignKey("annotation.Finding", on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=8, choices=StoreBackStatus.choices, default=StoreBackStatus.PENDING)
    tries = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True)
    seg_series_uid = models.CharField(max_length=64, blank=True)
    seg_sop_uid = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "finding", "version"], name="one_store_back_per_version"
            )
        ]
        indexes = [models.Index(fields=["project", "status"])]
