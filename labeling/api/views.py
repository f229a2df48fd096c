"""Label runs (start, follow) and finding proposals (list, filter)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from core.models import Role
from core.selectors import project_get_for_user, role_require
from labeling import selectors
from labeling.api.serializers import FindingProposalOut, LabelRunIn, LabelRunOut
from labeling.services import label_run_start
from studies.models import Report


class LabelRuns(APIView):
    """GET: the project's runs. POST: start (or resume) a run over the project or ``report_ids``;
    202 with the run, whose ``progress`` and ``job_id`` follow it (managers and researchers)."""

    @extend_schema(responses={200: LabelRunOut(many=True)})
    def get(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        runs = selectors.label_runs_for_user(request.user).filter(project=project)
        return Response(LabelRunOut(runs, many=True).data)

    @extend_schema(request=LabelRunIn, responses={202: LabelRunOut})
    def post(self, request, slug: str):
        project = project_get_for_user(request.user, slug)
        role_require(request.user, project, [Role.MANAGER, Role.RESEARCHER], "managers and researchers")
        data = LabelRunIn(data=request.data)
        data.is_valid(raise_exception=True)
        ids = data.validated_data.get("report_ids")
        if ids:
            known = set(Report.objects.filter(project=project, pk__in=ids).values_list("pk", flat=True))
            if missing := sorted(set(ids) - known):
                raise ValidationError({"report_ids": f"not reports of this project: {missing[:20]}"})
        try:
            run = label_run_start(
                project=project,
                labeler=data.validated_data["labeler"],
                params=data.validated_data.get("params") or {},
                report_ids=ids,
                user=request.user,
            )
        except ValueError as exc:  # a labeler that cannot be set up (no LLM model configured, bad params)
            raise ValidationError({"labeler": str(exc)}) from exc
        return Response(LabelRunOut(run).data, status=status.HTTP_202_ACCEPTED)


class LabelRunDetail(generics.RetrieveAPIView):
    serializer_class = LabelRunOut

    def get_object(self):
        return selectors.label_run_get_for_user(self.request.user, self.kwargs["pk"])


_FILTERS = {
    "project": "project__slug",
    "run": "run_id",
    "report": "report_id",
    "code": "code",
    "assertion": "assertion",
}


@extend_schema(parameters=[OpenApiParameter(n, str) for n in [*_FILTERS, "disagreement"]])
class ProposalList(generics.ListAPIView):
    """Finding proposals; filters ``project``, ``run``, ``report``, ``code``, ``assertion``, and
    ``disagreement=true`` for the proposals an ensemble's voters disagreed on (review those first)."""

    serializer_class = FindingProposalOut

    def get_queryset(self):
        qs = selectors.proposals_for_user(self.request.user)
        flag = self.request.query_params.get("disagreement")
        if flag in {"true", "1"}:
            qs = qs.filter(disagreement=True).order_by("report_id", "section", "start")
        elif flag in {"false", "0"}:
            qs = qs.filter(disagreement=False)
        for name, lookup in _FILTERS.items():
            value = self.request.query_params.get(name)
            if value not in (None, ""):
                if name in {"run", "report"} and not value.isdigit():
                    raise ValidationError({name: "must be an integer id"})
                qs = qs.filter(**{lookup: value})
        return qs
