"""Findings over the API: made from proposals (managers), added by hand (annotators), listed with their
filters, their history, and a version's mask file. Thin views: reads through ``annotation.selectors``,
changes through ``annotation.services``."""

from django.core.files.storage import default_storage
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors, services
from annotation.api.cases import case_payload
from annotation.api.serializers import FindingIn, FindingOut, HistoryOut, ReadingOut
from annotation.api.tasks import ANNOTATORS
from core.api.params import query_choice, query_int
from core.errors import ApplicationError, NotFound
from core.models import Role
from core.selectors import project_get_for_user, project_ids_for_slug, role_require
from studies.api.views import stored_file_response
from studies.masks import MaskError, centroid_of, gzip_member, mask_index_sums, mask_read, mask_runs


class FindingsFromProposals(APIView):
    """POST: a finding and a review task for every entity the newest label run's present finding
    proposals name (mentions of one entity merged into one finding with several spans) that has none
    yet, each starting from the region proposal that fits it; findings still waiting with no version get
    a start from proposals that arrived since (managers). 201 with ``created``, ``started``, ``merged``,
    ``attached``, ``rules`` (how many starts each rule chose) and ``with_context``."""

    @extend_schema(request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, [Role.MANAGER], "managers")
        made = services.findings_made(project=project, user=request.user)
        return Response(made.as_dict(), status=status.HTTP_201_CREATED)


class FindingCreate(APIView):
    """POST: add a finding the proposals missed (annotators); it gets an annotate task held by you."""

    @extend_schema(request=FindingIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, ANNOTATORS, "annotators")
        data = FindingIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        study = selectors.study_get_in_project(project, v["study_id"])
        scan = selectors.scan_get_in_project(project, v["scan_id"]) if v.get("scan_id") is not None else None
        task = services.finding_create(
            project=project,
            user=request.user,
            study=study,
            scan=scan,
            text=v["text"],
            code=v["code"],
            section=v["section"],
            start=v.get("start"),
            end=v.get("end"),
        )
        payload = case_payload(selectors.task_get_for_user(request.user, task.pk))
        reading = selectors.reading_of_finding(request.user, task.finding_id)
        if reading is not None:  # several readers: its author holds reading 1
            payload["reading"] = ReadingOut(reading).data
        return Response(payload, status=status.HTTP_201_CREATED)


FINDING_FILTERS = {
    "project": "project__slug",
    "status": "status",
    "code": "code",
    "scan": "scan_id",
    "study": "study_id",
    "stage": "task__stage",
}


@extend_schema(parameters=[OpenApiParameter(n, str) for n in FINDING_FILTERS])
class FindingList(generics.ListAPIView):
    """Findings of your projects (researchers: accepted ones only), with their spans and code names."""

    serializer_class = FindingOut

    def get_queryset(self):
        qs = selectors.with_spans(selectors.findings_for_user(self.request.user))
        query = self.request.query_params
        for name, lookup in FINDING_FILTERS.items():
            value = query.get(name)
            if value in (None, ""):
                continue
            if name == "project":
                qs = qs.filter(project_id__in=project_ids_for_slug(self.request.user, value))
            else:
                qs = qs.filter(**{lookup: query_int(query, name) if name in ("scan", "study") else value})
        return qs.order_by("id")


@extend_schema(parameters=[OpenApiParameter("finding", int), OpenApiParameter("user", str)])
class HistoryList(generics.ListAPIView):
    """The history, per finding (``finding``) or per user (``user`` = username)."""

    serializer_class = HistoryOut

    def get_queryset(self):
        qs = selectors.history_for_user(self.request.user).select_related("user")
        q = self.request.query_params
        if q.get("finding"):
            qs = qs.filter(finding_id=query_int(q, "finding"))
        if q.get("user"):
            qs = qs.filter(user__username=q["user"])
        return qs.order_by("at", "id")


class AnnotationMask(APIView):
    """A version's mask as stored (``studies/masks.py``): PNG (2D, width = X, height = Y), or gzipped NIfTI
    (3D). With ``?encoding=http`` the NIfTI is sent as a plain ``.nii`` with ``Content-Encoding: gzip``,
    so a browser inflates it natively (the review screen: inflating 78 M voxels in JavaScript took ~20 s).

    ``?encoding=runs`` (the review screen): the mask's runs of set voxels in the stored voxel order, X
    fastest (``studies.masks.mask_runs``), as little-endian uint32 ``(start, length)`` pairs with
    ``Content-Encoding: gzip``; headers ``X-Mask-Shape`` (``X,Y[,Z]``), ``X-Mask-Voxels`` (set voxels),
    ``X-Mask-Sums`` (per axis, the sum of their indices: the centroid in any flip of the axes),
    ``X-Mask-Centroid`` (its voxel indices, rounded half up; empty for an empty mask) and ``X-Mask-Runs``.
    The right lung of a 512×512×255 CT: 0.12 MB where the gzipped NIfTI is 0.59 MB, and no 67 MB NIfTI for
    the browser to parse, reorient and count."""

    @extend_schema(
        parameters=[OpenApiParameter("encoding", str, enum=["file", "http", "runs"])],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request, pk: int):
        found = selectors.annotation_get_for_user(request.user, pk)
        if not found.mask:
            raise NotFound("This version has no mask (it is a box or points).")
        encoding = query_choice(request.query_params, "encoding", ["file", "http", "runs"], "file")
        if encoding == "runs":
            return mask_runs_response(found.mask.name)
        nifti = found.mask.name.endswith(".nii.gz")
        if nifti and encoding == "http":
            response = stored_file_response(
                found.mask.name,
                filename=f"annotation-{found.pk}.nii",
                content_type="application/octet-stream",
            )
            response["Content-Encoding"] = "gzip"
            return response
        return stored_file_response(
            found.mask.name,
            filename=f"annotation-{found.pk}" + (".nii.gz" if nifti else ".png"),
            content_type="application/gzip" if nifti else "image/png",
        )


def mask_runs_response(key: str) -> HttpResponse:
    """A stored mask as gzipped runs (``AnnotationMask``'s ``?encoding=runs``; not ``?format=``, which
    DRF keeps for choosing a renderer)."""
    if not default_storage.exists(key):
        raise Http404("The file is missing from storage.")
    try:
        mask = mask_read(key)
    except MaskError as exc:
        raise ApplicationError(f"the stored mask cannot be read: {exc.reason}", field="mask") from exc
    runs = mask_runs(mask)
    voxels, sums = mask_index_sums(mask)
    response = HttpResponse(gzip_member(runs), content_type="application/octet-stream")
    response["Content-Encoding"] = "gzip"
    response["X-Mask-Shape"] = ",".join(str(n) for n in mask.shape)
    response["X-Mask-Voxels"] = str(voxels)
    response["X-Mask-Sums"] = ",".join(str(total) for total in sums)
    response["X-Mask-Centroid"] = ",".join(str(v) for v in centroid_of(voxels, sums) or [])
    response["X-Mask-Runs"] = str(len(runs))
    return response
