"""Datasets, releases (freeze, manifest, card, diff) and exports (as jobs; files, one archive)."""

from __future__ import annotations

import zipfile

from django.core.files.storage import default_storage
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.params import query_int
from core.api.serializers import JobOut
from core.errors import ApplicationError, Forbidden, NotFound
from core.models import Role
from core.selectors import projects_for_user, user_has_role
from releases import selectors, services
from releases.models import Dataset, DatasetRelease, ReleaseExport
from studies.api.views import stored_file_response

WRITERS = [Role.MANAGER, Role.RESEARCHER]


class DatasetOut(serializers.ModelSerializer):
    projects = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    releases = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = ["slug", "name", "description", "licence", "citation", "projects", "releases", "created_at"]

    def get_releases(self, obj) -> list[dict]:
        return [
            {"id": r.pk, "version": r.version, "status": r.status}
            for r in obj.releases.order_by("-version").only("pk", "version", "status")
        ]


class DatasetIn(serializers.Serializer):
    slug = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    licence = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    citation = serializers.CharField(required=False, allow_blank=True, default="")
    projects = serializers.ListField(child=serializers.SlugField(), min_length=1)


class DatasetList(generics.ListCreateAPIView):
    """Datasets whose every project you may read; POST (managers and researchers of every project named)
    makes one."""

    serializer_class = DatasetOut

    def get_queryset(self):
        return selectors.datasets_for_user(self.request.user).prefetch_related("projects").order_by("slug")

    @extend_schema(request=DatasetIn, responses={201: DatasetOut})
    def post(self, request):
        data = DatasetIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        projects = list(projects_for_user(request.user).filter(slug__in=v["projects"]))
        missing = sorted(set(v["projects"]) - {p.slug for p in projects})
        if missing:
            raise ApplicationError(f"no project {missing[0]!r} of yours", field="projects")
        if not all(user_has_role(request.user, p, WRITERS) for p in projects):
            raise Forbidden("Only managers and researchers of every project named may make a dataset.")
        dataset = services.dataset_create(
            slug=v["slug"], name=v["name"], projects=projects, user=request.user,
            description=v["description"], licence=v["licence"], citation=v["citation"],
        )  # fmt: skip
        return Response(DatasetOut(dataset).data, status=status.HTTP_201_CREATED)


class DatasetDetail(APIView):
    @extend_schema(responses={200: DatasetOut})
    def get(self, request, slug: str):
        return Response(DatasetOut(selectors.dataset_get_for_user(request.user, slug)).data)


class ReleaseOut(serializers.ModelSerializer):
    dataset = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)
    job = JobOut(read_only=True)

    class Meta:
        model = DatasetRelease
        fields = [
            "id",
            "dataset",
            "version",
            "status",
            "selection",
            "notes",
            "manifest_sha256",
            "counts",
            "metrics",
            "classes",
            "error",
            "job",
            "created_by",
            "created_at",
            "frozen_at",
        ]


class ReleaseIn(serializers.Serializer):
    statuses = serializers.ListField(child=serializers.CharField(), required=False)
    sources = serializers.JSONField(required=False, help_text='"human", "weak", "both" or a list')
    seed = serializers.IntegerField(required=False, default=0)
    ratios = serializers.DictField(child=serializers.FloatField(), required=False)
    modalities = serializers.ListField(
        child=serializers.CharField(max_length=16), required=False, help_text="scans of these modalities only"
    )
    anatomy = serializers.ChoiceField(
        choices=("context", "findings", "none"),
        required=False,
        help_text="anatomy masks of generators and models: context labels (default), finding classes, or "
        "left out",
    )
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class DatasetReleases(APIView):
    """GET: the dataset's releases. POST: freeze the next version (accepted, human-reviewed labels by
    default) as a job: 202 with the release (``building``, its version reserved) and its job; the release is
    ``frozen`` when the job succeeds, ``failed`` with the reason (e.g. a missing file) when not. 400 naming
    the field when the selection is invalid or holds nothing."""

    @extend_schema(responses={200: ReleaseOut(many=True)})
    def get(self, request, slug: str):
        dataset = selectors.dataset_get_for_user(request.user, slug)
        return Response(ReleaseOut(dataset.releases.order_by("-version"), many=True).data)

    @extend_schema(request=ReleaseIn, responses={202: ReleaseOut})
    def post(self, request, slug: str):
        dataset = selectors.dataset_get_for_user(request.user, slug, write=True)
        data = ReleaseIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = dict(data.validated_data)
        notes = v.pop("notes")
        release = services.release_start(dataset=dataset, selection=v, user=request.user, notes=notes)
        release.refresh_from_db()
        return Response(ReleaseOut(release).data, status=status.HTTP_202_ACCEPTED)


class ReleaseDetail(APIView):
    @extend_schema(responses={200: ReleaseOut})
    def get(self, request, pk: int):
        return Response(ReleaseOut(selectors.release_get_for_user(request.user, pk)).data)


class ReleaseManifest(APIView):
    """The frozen manifest: every file with its sha256, every label with its provenance."""

    @extend_schema(responses={(200, "application/json"): OpenApiTypes.BINARY})
    def get(self, request, pk: int):
        release = selectors.release_get_for_user(request.user, pk)
        name = f"{release.dataset.slug}-v{release.version}-manifest.json"
        return stored_file_response(release.manifest.name, filename=name, content_type="application/json")


class ReleaseCard(APIView):
    """The dataset card (Markdown), the README.md of every export."""

    @extend_schema(responses={(200, "text/markdown"): OpenApiTypes.STR})
    def get(self, request, pk: int):
        return HttpResponse(
            selectors.release_get_for_user(request.user, pk).card, content_type="text/markdown; charset=utf-8"
        )


class ReleaseDiff(APIView):
    """Cases and labels added, removed and changed since ``against`` (a version; default the previous)."""

    @extend_schema(parameters=[OpenApiParameter("against", int)], responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk: int):
        release = selectors.release_get_for_user(request.user, pk)
        old = None
        version = query_int(request.query_params, "against")
        if version is not None:
            old = release.dataset.releases.filter(version=version).first()
            if old is None:
                raise ApplicationError(f"{release.dataset.slug} has no version {version}", field="against")
        return Response(services.release_diff(release, old))


class ExportOut(serializers.ModelSerializer):
    job = JobOut(read_only=True)
    release = serializers.IntegerField(source="release_id", read_only=True)

    class Meta:
        model = ReleaseExport
        fields = [
            "id",
            "release",
            "format",
            "status",
            "prefix",
            "file_count",
            "bytes",
            "summary",
            "error",
            "job",
            "created_at",
        ]


class ExportIn(serializers.Serializer):
    format = serializers.CharField()


class ReleaseExports(APIView):
    """GET: the release's exports. POST ``{"format": ...}``: export as a job on the ``default`` queue
    (202); 400 when the format cannot hold the release's labels."""

    @extend_schema(responses={200: ExportOut(many=True)})
    def get(self, request, pk: int):
        release = selectors.release_get_for_user(request.user, pk)
        return Response(ExportOut(release.exports.select_related("job"), many=True).data)

    @extend_schema(request=ExportIn, responses={202: ExportOut})
    def post(self, request, pk: int):
        release = selectors.release_get_for_user(request.user, pk)
        data = ExportIn(data=request.data)
        data.is_valid(raise_exception=True)
        export = services.export_start(
            release=release, fmt_name=data.validated_data["format"], user=request.user
        )
        export.refresh_from_db()
        return Response(ExportOut(export).data, status=status.HTTP_202_ACCEPTED)


class ExportDetail(APIView):
    @extend_schema(responses={200: ExportOut})
    def get(self, request, pk: int):
        return Response(ExportOut(selectors.export_get_for_user(request.user, pk)).data)


class ExportFile(APIView):
    """One file of a finished export, by its path in the export (``SHA256SUMS`` lists them all)."""

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request, pk: int, path: str):
        export = selectors.export_get_for_user(request.user, pk)
        parts = path.split("/")
        if export.status != "succeeded" or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise NotFound("No such file in this export.", field="path")
        return stored_file_response(
            f"{export.prefix}/{path}", filename=parts[-1], content_type="application/octet-stream"
        )


def export_listing(prefix: str):
    """(relpath, size, sha256) of every file of an export, read from its stored ``SHA256SUMS`` line by
    line, then ``SHA256SUMS`` itself."""
    key = f"{prefix}/SHA256SUMS"
    with default_storage.open(key, "rb") as fh:
        for line in fh:
            digest, relpath = line.decode("utf-8").rstrip("\n").split("  ", 1)
            yield relpath, None, digest
    yield "SHA256SUMS", default_storage.size(key), None


class _Pipe:
    """A write-only file for ``zipfile`` that hands its bytes to a generator."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks = []
        return out


def zip_stream(prefix: str, files, folder: str):
    """The export as one zip, built while it is sent: memory holds one chunk, not the archive."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for relpath, _size, _sha in files:
            info = zipfile.ZipInfo(f"{folder}/{relpath}")
            info.compress_type = zipfile.ZIP_DEFLATED if not relpath.endswith(".gz") else zipfile.ZIP_STORED
            with (
                default_storage.open(f"{prefix}/{relpath}", "rb") as src,
                archive.open(info, "w", force_zip64=True) as dst,
            ):
                while block := src.read(1 << 20):
                    dst.write(block)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()


class ExportArchive(APIView):
    """The whole export as one zip archive, streamed."""

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request, pk: int):
        export = selectors.export_get_for_user(request.user, pk)
        if export.status != "succeeded":
            raise NotFound(f"The export is {export.status}, not finished.")
        folder = f"{export.release.dataset.slug}-v{export.release.version}-{export.format}"
        response = StreamingHttpResponse(
            zip_stream(export.prefix, export_listing(export.prefix), folder), content_type="application/zip"
        )
        response["Content-Disposition"] = f'attachment; filename="{folder}.zip"'
        return response
