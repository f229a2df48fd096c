from rest_framework import serializers

from core.models import Job, Project


class ProjectOut(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "id",
            "slug",
            "name",
            "description",
            "label_schema",
            "keep_identity_map",
            "qa_sample_rate",
            "readers_per_finding",
            "consensus_method",
            "findings_after_label_run",
            "train_after_accepted",
            "created_at",
            "role",
        ]

    def get_role(self, obj) -> str | None:
        roles = self.context.get("roles", {})
        return roles.get(obj.pk)


class ReviewSettingsIn(serializers.Serializer):
    qa_sample_rate = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    readers_per_finding = serializers.IntegerField(required=False, min_value=1, max_value=10)
    consensus_method = serializers.ChoiceField(["majority", "staple"], required=False)
    findings_after_label_run = serializers.BooleanField(required=False)
    train_after_accepted = serializers.IntegerField(required=False, min_value=0, max_value=100_000)


class JobOut(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    errors = serializers.SerializerMethodField()

    def get_errors(self, obj) -> list[dict]:
        """Per-file errors; never a traceback (rows stored before tracebacks went to the log only)."""
        return [
            {k: v for k, v in e.items() if k != "traceback"} if isinstance(e, dict) else e
            for e in obj.errors or []
            if not (isinstance(e, dict) and set(e) == {"traceback"})
        ]

    class Meta:
        model = Job
        fields = [
            "id",
            "project",
            "kind",
            "status",
            "progress",
            "message",
            "counts",
            "errors",
            "result",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
        ]
