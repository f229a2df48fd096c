"""Review API payloads: versions, findings, tasks, readings, history events, and the request bodies."""

from rest_framework import serializers

from annotation.models import Annotation, Finding, FindingSpan, HistoryEvent, Reading, ReviewTask
from labeling.vocabulary import code_name


class AnnotationOut(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", default=None, read_only=True)

    class Meta:
        model = Annotation
        fields = [
            "id",
            "version",
            "kind",
            "box",
            "points",
            "voxels",
            "author",
            "region_proposal_id",
            "parent_id",
            "comment",
            "created_at",
        ]


class FindingSpanOut(serializers.ModelSerializer):
    class Meta:
        model = FindingSpan
        fields = ["section", "start", "end", "text"]


class FindingOut(serializers.ModelSerializer):
    """A finding; ``spans``: every mention of it in the report (Findings and Impression), the first being
    its own ``section``/``start``/``end``/``text``; ``code_name``: the code in words (``2d``: nodule /
    mass). Lists prefetch ``spans`` (``selectors.with_spans``)."""

    stage = serializers.CharField(source="task.stage", default=None, read_only=True)
    task_id = serializers.IntegerField(source="task.id", default=None, read_only=True)
    spans = FindingSpanOut(many=True, read_only=True)
    code_name = serializers.SerializerMethodField()

    def get_code_name(self, finding: Finding) -> str:
        return code_name(finding.code)

    class Meta:
        model = Finding
        fields = [
            "id",
            "study_id",
            "scan_id",
            "report_id",
            "section",
            "start",
            "end",
            "text",
            "code",
            "code_name",
            "location",
            "laterality",
            "size_mm",
            "spans",
            "status",
            "source",
            "current_version",
            "stage",
            "task_id",
            "updated_at",
        ]


class TaskOut(serializers.ModelSerializer):
    assignee = serializers.CharField(source="assignee.username", default=None, read_only=True)
    annotated_by = serializers.CharField(source="annotated_by.username", default=None, read_only=True)
    reviewed_by = serializers.CharField(source="reviewed_by.username", default=None, read_only=True)

    class Meta:
        model = ReviewTask
        fields = [
            "id",
            "finding_id",
            "stage",
            "assignee",
            "lease_expires_at",
            "priority",
            "decision",
            "returned_comment",
            "annotated_by",
            "reviewed_by",
            "updated_at",
        ]


class SubmissionOut(serializers.Serializer):
    """The annotator's submission as the radiologists see it (review and QA): their decision and comment,
    and ``change``: what changed from the proposal (``annotation.versions.version_change``: ``proposal``
    null when the finding had none, ``kept_proposal``, ``dice``, ``voxels_added``, ``voxels_removed``)."""

    annotator = serializers.CharField(source="user.username", default=None)
    decision = serializers.SerializerMethodField()
    comment = serializers.CharField()
    at = serializers.DateTimeField()
    change = serializers.SerializerMethodField()

    def get_decision(self, event: HistoryEvent) -> str:
        return event.after.get("decision", "")

    def get_change(self, event: HistoryEvent) -> dict | None:
        return event.after.get("change")


class ReadingOut(serializers.ModelSerializer):
    reader = serializers.CharField(source="reader.username", default=None, read_only=True)
    version = serializers.IntegerField(source="annotation.version", default=None, read_only=True)
    stage = serializers.CharField(source="finding.task.stage", default=None, read_only=True)

    class Meta:
        model = Reading
        fields = [
            "id",
            "finding_id",
            "index",
            "reader",
            "status",
            "decision",
            "annotation_id",
            "version",
            "lease_expires_at",
            "submitted_at",
            "stage",
        ]


class HistoryOut(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", default=None, read_only=True)

    class Meta:
        model = HistoryEvent
        fields = ["id", "finding_id", "task_id", "user", "action", "before", "after", "comment", "at"]


class FindingIn(serializers.Serializer):
    study_id = serializers.IntegerField()
    scan_id = serializers.IntegerField(required=False, allow_null=True)
    text = serializers.CharField()
    code = serializers.CharField(required=False, allow_blank=True, default="")
    section = serializers.ChoiceField(
        ["", "indication", "comparison", "findings", "impression"], required=False, default=""
    )
    start = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    end = serializers.IntegerField(required=False, allow_null=True, min_value=0)


class AnnotationIn(serializers.Serializer):
    base_version = serializers.IntegerField(min_value=0)
    kind = serializers.ChoiceField(["mask", "box", "points"])
    box = serializers.JSONField(required=False)
    points = serializers.JSONField(required=False)
    mask = serializers.FileField(
        required=False, help_text="NIfTI (.nii, .nii.gz) on the scan's grid, or PNG (2D)"
    )
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class TransitionIn(serializers.Serializer):
    decision = serializers.ChoiceField(["accept", "reject"], required=False)
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    user = serializers.CharField(required=False, help_text="assign: the username")


class QueueIn(serializers.Serializer):
    strategy = serializers.CharField(help_text="an active-learning strategy whose scores are stored")
    model = serializers.CharField(required=False, help_text="model name (its newest version with scores)")
    seed = serializers.IntegerField(required=False, default=0, help_text="power_ strategies: the noise seed")


class TrainFromAcceptedIn(serializers.Serializer):
    model = serializers.CharField(help_text="model name: its newest ready version is the parent")
    finding_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False)
    label_map = serializers.DictField(child=serializers.CharField(), required=False, default=dict)
    params = serializers.DictField(required=False, default=dict)
