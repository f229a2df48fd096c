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


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["pseudonym", "project", "date_shift_days", "created_at"]
    list_filter = ["project"]
    search_fields = ["pseudonym"]
    exclude = ["identity_hash"]


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


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
    list_display = ["id", "modality", "name", "ndim", "shape", "burned_in_annotation", "project"]
    list_filter = ["modality", "source_format", "burned_in_annotation", "project"]
    search_fields = ["name", "series_uid", "series_description"]
    inlines = [ScanSourceInline]


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
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
class ScanSourceAdmin(admin.ModelAdmin):
    list_display = ["id", "scan", "sop_uid", "checksum"]
    search_fields = ["sop_uid", "checksum"]
    raw_id_fields = ["scan"]


@admin.register(GazeAnatomyMask)
class GazeAnatomyMaskAdmin(admin.ModelAdmin):
    list_display = ["id", "recording", "name", "pixel_count"]
    list_filter = ["name"]
    raw_id_fields = ["recording"]
