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
            "created_at",
            "role",
        ]

    def get_role(self, obj) -> str | None:
        roles = self.context.get("roles", {})
        return roles.get(obj.pk)


class JobOut(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)

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
