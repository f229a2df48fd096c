from django.contrib import admin

from ml.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "project", "task", "format", "status", "created_at"]
    list_filter = ["status", "task", "format", "project"]
    readonly_fields = ["checksum", "status", "error", "job", "created_at"]
