"""Projects and jobs. Reads go through core.selectors (membership checked; others' objects are 404)."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from core.api.serializers import JobOut, ProjectOut, ReviewSettingsIn
from core.models import Membership, Role
from core.selectors import (
    job_get_for_user,
    jobs_for_user,
    project_get_for_user,
    projects_for_user,
    user_has_role,
)
from core.services import project_review_settings


class _WithRoles:
    """Puts the caller's role per project in the serializer context (one query)."""

    serializer_class = ProjectOut

    def get_serializer_context(self):
        ctx = super().get_serializer_context()
        ctx["roles"] = dict(
            Membership.objects.filter(user=self.request.user).values_list("project_id", "role")
        )
        return ctx


class ProjectList(_WithRoles, generics.ListAPIView):
    """Projects the caller is a member of, with the caller's role."""

    def get_queryset(self):
        return projects_for_user(self.request.user)


class ProjectDetail(_WithRoles, generics.RetrieveAPIView):
    """GET: the project and your role. PATCH (managers): its review settings, ``qa_sample_rate``,
    ``readers_per_finding`` (affects findings made afterwards), ``consensus_method`` and the learning
    loop's ``findings_after_label_run`` and ``train_after_accepted``."""

    def get_object(self):
        return project_get_for_user(self.request.user, self.kwargs["slug"])

    @extend_schema(request=ReviewSettingsIn, responses={200: ProjectOut})
    def patch(self, request, slug: str):
        project = self.get_object()
        if not user_has_role(request.user, project, [Role.MANAGER]):
            raise PermissionDenied("Only managers of this project may change its review settings.")
        data = ReviewSettingsIn(data=request.data)
        data.is_valid(raise_exception=True)
        project_review_settings(project=project, **data.validated_data)
        return Response(self.get_serializer(project).data)


class JobList(generics.ListAPIView):
    """Background jobs of a project, newest first; ``?status=`` and ``?kind=`` filter."""

    serializer_class = JobOut

    def get_queryset(self):
        project = project_get_for_user(self.request.user, self.kwargs["slug"])
        qs = jobs_for_user(self.request.user).filter(project=project)
        for field in ("status", "kind"):
            if value := self.request.query_params.get(field):
                qs = qs.filter(**{field: value})
        return qs


class JobDetail(generics.RetrieveAPIView):
    """A job's status, progress (0..1), counts, per-file errors and, when finished, its summary."""

    serializer_class = JobOut

    def get_object(self):
        return job_get_for_user(self.request.user, self.kwargs["pk"])
