from rest_framework import serializers

from labeling.labelers import LABELERS
from labeling.models import FindingProposal, LabelRun


class LabelRunIn(serializers.Serializer):
    labeler = serializers.ChoiceField(LABELERS, default="rules")
    params = serializers.DictField(required=False, default=dict)
    report_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, allow_null=True
    )


class LabelRunOut(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    progress = serializers.FloatField(read_only=True)

    class Meta:
        model = LabelRun
        fields = [
            "id", "project", "labeler", "schema", "params", "prompt_version", "model_name", "status", "total",
            "done", "failed", "proposals", "progress", "tokens_in", "tokens_out", "cost", "job_id",
            "created_at", "finished_at",
        ]  # fmt: skip


class FindingProposalOut(serializers.ModelSerializer):
    class Meta:
        model = FindingProposal
        fields = [
            "id", "run_id", "report_id", "phrase", "section", "start", "end", "assertion", "code",
            "laterality", "location", "size_mm", "extra", "disagreement", "created_at",
        ]  # fmt: skip
