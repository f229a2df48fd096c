"""The click tool's API (issue 16 item 7): foreground / background points on a finding's scan answered with a
proposal mask by a job on the ``gpu`` queue (``ml.interactive``).

- ``GET findings/<pk>/interactive/``: what a click does here (the interactive model, or a region grow, and
  its defaults); with ``?warm=1`` in the embedded default it also starts the warm child that serves
  clicks (the review screen asks when the click tool is picked), so that the first click does not wait
  for it.
- ``POST findings/<pk>/interactive/`` ``{"points": [[x, y(, z)], ...], "background": [...], "window":
  [low, high], "method": "auto" | "region-grow" | "model", "params": {...}, "label": ""}``: 202 with the job.
  Points are voxel indices of the scan's array (what masks and boxes use); ``window`` the intensity range
  the viewer shows (the region grow's range comes from it).
- ``GET findings/<pk>/interactive/<job_id>/``: the click's state; once done, its mask inside its box
  (``ml.interactive.interactive_answer``). Only the clicker sees a click's answer (others: 404), so a
  blinded reader's clicks stay theirs.

Annotators and managers of the finding's project click; the answer is no label until the annotator saves
the drawing it went into.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from core.models import Role
from core.selectors import role_require

ANNOTATORS = [Role.ANNOTATOR, Role.MANAGER]


class ClickIn(serializers.Serializer):
    points = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()), min_length=1)
    background = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()), required=False, default=list
    )
    window = serializers.ListField(child=serializers.FloatField(), required=False, allow_null=True)
    method = serializers.ChoiceField(["auto", "region-grow", "model"], default="auto")
    params = serializers.DictField(required=False, default=dict)
    label = serializers.CharField(required=False, allow_blank=True, default="")


def _finding(request, pk: int):
    finding = selectors.finding_get_for_user(request.user, pk)
    role_require(request.user, finding.project, ANNOTATORS, "annotators")
    return finding


class FindingInteractive(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("warm", str, enum=["1"])], responses={200: OpenApiTypes.OBJECT}
    )
    def get(self, request, pk: int):
        from ml.interactive import interactive_capabilities

        finding = _finding(request, pk)
        out = interactive_capabilities(finding.project)
        out["worker"] = _warm(request.query_params.get("warm") in ("1", "true"))
        return Response(out)

    @extend_schema(request=ClickIn, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, pk: int):
        from ml.interactive import interactive_start

        finding = _finding(request, pk)
        data = ClickIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        job = interactive_start(
            scan=finding.scan,
            finding_id=finding.pk,
            user=request.user,
            points=v["points"],
            background=v["background"],
            window=v.get("window"),
            params=v["params"],
            method=v["method"],
            label=v["label"],
        )
        return Response(
            {
                "job_id": job.pk,
                "method": job.params["method"],
                "model_version": job.params["model_version"],
                "status": job.status,
            },
            status=status.HTTP_202_ACCEPTED,
        )


class FindingInteractiveAnswer(APIView):
    @extend_schema(operation_id="findings_interactive_answer", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk: int, job_id: int):
        from ml.interactive import interactive_answer, interactive_job_get

        finding = _finding(request, pk)
        job = interactive_job_get(finding_id=finding.pk, job_id=job_id, user=request.user)
        return Response(interactive_answer(job))


def _warm(start: bool) -> str:
    """``queue`` (a broker: the ``gpu`` workers answer), ``in-process`` (no child processes), or the
    embedded warm child's state (``ml.interactive_worker``), started first when ``start``."""
    from config.celery import app
    from core.job_child import runs_in_child
    from ml.tasks import interactive

    if not app.conf.task_always_eager:
        return "queue"
    if not runs_in_child(interactive):
        return "in-process"
    from ml.interactive_worker import worker_pid, worker_warm

    if start:
        return worker_warm()
    return "running" if worker_pid() else "stopped"
