"""Scan file endpoints: the canonical NIfTI, a slice or radiograph as PNG (windowed), the thumbnail."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.views import APIView

from core.storage import storage_local_copy
from studies.api.views import stored_file_response
from studies.selectors import scan_get_for_user


class ScanNifti(APIView):
    """The scan's canonical NIfTI file (``.nii``, or ``.nii.gz`` where the deployment compresses them;
    voxel-to-RAS affine in its header). With ``?encoding=http`` a ``.nii.gz`` is sent as the ``.nii`` it
    holds with ``Content-Encoding: gzip`` (the stored bytes as they are), so that a browser inflates it
    natively rather than in JavaScript (the review screen; a ``.nii`` is sent as it is)."""

    @extend_schema(
        parameters=[OpenApiParameter("encoding", str, enum=["http"])],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request, pk: int):
        scan = scan_get_for_user(request.user, pk)
        gz = scan.file.name.endswith(".gz")
        if gz and request.query_params.get("encoding") == "http":
            response = stored_file_response(
                scan.file.name, filename=f"scan-{scan.pk}.nii", content_type="application/octet-stream"
            )
            response["Content-Encoding"] = "gzip"
            return response
        return stored_file_response(
            scan.file.name,
            filename=f"scan-{scan.pk}.nii" + (".gz" if gz else ""),
            content_type="application/gzip" if gz else "application/octet-stream",
        )


class ScanThumbnail(APIView):
    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request, pk: int):
        scan = scan_get_for_user(request.user, pk)
        return stored_file_response(
            scan.thumbnail.name, filename=f"scan-{scan.pk}.png", content_type="image/png"
        )


class ScanPng(APIView):
    """One slice of a 3D scan, or a radiograph, as an 8-bit PNG.

    ``axis`` axial|coronal|sagittal, ``index`` slice number (default: middle), and a window: either
    ``window`` = lung|mediastinum|bone|brain or ``center`` and ``width`` (in stored units, HU for CT);
    without one the 1st–99th percentile range is shown.
    """

    @extend_schema(
        parameters=[
            OpenApiParameter("axis", str, enum=["axial", "coronal", "sagittal"]),
            OpenApiParameter("index", int),
            OpenApiParameter("window", str, enum=["lung", "mediastinum", "bone", "brain"]),
            OpenApiParameter("center", float),
            OpenApiParameter("width", float),
        ],
        responses={(200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request, pk: int):
        scan = scan_get_for_user(request.user, pk)
        from studies.ingest.volume_io import nifti_read_slice, render_png, window_presets

        q = request.query_params
        axis = q.get("axis", "axial")
        if axis not in {"axial", "coronal", "sagittal"}:
            raise ValidationError({"axis": "must be axial, coronal or sagittal"})
        index = _number(q, "index", int)
        center, width = _number(q, "center", float), _number(q, "width", float)
        if q.get("window"):
            if q["window"] not in window_presets:
                raise ValidationError({"window": f"must be one of {', '.join(window_presets)}"})
            center, width = window_presets[q["window"]]
        if (center is None) != (width is None):
            raise ValidationError({"width": "give both center and width, or neither"})
        if width is not None and width <= 0:
            raise ValidationError({"width": "must be positive"})
        if index is not None and scan.ndim == 3:
            size = {"axial": scan.shape[2], "coronal": scan.shape[1], "sagittal": scan.shape[0]}[axis]
            if not 0 <= index < size:
                raise ValidationError({"index": f"must be in 0..{size - 1} for the {axis} axis"})
        with storage_local_copy(scan.file.name) as path:
            image = nifti_read_slice(path, axis=axis, index=index)
        png = render_png(image, center=center, width=width)
        return HttpResponse(png, content_type="image/png")


def _number(params, name: str, kind):
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        return kind(value)
    except ValueError as exc:
        raise ValidationError({name: f"must be a {kind.__name__}"}) from exc
