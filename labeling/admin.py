from django.contrib import admin

from labeling.models import FindingProposal, LabelRun, RunReport


@admin.register(LabelRun)
class LabelRunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "labeler", "schema", "status", "total", "done", "failed", "proposals"]
    list_filter = ["labeler", "schema", "status", "project"]
    readonly_fields = ["settings_hash", "params"]


@admin.register(RunReport)
class RunReportAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "report", "ok", "proposals", "finished_at"]
    list_filter = ["ok"]
    raw_id_fields = ["run", "report"]


@admin.register(FindingProposal)
class FindingProposalAdmin(admin.ModelAdmin):
    list_display = ["id", "report", "code", "assertion", "laterality", "location", "size_mm", "run"]
    list_filter = ["code", "assertion", "project"]
    search_fields = ["phrase"]
    raw_id_fields = ["report", "run"]
