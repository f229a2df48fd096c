"""Input and output of the PACS endpoints. Credentials are write-only: no output serializer has them."""

from rest_framework import serializers

from pacs.models import PacsImport, PacsSource, PacsStoreBack


class PacsSourceIn(serializers.Serializer):
    name = serializers.CharField(max_length=64, required=False)
    base_url = serializers.CharField(max_length=500, required=False)
    auth = serializers.ChoiceField(choices=["none", "basic", "bearer"], required=False)
    username = serializers.CharField(max_length=256, required=False, write_only=True, allow_blank=True)
    password = serializers.CharField(
        max_length=1024, required=False, write_only=True, allow_blank=True, trim_whitespace=False
    )
    token = serializers.CharField(max_length=8192, required=False, write_only=True, allow_blank=True)
    verify_tls = serializers.BooleanField(required=False)
    store_back = serializers.BooleanField(required=False)


class PacsSourceOut(serializers.ModelSerializer):
    has_credentials = serializers.SerializerMethodField()

    class Meta:
        model = PacsSource
        fields = [
            "id", "name", "base_url", "auth", "has_credentials", "verify_tls", "store_back", "checked_at",
            "check_ok", "check_message", "created_at", "updated_at",
        ]  # fmt: skip

    def get_has_credentials(self, obj: PacsSource) -> bool:
        return bool(obj.credentials)


class PacsStudyOut(serializers.Serializer):
    study_uid = serializers.CharField()
    patient_id = serializers.CharField()
    patient_name = serializers.CharField()
    accession = serializers.CharField()
    study_date = serializers.CharField()
    description = serializers.CharField()
    modalities = serializers.ListField(child=serializers.CharField())
    series = serializers.IntegerField(allow_null=True)
    instances = serializers.IntegerField(allow_null=True)


class PacsImportIn(serializers.Serializer):
    source = serializers.IntegerField()
    study_uids = serializers.ListField(child=serializers.CharField(max_length=64), max_length=1000)
    modality = serializers.CharField(max_length=16, required=False, allow_blank=True)


class PacsImportOut(serializers.ModelSerializer):
    source = serializers.CharField(source="source.name")
    status = serializers.CharField(source="job.status")
    progress = serializers.FloatField(source="job.progress")
    message = serializers.CharField(source="job.message")
    counts = serializers.JSONField(source="job.counts")
    errors = serializers.JSONField(source="job.errors")

    class Meta:
        model = PacsImport
        fields = [
            "id", "job", "source", "study_uids", "modality", "status", "progress", "message", "counts",
            "errors", "outcome", "created_at",
        ]  # fmt: skip


class PacsStoreBackOut(serializers.ModelSerializer):
    source = serializers.CharField(source="source.name")

    class Meta:
        model = PacsStoreBack
        fields = [
            "id", "source", "finding", "version", "status", "tries", "message", "seg_series_uid",
            "seg_sop_uid", "updated_at",
        ]  # fmt: skip
