"""POST /api/projects/<slug>/uploads/: store the files and ingest them as a Job (202 + job)."""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.params import query_int
from core.api.serializers import JobOut
from core.errors import TooLarge
from core.models import Role
from core.selectors import project_get_for_user, role_require
from studies.api.serializers import UploadIn
from studies.services.uploads import UploadSpec, upload_create


class UploadCreate(APIView):
    """Upload scans (files or zip archives), optionally a report CSV and a gaze archive.

    Managers and researchers may upload. The answer is 202 with the job; follow it at
    ``/api/jobs/<id>/``. Bodies over ``UPLOAD_MAX_BYTES`` get 413 before anything is read, and so do
    requests of more than ``UPLOAD_MAX_FILES`` files (a CT may come one file per slice).
    """

    parser_classes = [MultiPartParser]
    upload_files_setting = "UPLOAD_MAX_FILES"  # core.uploads: 413 past it (other endpoints: 100 files)

    @extend_schema(request={"multipart/form-data": UploadIn}, responses={202: JobOut})
    def post(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, [Role.MANAGER, Role.RESEARCHER], "managers and researchers")
        length = query_int(request.META, "CONTENT_LENGTH", 0)
        if length > settings.UPLOAD_MAX_BYTES:  # core.uploads refuses it earlier; a second look costs nothing
            raise TooLarge(
                f"{length} bytes exceed the upload limit of {settings.UPLOAD_MAX_BYTES} bytes", field="body"
            )
        data = UploadIn(data=request.data)
        data.is_valid(raise_exception=True)
        spec = upload_spec(data.validated_data)
        job = upload_create(project=project, spec=spec, user=request.user)
        job.refresh_from_db()
        return Response(JobOut(job).data, status=status.HTTP_202_ACCEPTED)


def upload_spec(v: dict) -> UploadSpec:
    """The upload of ``UploadIn``'s validated data (also used by the console's upload page)."""
    options = {
        "modality": v.get("modality", ""),
        "study_pattern": v.get("study_pattern") or None,
        "report_id_column": v.get("report_id_column"),
        "report_text_columns": [c.strip() for c in v.get("report_text_columns", "").split(",") if c.strip()],
        "report_link": v.get("report_link", "id"),
        "report_link_pattern": v.get("report_link_pattern"),
        "gaze_format": v.get("gaze_format", "reflacx"),
    }
    return UploadSpec(
        files=v.get("files", []), reports_csv=v.get("reports"), gaze_archive=v.get("gaze"), options=options
    )
