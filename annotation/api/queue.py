"""The queue's order and training from review over the API (managers; training also researchers): thin
views over ``annotation.queue.queue_reprioritise`` and ``annotation.training.training_from_accepted``."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.serializers import QueueIn, TrainFromAcceptedIn
from annotation.queue import queue_reprioritise
from annotation.training import training_from_accepted
from core.models import Role
from core.selectors import project_get_for_user, role_require
from ml.active_learning import scored_version


class QueuePriorities(APIView):
    """POST: order the project's open tasks by stored active-learning scores (managers): those of
    ``strategy`` under the newest version of ``model`` that has such scores. An unknown strategy, or one
    with no stored scores, is a 400 that changes nothing. 200 with ``changed`` and the ``model_version``
    read."""

    @extend_schema(request=QueueIn, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, [Role.MANAGER], "managers")
        data = QueueIn(data=request.data)
        data.is_valid(raise_exception=True)
        strategy, version = data.validated_data["strategy"], None
        if data.validated_data.get("model"):
            version = scored_version(project=project, name=data.validated_data["model"], strategy=strategy)
        changed = queue_reprioritise(
            project=project, strategy=strategy, model_version=version, seed=data.validated_data["seed"]
        )
        return Response({"changed": changed, "model_version": version.pk if version else None})


class TrainFromAccepted(APIView):
    """POST: train a new version of ``model`` from accepted findings' current masks (all accepted findings
    with a mask when ``finding_ids`` is left out; ``label_map`` maps finding codes to model labels); a job on
    the ``gpu`` queue, 202 with the training run (managers and researchers)."""

    @extend_schema(request=TrainFromAcceptedIn, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, [Role.MANAGER, Role.RESEARCHER], "managers and researchers")
        data = TrainFromAcceptedIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        run, job, examples = training_from_accepted(
            project=project,
            model=v["model"],
            finding_ids=v.get("finding_ids"),
            label_map=v["label_map"],
            params=v["params"],
            user=request.user,
        )
        return Response(
            {"training_run": run.pk, "job_id": job.pk, "examples": examples}, status=status.HTTP_202_ACCEPTED
        )
