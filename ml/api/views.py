"""Model registry (upload, list, follow validation) and pre-annotation jobs."""

import json
import tempfile
from pathlib import Path

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.params import query_int
from core.errors import ApplicationError
from core.models import Role
from core.selectors import project_get_for_user, role_require
from ml.models import ModelFormat, ModelTask, ModelVersion, TrainingRun
from ml.selectors import model_version_get_for_user, model_versions_for_user, training_run_get_for_user
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
        required=False,
        help_text='JSON, e.g. {"ndim": 3, "roi_size": [96, 96, 96], "window": [-1000, 400]}; a MONAI '
        "bundle's comes from its metadata and pipeline (given, it must agree)",
    )
    label_names = serializers.CharField(
        required=False,
        help_text="JSON list or comma-separated, one per output channel; a MONAI bundle's come from "
        "configs/metadata.json (given, they must agree)",
    )
    network = serializers.CharField(required=False, help_text="JSON MONAI network spec for state dicts")
    text_encoder = serializers.FileField(
        required=False,
        help_text="a grounding model's own sentence-transformers encoder (zip; safetensors weights, no code)",
    )


class PreannotateIn(serializers.Serializer):
    generator = serializers.CharField(help_text="lungs, pet-suv, gaze or model:<name>")
    params = serializers.DictField(required=False, default=dict)


def _json(data, name):
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise ApplicationError(f"not JSON: {exc}", field=name) from exc


def _upload(upload, folder: Path) -> Path:
    """An uploaded file written under ``folder`` by its base name (no path from the upload is used)."""
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / (Path(upload.name).name or "upload.zip")
    with open(local, "wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return local


class ProjectModels(APIView):
    """GET: the project's model versions (members). POST (multipart, managers only): register a file as the
    next version of ``name``; 202 with the version (``validating``) whose ``job_id`` follows the
    forward-pass check."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(responses={200: ModelVersionOut(many=True)})
    def get(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        versions = model_versions_for_user(request.user).filter(project=project)
        return Response(ModelVersionOut(versions, many=True).data)

    @extend_schema(request=ModelVersionIn, responses={202: ModelVersionOut})
    def post(self, request, slug: str):
        from ml.services import model_version_register

        project = project_get_for_user(request.user, slug)
        # a model file is loaded and run by the platform's workers: registering one is a manager's decision
        # (researchers still list the models and train new versions of registered ones)
        role_require(request.user, project, [Role.MANAGER], "managers (researchers may list models)")
        data = ModelVersionIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        labels = (v.get("label_names") or "").strip()
        names = (
            _json(labels, "label_names") if labels.startswith("[") else [s.strip() for s in labels.split(",")]
        ) if labels else None  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
            local = Path(tmp) / Path(v["file"].name).name
            with open(local, "wb") as out:
                for chunk in v["file"].chunks():
                    out.write(chunk)
            version = model_version_register(
                project=project,
                path=local,
                fmt=v["format"],
                name=v["name"],
                task=v["task"],
                input_spec=_json(v["input_spec"], "input_spec") if v.get("input_spec") else None,
                label_names=names,
                network=_json(v["network"], "network") if v.get("network") else None,
                user=request.user,
                text_encoder=_upload(v["text_encoder"], Path(tmp) / "encoder")
                if v.get("text_encoder")
                else None,
            )
        version.refresh_from_db()
        return Response(ModelVersionOut(version).data, status=status.HTTP_202_ACCEPTED)


class ModelVersionDetail(generics.RetrieveAPIView):
    serializer_class = ModelVersionOut

    def get_object(self):
        return model_version_get_for_user(self.request.user, self.kwargs["pk"])


class ScanPreannotate(APIView):
    """POST ``{"generator": "lungs" | "pet-suv" | "gaze" | "model:<name>", "params": {...}}``: a job on the
    ``gpu`` queue that stores the proposals (``/api/region-proposals/?scan=<id>``); 202 with the job."""

    @extend_schema(request=PreannotateIn, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, pk: int):
        from ml.preannotate import GENERATORS, preannotate_start

        scan = scan_get_for_user(request.user, pk)
        role_require(
            request.user, scan.project, [*WRITERS, Role.ANNOTATOR], "managers, researchers and annotators"
        )
        data = PreannotateIn(data=request.data)
        data.is_valid(raise_exception=True)
        generator = data.validated_data["generator"]
        if generator not in GENERATORS and not generator.startswith("model:"):
            raise ApplicationError(f"one of {', '.join(GENERATORS)} or model:<name>", field="generator")
        job = preannotate_start(
            scan=scan, generator=generator, params=data.validated_data["params"], user=request.user
        )
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
        from ml.training import training_run_create, training_run_start

        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, WRITERS, "managers and researchers")
        data = TrainingRunIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        parent = model_version_latest(project=project, name=v["model"])
        run = training_run_create(
            parent=parent, proposal_ids=v["proposal_ids"], params=v["params"], user=request.user
        )
        training_run_start(run=run, user=request.user)
        run.refresh_from_db()
        return Response(TrainingRunOut(run).data, status=status.HTTP_202_ACCEPTED)


class TrainingRunDetail(generics.RetrieveAPIView):
    serializer_class = TrainingRunOut

    def get_object(self):
        return training_run_get_for_user(self.request.user, self.kwargs["pk"])


class ActiveLearningIn(serializers.Serializer):
    strategy = serializers.CharField(help_text="random, foreground_aware_random, predictive_entropy, bald")
    model = serializers.CharField(required=False, help_text="model name (its newest ready version)")
    params = serializers.DictField(required=False, default=dict)


class ProjectActiveLearning(APIView):
    """GET ``?strategy=&model=&seed=``: the project's unlabelled scans, best to annotate first, with their
    scores. POST: compute the scores as a job on the ``gpu`` queue (202)."""

    def _version(self, project, name, strategy=None):
        """The newest ready version of ``name``; for listing stored scores (``strategy``), the newest
        version that has scores of it when one has."""
        if not name:
            return None
        from ml.services import model_version_latest

        if strategy is not None:
            from ml.active_learning import ActiveLearningError, scored_version

            try:
                return scored_version(project=project, name=name, strategy=strategy)
            except ActiveLearningError:
                pass

        return model_version_latest(project=project, name=name)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, slug: str):
        from ml.active_learning import ranked

        project = project_get_for_user(request.user, slug)
        q = request.query_params
        strategy = q.get("strategy", "predictive_entropy")
        rows = ranked(
            project=project,
            strategy=strategy,
            version=self._version(project, q.get("model"), strategy),
            seed=query_int(q, "seed", 0),
        )
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
        from ml.active_learning import scores_start

        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, WRITERS, "managers and researchers")
        data = ActiveLearningIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        job = scores_start(
            project=project,
            strategy=v["strategy"],
            version=self._version(project, v.get("model")),
            params=v["params"],
            user=request.user,
        )
        return Response({"job_id": job.pk}, status=status.HTTP_202_ACCEPTED)
