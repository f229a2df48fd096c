"""Review tasks over the API, one thin view per action: the next task of a queue, a task's case, claiming
a named task, saving a version, and the stage transitions by role (submit, approve, return, assign). The
views check the caller's role and translate; ``annotation.services`` does the work."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors, services
from annotation.api.cases import case_payload
from annotation.api.serializers import AnnotationIn, AnnotationOut, TaskOut, TransitionIn
from annotation.models import Stage
from core.models import Role
from core.selectors import project_get_for_user, role_require
from studies.services.uploads import mask_upload_read

ANNOTATORS = [Role.ANNOTATOR, Role.MANAGER]
RADIOLOGISTS = [Role.RADIOLOGIST]
STAGES_OF = {"annotate": (Stage.ANNOTATE,), "review": (Stage.REVIEW, Stage.QA)}


class NextTask(APIView):
    """GET ``?stage=annotate`` (annotators) or ``?stage=review`` (radiologists: review and QA): claim the
    next task and return its case; 204 when the queue is empty."""

    @extend_schema(
        parameters=[OpenApiParameter("stage", str, enum=["annotate", "review"])],
        responses={200: OpenApiTypes.OBJECT, 204: None},
    )
    def get(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        stage = request.query_params.get("stage", "annotate")
        if stage not in STAGES_OF:
            raise ValidationError({"stage": "must be annotate or review"})
        annotate = stage == "annotate"
        role_require(
            request.user,
            project,
            ANNOTATORS if annotate else RADIOLOGISTS,
            "annotators" if annotate else "radiologists",
        )
        task = services.task_next(project=project, user=request.user, stages=STAGES_OF[stage])
        if task is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(case_payload(selectors.task_get_for_user(request.user, task.pk)))


class TaskDetail(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk: int):
        return Response(case_payload(selectors.task_get_for_user(request.user, pk)))


class TaskClaim(APIView):
    """POST: take this task (free, lease expired, or already yours) and return its case; 409 when
    someone else holds it. Annotators claim annotate tasks, radiologists review and QA tasks (QA: not the
    one who reviewed it, when the project has another radiologist)."""

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
    def post(self, request, pk: int):
        task = selectors.task_get_for_user(request.user, pk)
        reviewing = task.stage in STAGES_OF["review"]
        role_require(
            request.user,
            task.project,
            RADIOLOGISTS if reviewing else ANNOTATORS,
            "radiologists" if reviewing else "annotators",
        )
        services.task_claim(
            task_id=task.pk, user=request.user, stages=STAGES_OF["review" if reviewing else "annotate"]
        )
        return Response(case_payload(selectors.task_get_for_user(request.user, task.pk)))


def save_version(request, project, scan, save, **target) -> Response:
    """A version from a request's body (JSON box/points, or a multipart mask file read on ``scan``'s grid
    as ``(X, Y[, Z])``) through ``save`` (a task's or a reading's service)."""
    role_require(request.user, project, ANNOTATORS, "annotators")
    data = AnnotationIn(data=request.data)
    data.is_valid(raise_exception=True)
    v = data.validated_data
    mask, encoded = (None, None)
    if v.get("mask") is not None:
        # Booleans (X, Y[, Z]) and, when the upload is already what would be stored (a gzipped uint8
        # NIfTI of 0/1 on the scan's affine), its bytes, stored as they are (no second encoding).
        mask, encoded = mask_upload_read(v["mask"], scan=scan, field="mask")
    saved = save(
        user=request.user,
        base_version=v["base_version"],
        kind=v["kind"],
        mask=mask,
        mask_encoded=encoded,
        box=v.get("box"),
        points=v.get("points"),
        comment=v.get("comment", ""),
        **target,
    )
    return Response(AnnotationOut(saved).data, status=status.HTTP_201_CREATED)


class TaskAnnotations(APIView):
    """POST: save a new version (JSON for box/points, multipart for a mask file), naming ``base_version``.
    201 with the version; 409 with the current version when someone saved since, or when the lease is
    not yours."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]
    upload_limit_setting = "MASK_UPLOAD_MAX_BYTES"  # core.uploads: 413 above it, before the body is read

    @extend_schema(request=AnnotationIn, responses={201: AnnotationOut})
    def post(self, request, pk: int):
        task = selectors.task_get_for_user(request.user, pk)
        return save_version(
            request, task.project, task.finding.scan, services.annotation_save, task_id=task.pk
        )


def _transition_body(request) -> dict:
    data = TransitionIn(data=request.data)
    data.is_valid(raise_exception=True)
    return data.validated_data


class TaskSubmit(APIView):
    """POST ``{decision: accept|reject, comment}`` (annotators): the task goes to review."""

    @extend_schema(request=TransitionIn, responses={200: TaskOut})
    def post(self, request, pk: int):
        task = selectors.task_get_for_user(request.user, pk)
        v = _transition_body(request)
        role_require(request.user, task.project, ANNOTATORS, "annotators")
        if "decision" not in v:
            raise ValidationError({"decision": "accept or reject"})
        services.task_submit(task_id=task.pk, user=request.user, decision=v["decision"], comment=v["comment"])
        return Response(TaskOut(selectors.task_get_for_user(request.user, task.pk)).data)


class TaskApprove(APIView):
    """POST ``{comment}`` (radiologists): approve in review (→ QA when sampled, else closed) or in QA."""

    @extend_schema(request=TransitionIn, responses={200: TaskOut})
    def post(self, request, pk: int):
        task = selectors.task_get_for_user(request.user, pk)
        v = _transition_body(request)
        role_require(request.user, task.project, RADIOLOGISTS, "radiologists")
        services.task_approve(task_id=task.pk, user=request.user, comment=v["comment"])
        return Response(TaskOut(selectors.task_get_for_user(request.user, task.pk)).data)


class TaskReturn(APIView):
    """POST ``{comment}`` (radiologists; the comment is needed): back to the annotator."""

    @extend_schema(request=TransitionIn, responses={200: TaskOut})
    def post(self, request, pk: int):
        task = selectors.task_get_for_user(request.user, pk)
        v = _transition_body(request)
        role_require(request.user, task.project, RADIOLOGISTS, "radiologists")
        services.task_return(task_id=task.pk, user=request.user, comment=v["comment"])
        return Response(TaskOut(selectors.task_get_for_user(request.user, task.pk)).data)


class TaskAssign(APIView):
    """POST ``{user}`` (managers): give an open task to an annotator or radiologist of the project."""

    @extend_schema(request=TransitionIn, responses={200: TaskOut})
    def post(self, request, pk: int):
        task = selectors.task_get_for_user(request.user, pk)
        v = _transition_body(request)
        role_require(request.user, task.project, [Role.MANAGER], "managers")
        assignee = selectors.member_get(task.project, v.get("user", ""), [*ANNOTATORS, *RADIOLOGISTS])
        services.task_assign(task_id=task.pk, manager=request.user, assignee=assignee)
        return Response(TaskOut(selectors.task_get_for_user(request.user, task.pk)).data)
