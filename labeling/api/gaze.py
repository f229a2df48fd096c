"""Gaze labels: start runs (a Job for a project, synchronous for one recording), follow them, list and
fetch heatmaps (exact float32 ``.npy`` or PNG), sentences, anatomy records, region proposals; add an
anatomy mask from an annotation."""

import hashlib
import io

import numpy as np
from django.http import HttpResponse, HttpResponseNotModified
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.params import query_float
from core.models import Role
from core.selectors import project_get_for_user, role_require
from labeling import selectors
from labeling.api.gaze_serializers import (
    AnatomyMaskIn,
    AnatomyRecordOut,
    GazeHeatmapOut,
    GazeResultOut,
    GazeRunIn,
    GazeRunOut,
    GazeSentenceOut,
    RegionProposalOut,
)
from labeling.gaze.service import (
    gaze_heatmap_array,
    gaze_label_one,
    gaze_run_get_or_create,
    gaze_run_start,
    gaze_window_heatmap,
)
from labeling.models import GazeAnatomyRecord, GazeHeatmap, GazeSentence, RegionProposal
from studies.api.views import stored_file_response
from studies.ingest.types import IngestError
from studies.models import GazeAnatomyMask, GazeRecording
from studies.selectors import gaze_recording_get_for_user
from studies.services.gaze import anatomy_mask_set

WRITERS = [Role.MANAGER, Role.RESEARCHER]


def _filtered(qs, params, names: dict[str, str], integers: set[str]):
    for name, lookup in names.items():
        value = params.get(name)
        if value in (None, ""):
            continue
        if name in integers and not value.isdigit():
            raise ValidationError({name: "must be an integer id"})
        qs = qs.filter(**{lookup: value})
    return qs


class GazeRuns(APIView):
    """GET: the project's gaze label runs. POST: start (or resume) a run over the project's recordings or
    ``recording_ids`` with ``params`` (method auto|reflacx|egd|custom, lead_s, percentile, min_share,
    sigma_px, sigma_deg, duration_weighting, normalise, regions anatomy|fgcxr); 202 with the run (managers
    and researchers)."""

    @extend_schema(responses={200: GazeRunOut(many=True)})
    def get(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        return Response(
            GazeRunOut(selectors.gaze_runs_for_user(request.user).filter(project=project), many=True).data
        )

    @extend_schema(request=GazeRunIn, responses={202: GazeRunOut})
    def post(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, WRITERS, "managers and researchers")
        data = GazeRunIn(data=request.data)
        data.is_valid(raise_exception=True)
        ids = data.validated_data.get("recording_ids")
        if ids:
            known = set(
                GazeRecording.objects.filter(project=project, pk__in=ids).values_list("pk", flat=True)
            )
            if missing := sorted(set(ids) - known):
                raise ValidationError(
                    {"recording_ids": f"not gaze recordings of this project: {missing[:20]}"}
                )
        try:
            run = gaze_run_start(
                project=project, params=data.validated_data["params"], recording_ids=ids, user=request.user
            )
        except (ValueError, TypeError) as exc:
            raise ValidationError({"params": str(exc)}) from exc
        return Response(GazeRunOut(run).data, status=status.HTTP_202_ACCEPTED)


class GazeRunDetail(generics.RetrieveAPIView):
    serializer_class = GazeRunOut

    def get_object(self):
        return selectors.gaze_run_get_for_user(self.request.user, self.kwargs["pk"])


@extend_schema(parameters=[OpenApiParameter("status", str, enum=["done", "unusable", "failed"])])
class GazeRunResults(generics.ListAPIView):
    """One row per recording the run looked at: done (with the problems that weakened it), unusable or
    failed (with the reason)."""

    serializer_class = GazeResultOut

    def get_queryset(self):
        run = selectors.gaze_run_get_for_user(self.request.user, self.kwargs["pk"])
        return _filtered(
            selectors.gaze_results_for_user(self.request.user).filter(run=run),
            self.request.query_params,
            {"status": "status"},
            set(),
        )


class RecordingGazeLabels(APIView):
    """POST: label one recording now with ``params`` (the run of those parameters is created if needed;
    what it had for the recording is replaced). 200 with the result, sentences, anatomy records, heatmaps
    and proposals; unusable recordings answer 200 with ``status: unusable`` and the reason."""

    @extend_schema(request=GazeRunIn, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, pk: int):
        recording = gaze_recording_get_for_user(request.user, pk)
        role_require(request.user, recording.project, WRITERS, "managers and researchers")
        data = GazeRunIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            run = gaze_run_get_or_create(
                project=recording.project, params=data.validated_data["params"], user=request.user
            )
        except (ValueError, TypeError) as exc:
            raise ValidationError({"params": str(exc)}) from exc
        result = gaze_label_one(run=run, recording=recording)
        mine = {"run": run, "recording": recording}
        return Response(
            {
                "run": GazeRunOut(run).data,
                "result": GazeResultOut(result).data,
                "sentences": GazeSentenceOut(GazeSentence.objects.filter(**mine), many=True).data,
                "anatomy_records": AnatomyRecordOut(GazeAnatomyRecord.objects.filter(**mine), many=True).data,
                "heatmaps": GazeHeatmapOut(GazeHeatmap.objects.filter(**mine), many=True).data,
                "proposals": RegionProposalOut(
                    RegionProposal.objects.filter(gaze_run=run, recording=recording), many=True
                ).data,
            }
        )


class AnatomyMaskUpload(APIView):
    """POST multipart ``name`` + ``file``: an anatomy mask of the recording's image from an annotation (PNG at
    image resolution, non-zero = inside); replaces a mask of the same name. Managers, researchers and
    annotators."""

    parser_classes = [MultiPartParser, FormParser]
    upload_limit_setting = "MASK_UPLOAD_MAX_BYTES"  # core.uploads: 413 above it, before the body is read

    @extend_schema(request=AnatomyMaskIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, pk: int):
        recording = gaze_recording_get_for_user(request.user, pk)
        role_require(request.user, recording.project, [*WRITERS, Role.ANNOTATOR], "members who annotate")
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationError({"file": "attach the mask PNG as 'file'"})
        try:
            mask = anatomy_mask_set(
                recording=recording,
                name=request.data.get("name", ""),
                data=upload,
                filename=upload.name,
            )
        except IngestError as exc:
            raise ValidationError({exc.field or "file": f"{exc.file}: {exc.reason}"}) from exc
        return Response(
            {"id": mask.pk, "name": mask.name, "pixel_count": mask.pixel_count},
            status=status.HTTP_201_CREATED,
        )


_HEATMAP_FILTERS = {
    "run": "run_id",
    "recording": "recording_id",
    "kind": "kind",
    "anatomy": "anatomy",
    "sentence_index": "sentence_index",
}


@extend_schema(parameters=[OpenApiParameter(n, str) for n in _HEATMAP_FILTERS])
class GazeHeatmapList(generics.ListAPIView):
    serializer_class = GazeHeatmapOut

    def get_queryset(self):
        return _filtered(
            selectors.gaze_heatmaps_for_user(self.request.user),
            self.request.query_params,
            _HEATMAP_FILTERS,
            {"run", "recording", "sentence_index"},
        )


class GazeHeatmapArray(APIView):
    """The exact float32 heatmap, shape (height, width), as a NumPy ``.npy`` file (``numpy.load``),
    computed again from the recording and the run's parameters."""

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request, pk: int):
        found = selectors.gaze_heatmap_get_for_user(request.user, pk)
        out = io.BytesIO()
        np.save(out, gaze_heatmap_array(found))
        response = HttpResponse(out.getvalue(), content_type="application/octet-stream")
        response["Content-Disposition"] = f'inline; filename="gaze-heatmap-{found.pk}.npy"'
        return response


class GazeHeatmapPng(APIView):
    """The heatmap as a PNG: ``style=color`` (default, inferno scaled by the peak) or ``gray`` (8-bit
    grayscale, value = round(255 · map / peak): the form I-AI stores)."""

    @extend_schema(
        parameters=[OpenApiParameter("style", str, enum=["color", "gray"])],
        responses={(200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request, pk: int):
        found = selectors.gaze_heatmap_get_for_user(request.user, pk)
        style = request.query_params.get("style", "color")
        if style not in {"color", "gray"}:
            raise ValidationError({"style": "must be color or gray"})
        # Computing the map takes 0.25-0.65 s on a full radiograph; the review screen's gaze panel asks
        # for the same few again as the user moves between sentences: a browser that has it gets a 304.
        etag = _heatmap_etag(found, style)
        if etag in _if_none_match(request):
            return _cached_png(HttpResponseNotModified(), etag)
        array = gaze_heatmap_array(found)
        if style == "gray":
            from labeling.gaze.anatomy import to_uint8
            from labeling.gaze.worker import png

            return _cached_png(HttpResponse(png(to_uint8(array)), content_type="image/png"), etag)
        from labeling.gaze.render import heatmap_png

        return _cached_png(HttpResponse(heatmap_png(array), content_type="image/png"), etag)


def _heatmap_etag(found: GazeHeatmap, style: str) -> str:
    """What a stored heatmap's PNG depends on: the row (its run's parameters, windows and mask name are
    fixed once written), the style, and for a map inside an anatomy the recording's anatomy masks (a
    replaced mask is a new row)."""
    masks = []
    if found.mask:
        masks = sorted(
            GazeAnatomyMask.objects.filter(recording_id=found.recording_id).values_list("pk", flat=True)
        )
    return '"' + hashlib.sha256(f"{found.pk}:{found.run_id}:{style}:{masks}".encode()).hexdigest()[:32] + '"'


def _if_none_match(request) -> set[str]:
    header = request.headers.get("If-None-Match", "")
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _cached_png(response: HttpResponse, etag: str) -> HttpResponse:
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"  # kept by the browser, checked with the ETag each time
    return response


_WINDOW_PARAMS = [
    OpenApiParameter("method", str, enum=["auto", "reflacx", "egd", "custom"]),
    OpenApiParameter("start", float),
    OpenApiParameter("end", float),
    OpenApiParameter("sigma_px", float),
    OpenApiParameter("sigma_deg", float),
    OpenApiParameter("duration_weighting", bool),
    OpenApiParameter("normalise", str, enum=["sum", "max", "none"]),
    OpenApiParameter("output", str, enum=["npy", "png", "gray"]),
]


class RecordingHeatmap(APIView):
    """The heatmap of a recording, or of the time window ``start``..``end`` (seconds) of it, computed now:
    ``output=npy`` (float32 array, default), ``png`` (colour) or ``gray`` (8-bit); method and custom
    options as for gaze label runs (``method=auto``: the recording's own)."""

    @extend_schema(
        parameters=_WINDOW_PARAMS, responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}
    )
    def get(self, request, pk: int):
        recording = gaze_recording_get_for_user(request.user, pk)
        q = request.query_params
        fmt = q.get("output", "npy")
        if fmt not in {"npy", "png", "gray"}:
            raise ValidationError({"output": "must be npy, png or gray"})
        raw: dict = {}
        for name in ("start", "end", "sigma_px", "sigma_deg"):
            if (value := query_float(q, name)) is not None:
                raw[name] = value
        if q.get("duration_weighting") in {"false", "0"}:
            raw["duration_weighting"] = False
        if q.get("normalise"):
            raw["normalise"] = q["normalise"]
        try:
            array = gaze_window_heatmap(recording=recording, method=q.get("method", "auto"), **raw)
        except ValueError as exc:
            field = str(exc).split(":")[0] if ":" in str(exc) else "params"
            raise ValidationError({field: str(exc)}) from exc
        if fmt == "npy":
            out = io.BytesIO()
            np.save(out, array)
            return HttpResponse(out.getvalue(), content_type="application/octet-stream")
        from labeling.gaze.anatomy import to_uint8
        from labeling.gaze.render import heatmap_png
        from labeling.gaze.worker import png

        body = png(to_uint8(array)) if fmt == "gray" else heatmap_png(array)
        return HttpResponse(body, content_type="image/png")


@extend_schema(parameters=[OpenApiParameter(n, str) for n in ("run", "recording")])
class GazeSentenceList(generics.ListAPIView):
    serializer_class = GazeSentenceOut

    def get_queryset(self):
        return _filtered(
            selectors.gaze_sentences_for_user(self.request.user),
            self.request.query_params,
            {"run": "run_id", "recording": "recording_id"},
            {"run", "recording"},
        )


@extend_schema(parameters=[OpenApiParameter(n, str) for n in ("run", "recording", "anatomy")])
class AnatomyRecordList(generics.ListAPIView):
    """FG-CXR-style records: image (recording), anatomy, caption, heatmap, dwell, time to first fixation."""

    serializer_class = AnatomyRecordOut

    def get_queryset(self):
        return _filtered(
            selectors.anatomy_records_for_user(self.request.user),
            self.request.query_params,
            {"run": "run_id", "recording": "recording_id", "anatomy": "anatomy"},
            {"run", "recording"},
        )


class AnatomyFocusPng(APIView):
    """The record's intense-focus mask (1-bit PNG at image resolution)."""

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request, pk: int):
        record = selectors.anatomy_record_get_for_user(request.user, pk)
        return stored_file_response(
            record.focus_mask.name, filename=f"focus-{record.pk}.png", content_type="image/png"
        )


_PROPOSAL_FILTERS = {
    "project": "project__slug",
    "source": "source",
    "code": "code",
    "recording": "recording_id",
    "scan": "scan_id",
    "run": "gaze_run_id",
    "model_version": "model_version_id",
}


@extend_schema(parameters=[OpenApiParameter(n, str) for n in _PROPOSAL_FILTERS])
class RegionProposalList(generics.ListAPIView):
    """Box and mask proposals for findings, with their source and parameters."""

    serializer_class = RegionProposalOut

    def get_queryset(self):
        return _filtered(
            selectors.region_proposals_for_user(self.request.user),
            self.request.query_params,
            _PROPOSAL_FILTERS,
            {"recording", "scan", "run", "model_version"},
        )


class RegionProposalMask(APIView):
    """The proposal's mask: a 1-bit PNG (2D) or a gzipped uint8 NIfTI on the scan's grid (3D). With
    ``?encoding=http`` the NIfTI is sent as a plain ``.nii`` with ``Content-Encoding: gzip`` (the review
    screen's anatomy layers: the browser inflates it natively)."""

    @extend_schema(
        parameters=[OpenApiParameter("encoding", str, enum=["http"])],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request, pk: int):
        proposal = selectors.region_proposal_get_for_user(request.user, pk)
        nifti = proposal.mask.name.endswith(".nii.gz")
        if nifti and request.query_params.get("encoding") == "http":
            response = stored_file_response(
                proposal.mask.name,
                filename=f"proposal-{proposal.pk}.nii",
                content_type="application/octet-stream",
            )
            response["Content-Encoding"] = "gzip"
            return response
        return stored_file_response(
            proposal.mask.name,
            filename=f"proposal-{proposal.pk}" + (".nii.gz" if nifti else ".png"),
            content_type="application/gzip" if nifti else "image/png",
        )
