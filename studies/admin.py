from django.contrib import admin

from core.models import Membership, Role
from studies.models import (
    GazeAnatomyMask,
    GazeRecording,
    Patient,
    PatientIdentity,
    Report,
    Scan,
    ScanSource,
    Study,
)
from studies.selectors import identities_for_user

# Secrets of de-identification, for superusers only (like the identity map): the date shift turns shifted
# dates back into real ones; checksums of the original files match whoever holds a file.
_SUPERUSER_ONLY = {"date_shift_days", "source_checksum", "checksum"}


def _hide_secrets(request, fields) -> list[str]:
    if request.user.is_superuser:
        return list(fields)
    return [f for f in fields if f not in _SUPERUSER_ONLY]


class _SecretsHidden(admin.ModelAdmin):
    """Leaves ``_SUPERUSER_ONLY`` fields out of lists, forms and search for staff who are not superusers."""

    def get_list_display(self, request):
        return _hide_secrets(request, super().get_list_display(request))

    def get_search_fields(self, request):
        return _hide_secrets(request, super().get_search_fields(request))

    def get_exclude(self, request, obj=None):
        hidden = [] if request.user.is_superuser else sorted(_SUPERUSER_ONLY)
        return [*(super().get_exclude(request, obj) or []), *hidden]

    def get_readonly_fields(self, request, obj=None):
        return _hide_secrets(request, super().get_readonly_fields(request, obj))


@admin.register(Patient)
class PatientAdmin(_SecretsHidden):
    list_display = ["pseudonym", "project", "date_shift_days", "created_at"]
    list_filter = ["project"]
    search_fields = ["pseudonym"]
    exclude = ["identity_hash"]
    readonly_fields = ["date_shift_days"]

    def has_add_permission(self, request):  # patients come from ingest (their shift is keyed, not typed)
        return False


@admin.register(PatientIdentity)
class PatientIdentityAdmin(admin.ModelAdmin):
    """Original identifiers: staff see them only for the projects they manage (superusers: all), read
    through ``identities_for_user``; only superusers change them."""

    list_display = ["patient", "project", "original_id", "original_name"]
    list_select_related = ["patient", "patient__project"]

    def get_queryset(self, request):
        return identities_for_user(request.user)

    @admin.display(ordering="patient__project__slug")
    def project(self, identity):
        return identity.patient.project

    def has_module_permission(self, request):
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        return user.is_superuser or Membership.objects.filter(user=user, role=Role.MANAGER).exists()

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return self.has_module_permission(request)
        return identities_for_user(request.user).filter(pk=obj.pk).exists()

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["id", "patient", "modality", "study_date", "project"]
    list_filter = ["modality", "project"]


class ScanSourceInline(admin.TabularInline):
    model = ScanSource
    extra = 0
    readonly_fields = ["sop_uid", "checksum"]
    exclude = ["project"]

    def get_exclude(self, request, obj=None):
        return [*self.exclude, *([] if request.user.is_superuser else ["checksum"])]

    def get_readonly_fields(self, request, obj=None):
        return _hide_secrets(request, self.readonly_fields)


@admin.register(Scan)
class ScanAdmin(_SecretsHidden):
    list_display = ["id", "modality", "name", "ndim", "shape", "burned_in_annotation", "project"]
    list_filter = ["modality", "source_format", "burned_in_annotation", "project"]
    search_fields = ["name", "series_uid", "series_description"]
    inlines = [ScanSourceInline]


@admin.register(Report)
class ReportAdmin(_SecretsHidden):
    list_display = ["external_id", "source", "study", "project"]
    list_filter = ["source", "project"]
    search_fields = ["external_id", "raw_text"]


class GazeAnatomyMaskInline(admin.TabularInline):
    model = GazeAnatomyMask
    extra = 0


@admin.register(GazeRecording)
class GazeRecordingAdmin(admin.ModelAdmin):
    list_display = ["external_id", "source_format", "reader", "fixation_count", "usable", "project"]
    list_filter = ["source_format", "usable", "project"]
    search_fields = ["external_id", "image_ref", "transcript_text"]
    inlines = [GazeAnatomyMaskInline]


@admin.register(ScanSource)
class ScanSourceAdmin(_SecretsHidden):
    list_display = ["id", "scan", "sop_uid", "checksum"]
    search_fields = ["sop_uid", "checksum"]
    raw_id_fields = ["scan"]


@admin.register(GazeAnatomyMask)
class GazeAnatomyMaskAdmin(admin.ModelAdmin):
    list_display = ["id", "recording", "name", "pixel_count"]
    list_filter = ["name"]
    raw_id_fields = ["recording"]
