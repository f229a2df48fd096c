"""Model registry (upload, list, follow validation) and pre-annotation jobs."""

import json
import tempfile
from pathlib import Path

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import Forbidden
from core.jobs import BrokerUnavailable
from core.models import Role
from core.selectors import project_get_for_user, projects_for_user, user_has_role
from ml.models import ModelFormat, ModelTask, ModelVersion, TrainingRun
from ml.specs import ModelError
from studies.selectors import scan_get_for_user

WRITERS = [Role.MANAGER, Role.RESEARCHER]


class ModelVersionOut(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "name",
            "version",
            "task",
            "format",
            "input_spec",
            "label_names",
            "network",
            "checksum",
            "metrics",
            "parent_id",
            "status",
            "error",
            "job_id",
            "created_at",
        ]


class ModelVersionIn(serializers.Serializer):
    file = serializers.FileField()
    name = serializers.CharField()
    format = serializers.ChoiceField(ModelFormat.values)
    task = serializers.ChoiceField(ModelTask.values, default=ModelTask.SEGMENTATION)
    input_spec = serializers.CharField(
        help_text='JSON, e.g. {"ndim": 3, "roi_size": [96, 96, 96], "window": [-1000, 400]}'
    )
    label_names = serializers.CharField(help_text="JSON list or comma-separated, one per output channel")
    network = serializers.CharField(required=False, help_text="JSON MONAI network spec for state dicts")


class PreannotateIn(serializers.Serializer):
    generator = serializers.CharField(help_text="lungs, pet-suv, gaze or model:<name>")
    params = serializers.DictField(required=False, default=dict)


def _visible(model, user, pk: int, what: str):
    """A row of ``model`` in one of the user's projects, else 404."""
    found = model.objects.filter(project__in=projects_for_user(user), pk=pk).first()
    if found is None:
        raise Http404(f"No such {what}.")
    return found


def _json(data, name):
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValidationError({name: f"not JSON: {exc}"}) from exc


class ProjectModels(APIView):
    """GET: the project's model versions (members). POST (multipart, managers only): register a file as the
    next version of ``name``; 202 with the version (``validating``) whose ``job_id`` follows the
    forward-pass check."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(responses={200: ModelVersionOut(many=True)})
    def get(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        return Response(ModelVersionOut(ModelVersion.objects.filter(project=project), many=True).data)

    @extend_schema(request=ModelVersionIn, responses={202: ModelVersionOut})
    def post(self, request, slug: str):
        from ml.services import model_version_register

        project = project_get_for_user(request.user, slug)
        if not user_has_role(request.user, project, [Role.MANAGER]):
            # a model file is loaded and run by the platform's workers: registering one is a manager's
            # decision (researchers still list the models and train new versions of registered ones)
            raise Forbidden(
                "Only managers of this project may register models; researchers may list them.", field="role"
            )
        data = ModelVersionIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        labels = v["label_names"].strip()
        names = (
            _json(labels, "label_names") if labels.startswith("[") else [s.strip() for s in labels.split(",")]
        )
        with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
            local = Path(tmp) / Path(v["file"].name).name
            with open(local, "wb") as out:
                for chunk in v["file"].chunks():
                    out.write(chunk)
            try:
                version = model_version_register(
                    project=project,
                    path=local,
                    fmt=v["format"],
                    name=v["name"],
                    task=v["task"],
                    input_spec=_json(v["input_spec"], "input_spec"),
                    label_names=names,
                    network=_json(v["network"], "network") if v.get("network") else None,
                    user=request.user,
                )
            except ModelError as exc:
                raise ValidationError({exc.field: f"{exc.file}: {exc.reason}"}) from exc
            except BrokerUnavailable as exc:
                return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        version.refresh_from_db()
        return Response(ModelVersionOut(version).data, status=status.HTTP_202_ACCEPTED)


class ModelVersionDetail(generics.RetrieveAPIView):
    serializer_class = ModelVersionOut

    def get_object(self):
        return _visible(ModelVersion, self.request.user, self.kwargs["pk"], "model version")


class ScanPreannotate(APIView):
    """POST ``{"generator": "lungs" | "pet-suv" | "gaze" | "model:<name>", "params": {...}}``: a job on the
    ``gpu`` queue that stores the proposals (``/api/region-proposals/?scan=<id>``); 202 with the job."""

    @extend_schema(request=PreannotateIn, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, pk: int):
        from ml.preannotate import GENERATORS, preannotate_start

        scan = scan_get_for_user(request.user, pk)
        if not user_has_role(request.user, scan.project, [*WRITERS, Role.ANNOTATOR]):
            raise PermissionDenied("Only members who annotate may start pre-annotation.")
        data = PreannotateIn(data=request.data)
        data.is_valid(raise_exception=True)
        generator = data.validated_data["generator"]
        if generator not in GENERATORS and not generator.startswith("model:"):
            raise ValidationError({"generator": f"one of {', '.join(GENERATORS)} or model:<name>"})
        try:
            job = preannotate_start(
                scan=scan, generator=generator, params=data.validated_data["params"], user=request.user
            )
        except BrokerUnavailable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"job_id": job.pk}, status=status.HTTP_202_ACCEPTED)


class TrainingRunIn(serializers.Serializer):
    model = serializers.CharField(help_text="model name: its newest ready version is the parent")
    proposal_ids = serializers.ListField(child=serializers.IntegerField(min_value=1))
    params = serializers.DictField(required=False, default=dict)


class TrainingRunOut(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "name",
            "parent_id",
            "params",
            "split",
            "status",
            "step",
            "metrics",
            "error",
            "result_id",
            "job_id",
            "created_at",
            "finished_at",
        ]


class ProjectTrainingRuns(APIView):
    """POST: train a new version of ``model`` from region proposals (a frozen snapshot, split by patient) as
    a job on the ``gpu`` queue; 202 with the run. Managers and researchers."""

    @extend_schema(request=TrainingRunIn, responses={202: TrainingRunOut})
    def post(self, request, slug: str):
        from ml.services import model_version_latest
        from ml.training import TrainingError, training_run_create, training_run_start

        project = project_get_for_user(request.user, slug)
        if not user_has_role(request.user, project, WRITERS):
            raise PermissionDenied("Only managers and researchers of this project may train models.")
        data = TrainingRunIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            parent = model_version_latest(project=project, name=v["model"])
            run = training_run_create(
                parent=parent, proposal_ids=v["proposal_ids"], params=v["params"], user=request.user
            )
            training_run_start(run=run, user=request.user)
        except ModelError as exc:
            raise ValidationError({"model": str(exc)}) from exc
        except TrainingError as exc:
            field = str(exc).split(":")[0]
            raise ValidationError({field: str(exc)}) from exc
        except BrokerUnavailable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        run.refresh_from_db()
        return Response(TrainingRunOut(run).data, status=status.HTTP_202_ACCEPTED)


class TrainingRunDetail(generics.RetrieveAPIView):
    serializer_class = TrainingRunOut

    def get_object(self):
        return _visible(TrainingRun, self.request.user, self.kwargs["pk"], "training run")


class ActiveLearningIn(serializers.Serializer):
    strategy = serializers.CharField(help_text="random, foreground_aware_random, predictive_entropy, bald")
    model = serializers.CharField(required=False, help_text="model name (its newest ready version)")
    params = serializers.DictField(required=False, default=dict)


class ProjectActiveLearning(APIView):
    """GET ``?strategy=&model=&seed=``: the project's unlabelled scans, best to annotate first, with their
    scores. POST: compute the scores as a job on the ``gpu`` queue (202)."""

    def _version(self, project, name):
        if not name:
            return None
        from ml.services import model_version_latest

        try:
            return model_version_latest(project=project, name=name)
        except ModelError as exc:
            raise ValidationError({"model": str(exc)}) from exc

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, slug: str):
        from ml.active_learning import ActiveLearningError, ranked

        project = project_get_for_user(request.user, slug)
        q = request.query_params
        try:
            rows = ranked(
                project=project,
                strategy=q.get("strategy", "predictive_entropy"),
                version=self._version(project, q.get("model")),
                seed=int(q.get("seed", 0)),
            )
        except ActiveLearningError as exc:
            raise ValidationError({str(exc).split(":")[0]: str(exc)}) from exc
        return Response(
            [
                {
                    "scan_id": r.scan_id,
                    "score": r.score,
                    "strategy": r.strategy,
                    "model_version_id": r.model_version_id,
                }
                for r in rows
            ]
        )

    @extend_schema(request=ActiveLearningIn, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, slug: str):
        from ml.active_learning import ActiveLearningError, scores_start

        project = project_get_for_user(request.user, slug)
        if not user_has_role(request.user, project, WRITERS):
            raise PermissionDenied("Only managers and researchers of this project may score cases.")
        data = ActiveLearningIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            job = scores_start(
                project=project,
                strategy=v["strategy"],
                version=self._version(project, v.get("model")),
                params=v["params"],
                user=request.user,
            )
        except ActiveLearningError as exc:
            raise ValidationError({str(exc).split(":")[0]: str(exc)}) from exc
        except BrokerUnavailable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"job_id": job.pk}, status=status.HTTP_202_ACCEPTED)
