"""Read endpoints for patients, studies, scans, reports and gaze recordings, and the identity map.

Every object comes from a selector that checks the caller's project membership (others': 404).
List filters: ``?project=<slug>`` on all; ``?patient=``, ``?modality=`` on studies; ``?study=``,
``?modality=``, ``?ndim=`` on scans; ``?study=`` on reports; ``?scan=`` on gaze recordings.
"""

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.exceptions import ValidationError

from studies import selectors
from studies.api import serializers as s

_FILTERS = {
    "project": "project__slug",
    "patient": "patient_id",
    "study": "study_id",
    "scan": "scan_id",
    "modality": "modality__iexact",
    "ndim": "ndim",
}


def _filtered(request, qs, allowed: tuple[str, ...]):
    for name in allowed:
        value = request.query_params.get(name)
        if value not in (None, ""):
            if name in {"patient", "study", "scan", "ndim"} and not value.isdigit():
                raise ValidationError({name: "must be an integer id"})
            qs = qs.filter(**{_FILTERS[name]: value})
    return qs


def _params(*names: str) -> list[OpenApiParameter]:
    return [OpenApiParameter(n, str, description=f"filter by {n}") for n in names]


@extend_schema(parameters=_params("project"))
class PatientList(generics.ListAPIView):
    serializer_class = s.PatientOut

    def get_queryset(self):
        return _filtered(self.request, selectors.patients_for_user(self.request.user), ("project",))


class PatientDetail(generics.RetrieveAPIView):
    serializer_class = s.PatientOut

    def get_object(self):
        return selectors.patient_get_for_user(self.request.user, self.kwargs["pk"])


@extend_schema(parameters=_params("project", "patient", "modality"))
class StudyList(generics.ListAPIView):
    serializer_class = s.StudyOut

    def get_queryset(self):
        qs = selectors.studies_for_user(self.request.user)
        return _filtered(self.request, qs, ("project", "patient", "modality"))


class StudyDetail(generics.RetrieveAPIView):
    serializer_class = s.StudyOut

    def get_object(self):
        return selectors.study_get_for_user(self.request.user, self.kwargs["pk"])


@extend_schema(parameters=_params("project", "study", "modality", "ndim"))
class ScanList(generics.ListAPIView):
    serializer_class = s.ScanOut

    def get_queryset(self):
        qs = selectors.scans_for_user(self.request.user)
        return _filtered(self.request, qs, ("project", "study", "modality", "ndim"))


class ScanDetail(generics.RetrieveAPIView):
    serializer_class = s.ScanOut

    def get_object(self):
        return selectors.scan_get_for_user(self.request.user, self.kwargs["pk"])


@extend_schema(parameters=_params("project", "study"))
class ReportList(generics.ListAPIView):
    serializer_class = s.ReportOut

    def get_queryset(self):
        return _filtered(self.request, selectors.reports_for_user(self.request.user), ("project", "study"))


class ReportDetail(generics.RetrieveAPIView):
    serializer_class = s.ReportOut

    def get_object(self):
        return selectors.report_get_for_user(self.request.user, self.kwargs["pk"])


@extend_schema(parameters=_params("project", "scan"))
class GazeRecordingList(generics.ListAPIView):
    """Gaze recordings without their fixations (fetch one recording for those)."""

    serializer_class = s.GazeRecordingOut

    def get_queryset(self):
        qs = selectors.gaze_recordings_for_user(self.request.user).defer("fixations", "transcript")
        return _filtered(self.request, qs, ("project", "scan"))


class GazeRecordingDetail(generics.RetrieveAPIView):
    serializer_class = s.GazeRecordingDetailOut

    def get_object(self):
        return selectors.gaze_recording_get_for_user(self.request.user, self.kwargs["pk"])


class IdentityMap(generics.ListAPIView):
    """The original-to-pseudonym map of a project, with each patient's date shift (kept only if the
    project says so: empty otherwise): managers only. No other endpoint shows a date shift."""

    serializer_class = s.IdentityOut

    def get_queryset(self):
        _, qs = selectors.identity_map_for_manager(self.request.user, self.kwargs["slug"])
        return qs


def stored_file_response(key: str, *, filename: str, content_type: str) -> FileResponse:
    if not key or not default_storage.exists(key):
        raise Http404("The file is missing from storage.")
    return FileResponse(
        default_storage.open(key, "rb"), as_attachment=False, filename=filename, content_type=content_type
    )
