"""Review API: the queue, a case (report with finding spans, findings, versions, proposals), versioned
saves (409 with both versions on a stale one), stage transitions by role, history; with several readers
per finding their readings (next, save, submit) and the agreement."""

import numpy as np
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors, services
from annotation.api.serializers import (
    AnnotationIn,
    AnnotationOut,
    FindingIn,
    FindingOut,
    HistoryOut,
    QueueIn,
    ReadingOut,
    TaskOut,
    TrainFromAcceptedIn,
    TransitionIn,
)
from annotation.models import Finding, Reading, ReviewTask, Stage
from core.api.params import query_int
from core.errors import NotFound
from core.models import Role
from core.selectors import project_get_for_user, project_ids_for_slug, role_require, user_has_role
from studies.api.views import stored_file_response
from studies.services.uploads import mask_upload_read

ANNOTATORS = [Role.ANNOTATOR, Role.MANAGER]
RADIOLOGISTS = [Role.RADIOLOGIST]
STAGES_OF = {"annotate": (Stage.ANNOTATE,), "review": (Stage.REVIEW, Stage.QA)}


def case_payload(task: ReviewTask, *, versions=None) -> dict:
    """Everything the case screen shows: the task, its finding and versions, the study's report with every
    finding's span, the study's other findings, and the scan's region proposals. While the finding is
    with its readers (stage read) only the versions no reader made are listed (``versions``: these
    instead)."""
    finding = task.finding
    if versions is None:
        versions = finding.annotations.select_related("author").order_by("version")
        if task.stage == Stage.READ:
            versions = versions.filter(author__isnull=True)
    report = finding.report
    siblings = Finding.objects.filter(study_id=finding.study_id).select_related("task").order_by("id")
    from labeling.api.gaze_serializers import RegionProposalOut
    from labeling.models import RegionProposal

    proposals = (
        RegionProposal.objects.filter(scan=finding.scan).select_related("model_version").order_by("id")
        if finding.scan_id
        else []
    )
    from annotation.proposals import finding_layers

    layers = finding_layers(finding, proposals)
    return {
        "task": TaskOut(task).data,
        "finding": FindingOut(finding).data,
        "versions": AnnotationOut(versions, many=True).data,
        "scan": {
            "id": finding.scan_id,
            "shape": finding.scan.shape,
            "ndim": finding.scan.ndim,
            "modality": finding.scan.modality,
        }
        if finding.scan_id
        else None,
        "report": {
            "id": report.id,
            "sections": {
                k: getattr(report, k) for k in ("indication", "comparison", "findings", "impression")
            },
        }
        if report
        else None,
        "findings": FindingOut(siblings, many=True).data,
        # Several readers: their agreement and consensus (see annotation/readers.py); null until then.
        "agreement": finding.agreement or None,
        "proposals": RegionProposalOut(proposals, many=True).data,
        # Anatomy proposals of the scan as layers (those of the finding's place first, shown at first),
        # its place, and which proposal its version 1 started from and why (annotation/proposals.py).
        "layers": layers["layers"],
        "place": layers["place"],
        "start": layers["start"],
        "gaze": [
            {
                "id": rec.pk,
                "reader": rec.reader,
                "heatmap_png": reverse("gaze-recording-heatmap", args=[rec.pk]) + "?output=png",
            }
            for rec in (finding.scan.gaze_recordings.order_by("id") if finding.scan_id else [])
        ],
    }


class FindingsFromProposals(APIView):
    """POST: a finding and a review task for every present finding proposal of the newest label run that
    has none yet, each starting from the region proposal that fits it; findings still waiting with no
    version get a start from proposals that arrived since (managers). 201 with ``created``, ``started``,
    ``attached``, ``rules`` (how many starts each rule chose) and ``with_context``."""

    @extend_schema(request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, [Role.MANAGER], "managers")
        made = services.findings_made(project=project, user=request.user)
        return Response(made.as_dict(), status=status.HTTP_201_CREATED)


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
        role_require(
            request.user,
            project,
            ANNOTATORS if stage == "annotate" else RADIOLOGISTS,
            "annotators" if stage == "annotate" else "radiologists",
        )
        task = services.task_next(project=project, user=request.user, stages=STAGES_OF[stage])
        if task is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(case_payload(task))


class TaskClaim(APIView):
    """POST: take this task (free, lease expired, or already yours) and return its case; 409 when
    someone else holds it. Annotators claim annotate tasks, radiologists review and QA tasks."""

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
        task = services.task_claim(
            task_id=task.pk, user=request.user, stages=STAGES_OF["review" if reviewing else "annotate"]
        )
        return Response(case_payload(selectors.task_get_for_user(request.user, task.pk)))


class FindingCreate(APIView):
    """POST: add a finding the proposals missed (annotators); it gets an annotate task held by you."""

    @extend_schema(request=FindingIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, ANNOTATORS, "annotators")
        data = FindingIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        study = project.studies.filter(pk=v["study_id"]).first()
        if study is None:
            raise ValidationError({"study_id": f"no study {v['study_id']} in project {project.slug}"})
        scan = None
        if v.get("scan_id") is not None:
            scan = project.scans.filter(pk=v["scan_id"]).first()
            if scan is None:
                raise ValidationError({"scan_id": f"no scan {v['scan_id']} in project {project.slug}"})
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
        reading = Reading.objects.filter(finding_id=task.finding_id, reader=request.user).first()
        if reading is not None:  # several readers: its author holds reading 1
            payload["reading"] = ReadingOut(reading).data
        return Response(payload, status=status.HTTP_201_CREATED)


class TaskDetail(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk: int):
        return Response(case_payload(selectors.task_get_for_user(request.user, pk)))


def _read_mask(upload, scan) -> tuple[np.ndarray, bytes | None]:
    """The mask as booleans (X, Y[, Z]) and, when the upload is already what would be stored (a gzipped
    uint8 NIfTI of 0/1 on the scan's affine), its bytes, stored as they are (no second encoding).
    Decoded within the scan's grid: a file declaring another shape is a 400 before it is inflated."""
    return mask_upload_read(upload, scan=scan, field="mask")


class TaskAnnotations(APIView):
    """POST: save a new version (JSON for box/points, multipart for a mask file), naming ``base_version``.
    201 with the version; 409 with the current version when someone saved since, or when the lease is
    not yours."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]
    upload_limit_setting = "MASK_UPLOAD_MAX_BYTES"  # core.uploads: 413 above it, before the body is read

    @extend_schema(request=AnnotationIn, responses={201: AnnotationOut})
    def post(self, request, pk: int):
        task = selectors.task_get_for_user(request.user, pk)
        return _save_version(
            request, task.project, task.finding.scan, services.annotation_save, task_id=task.pk
        )


def _save_version(request, project, scan, save, **target) -> Response:
    """A version from a request's body (JSON box/points or a multipart mask file) through ``save``."""
    role_require(request.user, project, ANNOTATORS, "annotators")
    data = AnnotationIn(data=request.data)
    data.is_valid(raise_exception=True)
    v = data.validated_data
    mask, encoded = _read_mask(v["mask"], scan) if v.get("mask") is not None else (None, None)
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


class TaskTransition(APIView):
    """POST ``/submit/`` (annotator: ``decision`` accept|reject), ``/approve/`` and ``/return/`` (radiologist;
    return needs a ``comment``), ``/assign/`` (manager: ``user``)."""

    action = ""

    @extend_schema(request=TransitionIn, responses={200: TaskOut})
    def post(self, request, pk: int):
        task = selectors.task_get_for_user(request.user, pk)
        data = TransitionIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        if self.action == "submit":
            role_require(request.user, task.project, ANNOTATORS, "annotators")
            if "decision" not in v:
                raise ValidationError({"decision": "accept or reject"})
            task = services.task_submit(
                task_id=task.pk, user=request.user, decision=v["decision"], comment=v["comment"]
            )
        elif self.action in ("approve", "return"):
            role_require(request.user, task.project, RADIOLOGISTS, "radiologists")
            act = services.task_approve if self.action == "approve" else services.task_return
            task = act(task_id=task.pk, user=request.user, comment=v["comment"])
        else:
            role_require(request.user, task.project, [Role.MANAGER], "managers")
            from django.contrib.auth import get_user_model

            assignee = get_user_model().objects.filter(username=v.get("user", "")).first()
            if assignee is None or not user_has_role(assignee, task.project, [*ANNOTATORS, *RADIOLOGISTS]):
                raise ValidationError({"user": "not an annotator or radiologist of this project"})
            task = services.task_assign(task_id=task.pk, manager=request.user, assignee=assignee)
        return Response(TaskOut(task).data)


_FINDING_FILTERS = {
    "project": "project__slug",
    "status": "status",
    "code": "code",
    "scan": "scan_id",
    "study": "study_id",
    "stage": "task__stage",
}


@extend_schema(parameters=[OpenApiParameter(n, str) for n in _FINDING_FILTERS])
class FindingList(generics.ListAPIView):
    """Findings of your projects; researchers see accepted ones only."""

    serializer_class = FindingOut

    def get_queryset(self):
        qs = selectors.findings_for_user(self.request.user).select_related("task")
        query = self.request.query_params
        for name, lookup in _FINDING_FILTERS.items():
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
    """A version's mask: PNG (2D), or gzipped NIfTI (3D). With ``?encoding=http`` the NIfTI is sent as a
    plain ``.nii`` with ``Content-Encoding: gzip``, so a browser inflates it natively (the review screen:
    inflating 78 M voxels in JavaScript took ~20 s)."""

    @extend_schema(
        parameters=[OpenApiParameter("encoding", str, enum=["http"])],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request, pk: int):
        found = selectors.annotation_get_for_user(request.user, pk)
        if not found.mask:
            raise NotFound("This version has no mask (it is a box or points).")
        nifti = found.mask.name.endswith(".nii.gz")
        if nifti and request.query_params.get("encoding") == "http":
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


class QueuePriorities(APIView):
    """POST: order the project's open tasks by stored active-learning scores (managers): those of
    ``strategy`` under the newest version of ``model`` that has such scores. An unknown strategy, or one
    with no stored scores, is a 400 that changes nothing. 200 with ``changed`` and the ``model_version``
    read."""

    @extend_schema(request=QueueIn, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, slug: str):
        from ml.active_learning import scored_version

        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, [Role.MANAGER], "managers")
        data = QueueIn(data=request.data)
        data.is_valid(raise_exception=True)
        strategy, version = data.validated_data["strategy"], None
        if data.validated_data.get("model"):
            version = scored_version(project=project, name=data.validated_data["model"], strategy=strategy)
        changed = services.queue_reprioritise(
            project=project, strategy=strategy, model_version=version, seed=data.validated_data["seed"]
        )
        return Response({"changed": changed, "model_version": version.pk if version else None})


class TrainFromAccepted(APIView):
    """POST: train a new version of ``model`` from accepted findings' current masks (all accepted findings
    with a mask when ``finding_ids`` is left out; ``label_map`` maps finding codes to model labels); a job on
    the ``gpu`` queue, 202 with the training run (managers and researchers)."""

    @extend_schema(request=TrainFromAcceptedIn, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, slug: str):
        from annotation.training import accepted_examples
        from ml.services import model_version_latest
        from ml.training import trainable_labels, training_run_create, training_run_start

        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, [Role.MANAGER, Role.RESEARCHER], "managers and researchers")
        data = TrainFromAcceptedIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        parent = model_version_latest(project=project, name=v["model"])
        ids = v.get("finding_ids") or list(
            Finding.objects.filter(project=project, status="accepted", annotations__kind="mask")
            .values_list("pk", flat=True)
            .distinct()
        )
        examples = accepted_examples(project, ids, trainable_labels(parent), v["label_map"])
        run = training_run_create(parent=parent, examples=examples, params=v["params"], user=request.user)
        job = training_run_start(run=run, user=request.user)
        return Response(
            {"training_run": run.pk, "job_id": job.pk, "examples": len(examples)},
            status=status.HTTP_202_ACCEPTED,
        )
