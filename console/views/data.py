"""Uploads (through the API's own upload service and its checks) and the project's jobs with progress."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect
from django.urls import reverse
from django.views import View

from console.selectors import project_jobs
from console.views.base import allow, back_to, console_page, render_page, serializer_messages
from core.models import Role
from core.selectors import job_get_for_user, role_require
from studies.api.serializers import UploadIn
from studies.api.uploads import upload_spec
from studies.services.uploads import upload_create

UPLOAD_FIELDS = ("modality", "study_pattern", "report_id_column", "report_text_columns", "report_link",
                 "report_link_pattern", "gaze_format")  # fmt: skip
INGEST_KINDS = ("ingest_upload",)


@allow("get", "post")
@console_page("console-uploads")
def uploads_page(request, project):
    """GET: the upload form and the project's upload jobs. POST (multipart): scan files and/or zip
    archives (``files``), a report CSV (``reports``) and a gaze archive (``gaze``) with the API's options;
    stored, then ingested as a job whose page shows its progress."""
    if request.method == "POST":
        role_require(request.user, project, [Role.MANAGER, Role.RESEARCHER], "managers and researchers")
        data = {k: request.POST[k] for k in UPLOAD_FIELDS if request.POST.get(k, "") != ""}
        data["files"] = request.FILES.getlist("files")
        for name in ("reports", "gaze"):
            if name in request.FILES:
                data[name] = request.FILES[name]
        checked = UploadIn(data=data)
        if not checked.is_valid():
            for line in serializer_messages(checked.errors):
                messages.error(request, line if ":" in line else f"files: {line}")
            return back_to("console-uploads", project.slug)
        spec = upload_spec(checked.validated_data)
        count = len(spec.files)
        job = upload_create(project=project, spec=spec, user=request.user)
        messages.success(
            request, f"Upload of {count} file{'s' if count != 1 else ''} received: job {job.pk}."
        )
        return HttpResponseRedirect(reverse("console-job", args=[project.slug, job.pk]))
    jobs = project_jobs(request.user, project, kinds=INGEST_KINDS).order_by("-id")[:20]
    return render_page(request, project, "console/uploads.html", {"jobs": jobs}, tool="uploads")


class UploadPage(View):
    """The upload page as a class, so that the request-size middleware applies the scan upload's file
    count limit (``UPLOAD_MAX_FILES``: a CT may come one file per slice) as it does for the API."""

    upload_files_setting = "UPLOAD_MAX_FILES"

    def get(self, request, slug: str):
        return uploads_page(request, slug)

    def post(self, request, slug: str):
        return uploads_page(request, slug)


@allow("get")
@console_page()
def jobs_page(request, project):
    """Every job of the project, newest first, 50 a page."""
    pages = Paginator(project_jobs(request.user, project).order_by("-id"), 50)
    page = pages.get_page(request.GET.get("page"))
    return render_page(request, project, "console/jobs.html", {"page": page}, tool="jobs")


@allow("get")
@console_page()
def job_page(request, project, job_id: int):
    """One job: its progress (followed in the page), counts, per-file errors and summary."""
    job = job_get_for_user(request.user, job_id)
    if job.project_id != project.pk:
        raise Http404("No such job in this project.")
    result = job.result if isinstance(job.result, dict) else {}
    summary = {k: v for k, v in result.items() if isinstance(v, (str, int, float, bool)) and k != "pid"}
    errors = [  # file and reason only: a stored traceback is the log's, never a user's
        {"file": e.get("file", ""), "reason": e.get("reason", "")}
        for e in job.errors or []
        if isinstance(e, dict) and e.get("reason")
    ]
    context = {"job": job, "summary": summary, "errors": errors}
    return render_page(request, project, "console/job.html", context, tool="jobs")
