"""Label runs over reports and the finding proposals they make, with provenance.

A run is identified by its settings (labeler, schema, parameters, prompt version, model): starting the
same settings again resumes that run, so re-running creates no duplicate proposals. ``RunReport``
records which reports a run has finished (or failed, with the reason and the raw reply), which is what
lets a killed run resume where it stopped.
"""

from django.conf import settings
from django.db import models

from core.models import Job, JobStatus, Project
from studies.models import Report

LabelRunStatus = JobStatus  # a run moves through the same states as a job


class RunRecord(models.Model):
    """What every labeling run keeps: state, counts, its job, who started it and when."""

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class LabelRun(RunRecord):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_runs")
    labeler = models.CharField(max_length=16)  # rules, llm, ensemble
    schema = models.CharField(max_length=16)  # chexpert, rexgroundingct, petct
    params = models.JSONField(default=dict, blank=True)
    prompt_version = models.CharField(max_length=32, blank=True)
    model_name = models.CharField(max_length=128, blank=True)
    settings_hash = models.CharField(max_length=64)
    proposals = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    cost = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "settings_hash"], name="one_run_per_settings")
        ]

    def __str__(self) -> str:
        return f"{self.labeler} run #{self.pk} ({self.status})"

    @property
    def progress(self) -> float:
        return (self.done + self.failed) / self.total if self.total else 0.0


class RunReport(models.Model):
    """A report a run has finished: ``ok`` with its proposals stored, or ``failed`` with why."""

    run = models.ForeignKey(LabelRun, on_delete=models.CASCADE, related_name="report_states")
    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="+")
    ok = models.BooleanField()
    error = models.TextField(blank=True)
    raw_reply = models.TextField(blank=True)
    proposals = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "report"], name="one_state_per_run_report")]


class Assertion(models.TextChoices):
    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"


class FindingProposal(models.Model):
    """A finding proposed by a run for a report: phrase, exact span, assertion, attributes, code.

    ``report.<section>[start:end]`` is the source sentence(s); ``extra`` holds schema fields
    (ReXGroundingCT region, source codes, abnormal, refers-to-prior; PET/CT SUVmax and slice)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(LabelRun, on_delete=models.CASCADE, related_name="finding_proposals")
    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="finding_proposals")
    phrase = models.TextField()
    section = models.CharField(max_length=32)
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    assertion = models.CharField(max_length=16, choices=Assertion.choices)
    code = models.CharField(max_length=64)
    laterality = models.CharField(max_length=16, blank=True)
    location = models.CharField(max_length=128, blank=True)
    size_mm = models.FloatField(null=True, blank=True)
    extra = models.JSONField(default=dict, blank=True)
    disagreement = models.BooleanField(default=False)  # ensemble voters disagreed: review first
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["report_id", "section", "start"]
        indexes = [
            models.Index(fields=["project", "code", "assertion"]),
            models.Index(fields=["run", "report"]),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.assertion}: {self.phrase[:40]}"


class LLMCacheEntry(models.Model):
    """A model's reply to one prompt, keyed by sha256 of (model, prompt version, input): a re-run with
    the same settings asks the endpoint nothing."""

    key = models.CharField(max_length=64, unique=True)
    model_name = models.CharField(max_length=128)
    prompt_version = models.CharField(max_length=32)
    reply = models.TextField()
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
