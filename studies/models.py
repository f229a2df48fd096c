"""De-identified patients, studies, scans, reports and eye-gaze recordings.

Nothing here holds patient identity except ``PatientIdentity``, which exists only for projects that
keep the original-to-pseudonym map (``Project.keep_identity_map``) and is readable by managers only.
"""

from django.db import models

from core.models import Project


class Patient(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="patients")
    pseudonym = models.CharField(max_length=32)
    # HMAC of the original patient id under the project's key: finds the patient again, reveals nothing.
    identity_hash = models.CharField(max_length=64)
    # Days added to every date of the patient. A secret like the identity map (it turns shifted dates back
    # into real ones): read through the identity map by managers of projects that keep one, nowhere else.
    date_shift_days = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pseudonym"]
        constraints = [
            models.UniqueConstraint(fields=["project", "identity_hash"], name="patient_identity_per_project"),
            models.UniqueConstraint(fields=["project", "pseudonym"], name="patient_pseudonym_per_project"),
        ]

    def __str__(self) -> str:
        return self.pseudonym


class PatientIdentity(models.Model):
    """Original identifiers of a pseudonymised patient (kept only where the project says so)."""

    patient = models.OneToOneField(Patient, on_delete=models.CASCADE, related_name="identity")
    original_id = models.CharField(max_length=128)
    original_name = models.CharField(max_length=256, blank=True)
    original_birth_date = models.CharField(max_length=16, blank=True)

    class Meta:
        verbose_name_plural = "patient identities"


class Study(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="studies")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="studies")
    study_uid = models.CharField(max_length=64)  # remapped, never the original
    accession_hash = models.CharField(max_length=64, blank=True)  # HMAC of the accession number
    external_id = models.CharField(max_length=256, blank=True)  # for non-DICOM sources
    study_date = models.DateField(null=True, blank=True)  # shifted by the patient's date shift
    modality = models.CharField(max_length=16, blank=True)
    description = models.CharField(max_length=256, blank=True)
    # Keyed hashes of the identifier tokens in the DICOM headers (names, ids, birth dates): reports
    # linked later are scrubbed of them without the platform keeping the identifiers themselves.
    identifier_hashes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "studies"
        constraints = [models.UniqueConstraint(fields=["project", "study_uid"], name="study_uid_per_project")]
        indexes = [
            models.Index(fields=["project", "accession_hash"]),
            models.Index(fields=["project", "external_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.patient} {self.modality} {self.study_date or ''}".strip()


class SourceFormat(models.TextChoices):
    DICOM = "dicom"
    NIFTI = "nifti"
    PNG = "png"
    JPEG = "jpeg"


class Scan(models.Model):
    """One image series, stored as a canonical NIfTI file.

    Array axis order of the canonical file is ``(X, Y[, Z])``: X along image columns, Y along rows,
    Z along slices; ``affine`` maps voxel indices to RAS+ millimetres (NIfTI convention); ``spacing`` is
    in mm per axis; ``shape`` and ``spacing`` have 3 entries for 3D scans and 2 for radiographs.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="scans")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="scans")
    series_uid = models.CharField(max_length=64)  # remapped DICOM SeriesInstanceUID, or a derived UID
    name = models.CharField(max_length=256, blank=True)  # file stem for NIfTI/PNG/JPEG sources
    modality = models.CharField(max_length=16)
    source_format = models.CharField(max_length=8, choices=SourceFormat.choices)
    series_description = models.CharField(max_length=256, blank=True)
    ndim = models.PositiveSmallIntegerField()
    shape = models.JSONField()
    spacing = models.JSONField()
    affine = models.JSONField()
    dtype = models.CharField(max_length=16)
    file = models.FileField(max_length=512)
    file_size = models.BigIntegerField(default=0)
    thumbnail = models.FileField(max_length=512, blank=True)
    source_checksum = models.CharField(max_length=64)  # sha256 over the sorted sha256s of the sources
    burned_in_annotation = models.CharField(
        max_length=8, default="NO", help_text="YES, NO or UNKNOWN; YES/UNKNOWN need a human look"
    )
    warnings = models.JSONField(default=list, blank=True)
    meta = models.JSONField(default=dict, blank=True)  # e.g. PET SUV header fields, window presets
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "series_uid"], name="series_uid_per_project"),
        ]
        indexes = [
            models.Index(fields=["project", "source_checksum"]),
            models.Index(fields=["project", "modality"]),
        ]

    def __str__(self) -> str:
        return f"{self.modality} {self.name or self.series_uid}"

    @property
    def needs_burned_in_review(self) -> bool:
        return self.burned_in_annotation != "NO"


class ScanSource(models.Model):
    """One source file of a scan; makes re-ingest idempotent (remapped SOP Instance UID, checksum)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="sources")
    sop_uid = models.CharField(max_length=64, blank=True)
    checksum = models.CharField(max_length=64)
    # the slice (k of the canonical array's [:, :, k]) this single-frame instance became; null for a
    # multi-frame instance, a 2D image, or a scan stored before slices were recorded
    slice_index = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "sop_uid"], condition=~models.Q(sop_uid=""), name="sop_uid_per_project"
            ),
        ]
        indexes = [models.Index(fields=["project", "checksum"])]


class Report(models.Model):
    """A radiology report: raw (scrubbed) text and its parsed sections."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reports")
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="reports")
    external_id = models.CharField(max_length=256)
    source = models.CharField(max_length=16)  # csv, text, dicom-sr
    source_name = models.CharField(max_length=256, blank=True)
    raw_text = models.TextField()
    indication = models.TextField(blank=True)
    comparison = models.TextField(blank=True)
    findings = models.TextField(blank=True)
    impression = models.TextField(blank=True)
    extra = models.JSONField(default=dict, blank=True)  # other columns / sections, e.g. MeSH, technique
    checksum = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="report_id_per_project")
        ]

    def __str__(self) -> str:
        return self.external_id


class GazeFormat(models.TextChoices):
    REFLACX = "reflacx"
    EGD = "egd"


class GazeRecording(models.Model):
    """A radiologist's eye-gaze recording of one image, with the dictation transcript.

    ``fixations`` is columnar: ``{"start": [s], "end": [s], "x": [px], "y": [px], ...}`` with times in
    seconds from the start of the dictation and x/y in pixels of the original image (x = column, y = row,
    origin top-left). Optional per-fixation columns: ``ang_res_x``, ``ang_res_y`` (pixels per degree),
    ``shown_rect`` (``[xmin, ymin, xmax, ymax]`` of the image shown on screen), ``pupil``.
    ``transcript`` is a list of ``{"text", "start", "end"}`` (words for REFLACX, phrases for EGD-CXR).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gaze_recordings")
    scan = models.ForeignKey(
        Scan, null=True, blank=True, on_delete=models.SET_NULL, related_name="gaze_recordings"
    )
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    external_id = models.CharField(max_length=128)  # REFLACX id or EGD-CXR dicom_id
    image_ref = models.CharField(max_length=256, blank=True)  # the image it belongs to (dicom_id, file)
    reader = models.CharField(max_length=128, blank=True)
    source_format = models.CharField(max_length=16, choices=GazeFormat.choices)
    image_width = models.PositiveIntegerField()
    image_height = models.PositiveIntegerField()
    fixation_count = models.PositiveIntegerField(default=0)
    fixations = models.JSONField(default=dict)
    transcript = models.JSONField(default=list, blank=True)
    transcript_text = models.TextField(blank=True)
    meta = models.JSONField(default=dict, blank=True)  # labels, chest box, ellipses, paddings ...
    usable = models.BooleanField(default=True)
    problems = models.JSONField(default=list, blank=True)
    checksum = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "source_format", "external_id"], name="gaze_id_per_project"
            )
        ]

    def __str__(self) -> str:
        return f"{self.source_format} {self.external_id}"


class GazeAnatomyMask(models.Model):
    """A binary anatomy mask (PNG, image resolution) that came with a gaze recording."""

    recording = models.ForeignKey(GazeRecording, on_delete=models.CASCADE, related_name="anatomy_masks")
    name = models.CharField(max_length=64)  # left_lung, right_lung, mediastinum, aortic_knob ...
    file = models.FileField(max_length=512)
    pixel_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["recording", "name"], name="one_mask_per_anatomy")]
