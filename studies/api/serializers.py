from django.urls import reverse
from rest_framework import serializers

from studies.models import GazeRecording, Patient, PatientIdentity, Report, Scan, Study


class PatientOut(serializers.ModelSerializer):
    """A patient as members see it. Never the date shift: with it, shifted dates give the real ones (it is
    in the identity map, for managers of projects that keep one)."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    study_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Patient
        fields = ["id", "project", "pseudonym", "study_count", "created_at"]


class StudyOut(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    patient = serializers.CharField(source="patient.pseudonym", read_only=True)
    scan_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Study
        fields = [
            "id",
            "project",
            "patient_id",
            "patient",
            "study_uid",
            "external_id",
            "study_date",
            "modality",
            "description",
            "scan_count",
            "created_at",
        ]


class ScanOut(serializers.ModelSerializer):
    """A scan. Not its ``source_checksum``: a hash of the original (identified) files, which anyone holding
    a file could match against."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    patient = serializers.CharField(source="study.patient.pseudonym", read_only=True)
    links = serializers.SerializerMethodField()
    needs_burned_in_review = serializers.BooleanField(read_only=True)

    class Meta:
        model = Scan
        fields = [
            "id",
            "project",
            "study_id",
            "patient",
            "series_uid",
            "name",
            "modality",
            "source_format",
            "series_description",
            "ndim",
            "shape",
            "spacing",
            "affine",
            "dtype",
            "file_size",
            "burned_in_annotation",
            "needs_burned_in_review",
            "warnings",
            "meta",
            "created_at",
            "links",
        ]

    def get_links(self, obj) -> dict[str, str]:
        return {
            "nifti": reverse("scan-nifti", args=[obj.pk]),
            "thumbnail": reverse("scan-thumbnail", args=[obj.pk]),
            "png": reverse("scan-png", args=[obj.pk]),
        }


class ReportOut(serializers.ModelSerializer):
    """A report. Not its ``checksum``: the sha256 of the text as imported, before it was scrubbed."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Report
        fields = [
            "id",
            "project",
            "study_id",
            "external_id",
            "source",
            "source_name",
            "raw_text",
            "indication",
            "comparison",
            "findings",
            "impression",
            "extra",
            "created_at",
        ]


class GazeRecordingOut(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    anatomy_masks = serializers.SerializerMethodField()

    class Meta:
        model = GazeRecording
        fields = [
            "id",
            "project",
            "scan_id",
            "study_id",
            "external_id",
            "image_ref",
            "reader",
            "source_format",
            "image_width",
            "image_height",
            "fixation_count",
            "transcript_text",
            "usable",
            "problems",
            "meta",
            "anatomy_masks",
            "created_at",
        ]

    def get_anatomy_masks(self, obj) -> list[dict]:
        return [{"name": m.name, "pixel_count": m.pixel_count} for m in obj.anatomy_masks.all()]


class GazeRecordingDetailOut(GazeRecordingOut):
    class Meta(GazeRecordingOut.Meta):
        fields = [*GazeRecordingOut.Meta.fields, "fixations", "transcript"]


class IdentityOut(serializers.ModelSerializer):
    """One row of the identity map, with the patient's date shift (days added to every date; real date =
    shifted date - ``date_shift_days``)."""

    pseudonym = serializers.CharField(source="patient.pseudonym", read_only=True)
    patient_id = serializers.IntegerField(source="patient.id", read_only=True)
    date_shift_days = serializers.IntegerField(source="patient.date_shift_days", read_only=True)

    class Meta:
        model = PatientIdentity
        fields = [
            "patient_id",
            "pseudonym",
            "original_id",
            "original_name",
            "original_birth_date",
            "date_shift_days",
        ]


class UploadIn(serializers.Serializer):
    """Multipart upload: scan files and/or zip archives, optionally a report CSV and a gaze archive."""

    files = serializers.ListField(child=serializers.FileField(), required=False, default=list)
    modality = serializers.CharField(required=False, default="", max_length=16)
    study_pattern = serializers.CharField(required=False, allow_blank=True, default="")
    reports = serializers.FileField(required=False)
    report_id_column = serializers.CharField(required=False)
    report_text_columns = serializers.CharField(required=False, help_text="comma-separated")
    report_link = serializers.ChoiceField(
        ["id", "pattern", "accession", "study-uid"], required=False, default="id"
    )
    report_link_pattern = serializers.CharField(required=False)
    gaze = serializers.FileField(required=False, help_text="zip of a REFLACX or EGD-CXR folder")
    gaze_format = serializers.ChoiceField(["reflacx", "egd"], required=False, default="reflacx")

    def validate(self, attrs):
        if not attrs.get("files") and not attrs.get("reports") and not attrs.get("gaze"):
            raise serializers.ValidationError("Send at least one file in 'files', 'reports' or 'gaze'.")
        return attrs
