"""Reads of label runs and proposals through project membership (others' objects: 404)."""

from django.db.models import QuerySet
from django.http import Http404

from core.selectors import projects_for_user
from labeling.models import FindingProposal, LabelRun


def label_runs_for_user(user) -> QuerySet[LabelRun]:
    return LabelRun.objects.filter(project__in=projects_for_user(user)).select_related("project")


def label_run_get_for_user(user, run_id: int) -> LabelRun:
    run = label_runs_for_user(user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such label run.")
    return run


def proposals_for_user(user) -> QuerySet[FindingProposal]:
    return FindingProposal.objects.filter(project__in=projects_for_user(user)).select_related(
        "project", "run"
    )
