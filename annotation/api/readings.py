"""Several readers per finding: the next reading, a reading's case as its reader sees it, saves and
decisions, and the project's agreement (``annotation/readers.py``)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import readers, selectors
from annotation.api.cases import case_payload
from annotation.api.serializers import AnnotationIn, AnnotationOut, ReadingOut
from annotation.api.tasks import ANNOTATORS, save_version
from annotation.models import Reading
from core.models import Role
from core.selectors import project_get_for_user, role_require, user_has_role

AGREEMENT_READERS = [Role.MANAGER, Role.RADIOLOGIST, Role.RESEARCHER]

# --- several readers per finding ------------------------------------------------------------------------


def reading_payload(reading: Reading) -> dict:
    """The case as one reader sees it: the case screen's payload with only the proposal's version and the
    reader's own (never another reader's), ``finding.current_version`` = the reader's own current version
    (what ``base_version`` names), and the reading."""
    task = reading.finding.task
    task.finding = reading.finding
    payload = case_payload(task, versions=readers.reading_versions(reading))
    current = readers.reading_current(reading)
    mine = current.version if current else 0
    payload["finding"]["current_version"] = mine
    for sibling in payload["findings"]:
        if sibling["id"] == reading.finding_id:
            sibling["current_version"] = mine
    payload["reading"] = ReadingOut(reading).data
    return payload


class NextReading(APIView):
    """GET (annotators): take the next reading (one you hold, else a free one of a finding you have not
    read) and return its case as you see it: the proposal and your own versions only; 204 when none."""

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 204: None})
    def get(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, ANNOTATORS, "annotators")
        reading = readers.reading_next(project=project, user=request.user)
        if reading is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(reading_payload(selectors.reading_get_for_user(request.user, reading.pk)))


class ReadingDetail(APIView):
    """GET: your reading's case (the proposal and your own versions only); 404 for another's reading."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk: int):
        return Response(reading_payload(selectors.reading_get_for_user(request.user, pk)))


class ReadingAnnotations(APIView):
    """POST: save a new version of your reading (the body of a task's annotations: JSON for box/points,
    multipart for a mask file), naming ``base_version``: your own current version (the reading payload's
    ``finding.current_version``). 201 with the version; 409 when you saved since or the lease is not
    yours; 400 naming the field for a bad mask, box or points."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]
    upload_limit_setting = "MASK_UPLOAD_MAX_BYTES"  # core.uploads: 413 above it, before the body is read

    @extend_schema(
        request=AnnotationIn,
        responses={201: AnnotationOut, 400: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT},
    )
    def post(self, request, pk: int):
        reading = selectors.reading_get_for_user(request.user, pk)
        return save_version(
            request, reading.project, reading.finding.scan, readers.reading_save, reading_id=reading.pk
        )


class ReadingSubmitIn(serializers.Serializer):
    decision = serializers.ChoiceField(["accept", "reject"], help_text="accept: the finding is there")
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class ReadingSubmit(APIView):
    """POST ``{decision: accept|reject}`` (annotators): submit your reading. The last reading of a finding
    makes its consensus and sends it to review (the reading's ``stage``). 400 naming the field (an empty
    version cannot be accepted), 409 when the lease is not yours."""

    @extend_schema(
        request=ReadingSubmitIn,
        responses={200: ReadingOut, 400: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT},
    )
    def post(self, request, pk: int):
        reading = selectors.reading_get_for_user(request.user, pk)
        role_require(request.user, reading.project, ANNOTATORS, "annotators")
        data = ReadingSubmitIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        readers.reading_submit(
            reading_id=reading.pk, user=request.user, decision=v["decision"], comment=v["comment"]
        )
        return Response(ReadingOut(selectors.reading_get_for_user(request.user, reading.pk)).data)


class ProjectAgreement(APIView):
    """GET (managers, radiologists, researchers): agreement of the readers. ``project``: Fleiss' kappa of
    the accept / reject decisions over the findings read by ``readers_per_finding`` readers (Cohen's kappa,
    reading 1 against reading 2, when that is 2), mean Dice and IoU; ``annotators``: findings read and
    accepted, mean Dice and IoU against the other readers of the same finding; ``findings``: per finding
    with a consensus, its readers (decision, version, mean Dice and IoU), pairwise Dice and IoU of the
    accepting readers' masks, the decisions and the share of reader pairs agreeing on them, the
    consensus version. Researchers see the rows of accepted findings only."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, AGREEMENT_READERS, "managers, radiologists and researchers")
        only = None
        if not user_has_role(request.user, project, [Role.MANAGER, Role.RADIOLOGIST]):
            only = set(selectors.accepted_finding_ids(project))
        return Response(readers.project_agreement(project, finding_ids=only))
