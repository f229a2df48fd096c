"""PACS endpoints, managers of the project only (pacs.selectors: everyone else 404). One thin view per
action; services raise ``ApplicationError`` (a source that fails: ``PacsError``, 4xx/5xx), mapped once."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from pacs import selectors, services
from pacs.api import serializers as s
from pacs.models import StoreBackStatus
from pacs.storeback import store_back_retry, store_back_sweep


def _spec(data) -> services.SourceSpec:
    given = s.PacsSourceIn(data=data)
    given.is_valid(raise_exception=True)
    return services.SourceSpec(**given.validated_data)


class SourceList(generics.ListAPIView):
    """GET: the project's DICOMweb sources (no credentials). POST: register one; it is checked first
    (one QIDO-RS query with its auth and TLS setting) and saved only when it answers."""

    serializer_class = s.PacsSourceOut

    def get_queryset(self):
        return selectors.sources_for_manager(self.request.user, self.kwargs["slug"])[1]

    @extend_schema(request=s.PacsSourceIn, responses={201: s.PacsSourceOut})
    def post(self, request, slug: str):
        project = selectors.project_for_pacs_manager(request.user, slug)
        source = services.source_create(project=project, spec=_spec(request.data), user=request.user)
        return Response(s.PacsSourceOut(source).data, status=status.HTTP_201_CREATED)


class SourceDetail(APIView):
    """GET, PATCH (checked again when the URL, auth or TLS setting changed), DELETE a source."""

    @extend_schema(responses={200: s.PacsSourceOut})
    def get(self, request, slug: str, pk: int):
        return Response(s.PacsSourceOut(selectors.source_get_for_manager(request.user, slug, pk)).data)

    @extend_schema(request=s.PacsSourceIn, responses={200: s.PacsSourceOut})
    def patch(self, request, slug: str, pk: int):
        source = selectors.source_get_for_manager(request.user, slug, pk)
        source = services.source_update(source=source, spec=_spec(request.data))
        return Response(s.PacsSourceOut(source).data)

    @extend_schema(responses={204: None})
    def delete(self, request, slug: str, pk: int):
        services.source_delete(source=selectors.source_get_for_manager(request.user, slug, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SourceCheck(APIView):
    """Check a source now (one QIDO-RS query): ``check_ok`` and ``check_message`` say how it went (a
    source that is down is the check's finding, answered 200)."""

    @extend_schema(request=None, responses={200: s.PacsSourceOut})
    def post(self, request, slug: str, pk: int):
        source = selectors.source_get_for_manager(request.user, slug, pk)
        return Response(s.PacsSourceOut(services.source_check_now(source=source)).data)


@extend_schema(
    parameters=[OpenApiParameter(n, str) for n in services.SEARCH_FIELDS],
    responses={200: s.PacsStudyOut(many=True)},
)
class SourceStudies(APIView):
    """Search the source's studies (QIDO-RS): ``?patient_id=&patient_name=&accession=&study_date=
    YYYYMMDD[-YYYYMMDD]&modality=&description=`` (names and descriptions match anywhere)."""

    def get(self, request, slug: str, pk: int):
        source = selectors.source_get_for_manager(request.user, slug, pk)
        filters = services.search_filters(request.query_params)
        found = services.studies_search(source=source, filters=filters)
        return Response(s.PacsStudyOut(found, many=True).data)


class ImportList(generics.ListAPIView):
    """GET: the project's imports, newest first. POST ``{"source", "study_uids", "modality"}``: import the
    studies as a job (progress in ``GET .../imports/<id>/`` and in the job)."""

    serializer_class = s.PacsImportOut

    def get_queryset(self):
        return selectors.imports_for_manager(self.request.user, self.kwargs["slug"])

    @extend_schema(request=s.PacsImportIn, responses={202: s.PacsImportOut})
    def post(self, request, slug: str):
        selectors.project_for_pacs_manager(request.user, slug)  # others: 404 before their input is read
        given = s.PacsImportIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        source = selectors.source_get_for_manager(request.user, slug, data["source"])
        created = services.import_create(
            source=source, study_uids=data["study_uids"], modality=data.get("modality", ""), user=request.user
        )
        return Response(s.PacsImportOut(created).data, status=status.HTTP_202_ACCEPTED)


class ImportDetail(generics.RetrieveAPIView):
    """An import: its job's status, progress, counts and errors, and the outcome per study."""

    serializer_class = s.PacsImportOut

    def get_object(self):
        return selectors.import_get_for_manager(self.request.user, self.kwargs["slug"], self.kwargs["pk"])


class StoreBackList(generics.ListAPIView):
    """GET: sends of accepted masks to the sources (``?status=pending|stored|failed``). POST: send what is
    due now (the beat does it every 5 minutes) and try failed sends again."""

    serializer_class = s.PacsStoreBackOut

    def get_queryset(self):
        qs = selectors.store_backs_for_manager(self.request.user, self.kwargs["slug"])
        wanted = self.request.query_params.get("status")
        return qs.filter(status=wanted) if wanted in StoreBackStatus.values else qs

    @extend_schema(request=None, responses={200: s.PacsStoreBackOut(many=True)})
    def post(self, request, slug: str):
        project = selectors.project_for_pacs_manager(request.user, slug)
        sent = store_back_sweep(project=project)
        failed = selectors.store_backs_for_manager(request.user, slug).filter(status=StoreBackStatus.FAILED)
        sent += [store_back_retry(record=r) for r in failed if r.pk not in {x.pk for x in sent}]
        return Response(s.PacsStoreBackOut(sent, many=True).data)
