"""Model registry: versions of segmentation, grounding and anatomy models with their input spec.

A ``ModelVersion`` is registered from a MONAI bundle (``configs/inference.json`` + ``models/model.pt`` or
``models/model.ts``, as a zip or folder; its ``metadata.json`` gives the label names), a TorchScript
file, or a state dict with a MONAI network spec (``{"name": "UNet", "args": {...}}``). It is
``validating`` until a worker (the ``gpu`` queue, or the CPU) has loaded it and run a forward pass on a
dummy input of its input spec; then ``ready``, or ``rejected`` with the reason.
Only ready versions pre-annotate.
"""

from django.conf import settings
from django.db import models

from core.models import Job, Project


class ModelTask(models.TextChoices):
    SEGMENTATION = "segmentation"
    GROUNDING = "grounding"  # text-conditioned: a finding sentence in, a mask out
    ANATOMY = "anatomy"


class ModelFormat(models.TextChoices):
    BUNDLE = "monai-bundle"
    TORCHSCRIPT = "torchscript"
    STATE_DICT = "state-dict"


class ModelStatus(models.TextChoices):
    VALIDATING = "validating"
    READY = "ready"
    REJECTED = "rejected"


class ModelVersion(models.Model):
    """``input_spec``: ``{"ndim": 2|3, "channels": int, "modality": ["CT", ...], "spacing": [mm, ...] | null,
    "window": [low, high] | null, "roi_size": [int, ...]}``; ``label_names``: one per output channel
    (``background`` first for softmax models); ``network``: the MONAI network spec of a state dict, or for a
    MONAI bundle ``{"bundle": ...}``: what the platform read of it (``network_def``, its pipeline, its
    metadata; ``ml.bundle_pipeline.Bundle.summary``; the file is read again to run it)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    task = models.CharField(max_length=16, choices=ModelTask.choices)
    format = models.CharField(max_length=16, choices=ModelFormat.choices)
    input_spec = models.JSONField(default=dict)
    label_names = models.JSONField(default=list)
    network = models.JSONField(default=dict, blank=True)
    weights = models.FileField(max_length=512)
    checksum = models.CharField(max_length=64)
    metrics = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    status = models.CharField(max_length=16, choices=ModelStatus.choices, default=ModelStatus.VALIDATING)
    error = models.TextField(blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name", "version"], name="one_model_version_number")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.status})"


class TrainingRun(models.Model):
    """Training a new version from a frozen snapshot of labelled cases.

    ``examples``: ``[{"proposal", "scan", "patient", "label", "mask", "sha256"}]`` fixed when the run is
    created (later edits do not change it); ``split``: scan ids ``{"train": [...], "val": [...]}`` by
    patient; ``checkpoint``: the last saved state (the run resumes from it); ``metrics``: validation Dice
    of the new weights and of the parent on the same cases; ``result``: the new version, made only when
    it beats the parent."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    parent = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="training_runs")
    name = models.CharField(max_length=64)  # the model name the new version gets
    params = models.JSONField(default=dict, blank=True)
    examples = models.JSONField(default=list)
    split = models.JSONField(default=dict)
    status = models.CharField(max_length=16, default="pending")
    step = models.PositiveIntegerField(default=0)
    checkpoint = models.FileField(max_length=512, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    result = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]


class CaseScore(models.Model):
    """An active-learning score of a scan under a model version and strategy (higher: annotate first)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    scan = models.ForeignKey("studies.Scan", on_delete=models.CASCADE, related_name="case_scores")
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    strategy = models.CharField(max_length=32)
    score = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-score", "scan_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["scan", "model_version", "strategy"], name="one_score_per_strategy"
            )
        ]
