"""Gaze label runs and what they make: heatmaps, sentences, anatomy records, region proposals.

A run is identified by its parameters (``GazeLabelRun.params_hash``): starting the same parameters again
resumes that run (recordings already done are skipped), so re-running creates no duplicates. Every
recording the run looked at has one ``GazeLabelResult``: done (with the problems that weakened it) or
unusable (with the reason), never silently dropped.

Heatmaps keep their definition (``windows``, ``mask``), peak and fixation count; the exact float32 array
(and its PNG) is computed again from the recording when it is asked for
(``labeling.gaze.labels.compute_map``): cheaper than encoding and storing an image of every map.
"""

from django.db import models

from core.models import Project
from labeling.models.reports import FindingProposal, RunRecord
from studies.models import GazeRecording, Scan


class GazeLabelRun(RunRecord):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gaze_label_runs")
    params = models.JSONField(default=dict)
    params_hash = models.CharField(max_length=64)
    unusable = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "params_hash"], name="one_gaze_run_per_params")
        ]

    def __str__(self) -> str:
        return f"gaze run {self.pk} ({self.params.get('method', '')})"

    @property
    def progress(self) -> float:
        return (self.done + self.unusable + self.failed) / self.total if self.total else 0.0


class GazeResultStatus(models.TextChoices):
    DONE = "done"
    UNUSABLE = "unusable"  # the recording cannot give labels (reason in ``error``)
    FAILED = "failed"  # an unexpected error; tried again when the run resumes


class GazeLabelResult(models.Model):
    run = models.ForeignKey(GazeLabelRun, on_delete=models.CASCADE, related_name="results")
    recording = models.ForeignKey(GazeRecording, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=GazeResultStatus.choices)
    error = models.TextField(blank=True)
    problems = models.JSONField(default=list, blank=True)
    transcript_text = models.TextField(blank=True)
    sentences = models.PositiveIntegerField(default=0)
    proposals = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["recording_id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "recording"], name="one_gaze_result_per_recording")
        ]


class GazeSentence(models.Model):
    """A dictated sentence: its times, gaze window, anatomies and the findings it states.

    ``findings``: ``[{code, assertion, phrase, laterality, location, proposal_ids}]`` where
    ``proposal_ids`` are the report's ``FindingProposal``s of the same code (weak labels of the study)."""

    run = models.ForeignKey(GazeLabelRun, on_delete=models.CASCADE, related_name="sentences")
    recording = models.ForeignKey(GazeRecording, on_delete=models.CASCADE, related_name="+")
    index = models.PositiveIntegerField()
    text = models.TextField()
    start = models.FloatField()
    end = models.FloatField()
    char_start = models.PositiveIntegerField()
    char_end = models.PositiveIntegerField()
    window_start = models.FloatField()
    window_end = models.FloatField()
    fixation_count = models.PositiveIntegerField(default=0)
    shares = models.JSONField(default=dict, blank=True)
    anatomies = models.JSONField(default=list, blank=True)
    assigned_by = models.CharField(max_length=8, blank=True)  # words, gaze or ""
    findings = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["recording_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "recording", "index"], name="one_gaze_sentence_per_index")
        ]


class GazeHeatmap(models.Model):
    KINDS = [("recording", "recording"), ("sentence", "sentence"), ("anatomy", "anatomy")]

    run = models.ForeignKey(GazeLabelRun, on_delete=models.CASCADE, related_name="heatmaps")
    recording = models.ForeignKey(GazeRecording, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=KINDS)
    sentence_index = models.PositiveIntegerField(null=True, blank=True)
    anatomy = models.CharField(max_length=64, blank=True)
    windows = models.JSONField(null=True, blank=True)  # [[start, end], ...] s; null: the whole recording
    mask = models.CharField(max_length=64, blank=True)  # only the fixations inside this anatomy mask
    fixation_count = models.PositiveIntegerField(default=0)
    peak = models.FloatField(default=0.0)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()

    class Meta:
        ordering = ["recording_id", "id"]
        indexes = [models.Index(fields=["run", "recording", "kind"])]


class GazeAnatomyRecord(models.Model):
    """An FG-CXR-style record: image, anatomy, caption, heatmap, dwell (and I-AI's intense focus)."""

    run = models.ForeignKey(GazeLabelRun, on_delete=models.CASCADE, related_name="anatomy_records")
    recording = models.ForeignKey(GazeRecording, on_delete=models.CASCADE, related_name="+")
    anatomy = models.CharField(max_length=64)
    dwell_s = models.FloatField()
    dwell_share = models.FloatField()
    fixation_count = models.PositiveIntegerField()
    time_to_first_s = models.FloatField(null=True, blank=True)
    caption = models.TextField(blank=True)
    sentence_indexes = models.JSONField(default=list, blank=True)
    heatmap = models.ForeignKey(GazeHeatmap, null=True, on_delete=models.SET_NULL, related_name="+")
    heatmap_source = models.CharField(max_length=32, blank=True)
    focus_mask = models.FileField(max_length=512)  # 1-bit PNG: heatmap above its percentile
    focus_pixels = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["recording_id", "anatomy"]
        constraints = [
            models.UniqueConstraint(fields=["run", "recording", "anatomy"], name="one_record_per_anatomy")
        ]


class RegionProposal(models.Model):
    """A box and mask proposed for a finding on an image or volume, with where it came from.

    ``source`` says which generator: ``gaze``, ``lungs``, ``pet-suv`` or ``model`` (then ``model_version``);
    ``params`` its settings; a gaze proposal names its run, recording and sentence. ``box`` is
    ``[xmin, ymin, xmax, ymax]`` pixels (2D) or ``[xmin, ymin, zmin, xmax, ymax, zmax]`` voxels (3D, the
    scan's X, Y, Z), max exclusive; ``mask`` a 1-bit PNG at image resolution (2D) or a uint8 NIfTI on the
    scan's grid (3D). ``confidence`` / ``entropy``: a model's mean probability and mean entropy inside
    the mask."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    scan = models.ForeignKey(Scan, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=32)
    code = models.CharField(max_length=64)
    text = models.TextField(blank=True)  # the sentence that states the finding
    phrase = models.TextField(blank=True)
    finding = models.ForeignKey(
        FindingProposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="region_proposals"
    )
    gaze_run = models.ForeignKey(
        GazeLabelRun, null=True, blank=True, on_delete=models.CASCADE, related_name="region_proposals"
    )
    recording = models.ForeignKey(
        GazeRecording, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    sentence_index = models.PositiveIntegerField(null=True, blank=True)
    anatomies = models.JSONField(default=list, blank=True)
    box = models.JSONField()
    mask = models.FileField(max_length=512)
    pixels = models.PositiveIntegerField(default=0)
    score = models.FloatField(default=0.0)  # gaze: share of the sentence heatmap inside the region
    label = models.CharField(max_length=64, blank=True)  # the model's or generator's label name
    volume_ml = models.FloatField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    entropy = models.FloatField(null=True, blank=True)
    model_version = models.ForeignKey(
        "ml.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="proposals"
    )
    params = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "source", "code"])]
