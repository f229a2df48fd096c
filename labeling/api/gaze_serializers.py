"""Serializers of the gaze label endpoints."""

from rest_framework import serializers

from labeling.models import (
    GazeAnatomyRecord,
    GazeHeatmap,
    GazeLabelResult,
    GazeLabelRun,
    GazeSentence,
    RegionProposal,
)


class GazeRunIn(serializers.Serializer):
    params = serializers.DictField(required=False, default=dict)
    recording_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, allow_null=True
    )


class GazeRunOut(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    progress = serializers.FloatField(read_only=True)

    class Meta:
        model = GazeLabelRun
        fields = [
            "id",
            "project",
            "params",
            "status",
            "total",
            "done",
            "unusable",
            "failed",
            "progress",
            "job_id",
            "created_at",
            "finished_at",
        ]


class GazeResultOut(serializers.ModelSerializer):
    external_id = serializers.CharField(source="recording.external_id", read_only=True)

    class Meta:
        model = GazeLabelResult
        fields = [
            "id",
            "run_id",
            "recording_id",
            "external_id",
            "status",
            "error",
            "problems",
            "transcript_text",
            "sentences",
            "proposals",
            "seconds",
        ]


class GazeHeatmapOut(serializers.ModelSerializer):
    class Meta:
        model = GazeHeatmap
        fields = [
            "id",
            "run_id",
            "recording_id",
            "kind",
            "sentence_index",
            "anatomy",
            "windows",
            "mask",
            "fixation_count",
            "peak",
            "width",
            "height",
        ]


class GazeSentenceOut(serializers.ModelSerializer):
    class Meta:
        model = GazeSentence
        fields = [
            "id",
            "run_id",
            "recording_id",
            "index",
            "text",
            "start",
            "end",
            "char_start",
            "char_end",
            "window_start",
            "window_end",
            "fixation_count",
            "shares",
            "anatomies",
            "assigned_by",
            "findings",
        ]


class AnatomyRecordOut(serializers.ModelSerializer):
    class Meta:
        model = GazeAnatomyRecord
        fields = [
            "id",
            "run_id",
            "recording_id",
            "anatomy",
            "dwell_s",
            "dwell_share",
            "fixation_count",
            "time_to_first_s",
            "caption",
            "sentence_indexes",
            "heatmap_id",
            "heatmap_source",
            "focus_pixels",
        ]


class RegionProposalOut(serializers.ModelSerializer):
    class Meta:
        model = RegionProposal
        fields = [
            "id",
            "scan_id",
            "source",
            "code",
            "text",
            "phrase",
            "finding_id",
            "gaze_run_id",
            "recording_id",
            "sentence_index",
            "anatomies",
            "box",
            "pixels",
            "score",
            "label",
            "volume_ml",
            "confidence",
            "entropy",
            "model_version_id",
            "params",
            "created_at",
        ]


class AnatomyMaskIn(serializers.Serializer):
    name = serializers.CharField(help_text="left_lung, right_lung, heart, mediastinum, aortic_knob, ...")
    file = serializers.FileField(help_text="PNG at the image's resolution; non-zero pixels are inside")
