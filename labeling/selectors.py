"""Reads of label runs, gaze labels and proposals through project membership (others' objects: 404)."""

from django.db.models import QuerySet
from django.http import Http404

from core.selectors import projects_for_user
from labeling.models import (
    FindingProposal,
    GazeAnatomyRecord,
    GazeHeatmap,
    GazeLabelResult,
    GazeLabelRun,
    GazeSentence,
    LabelRun,
    RegionProposal,
)


def _get(qs: QuerySet, pk: int, what: str):
    found = qs.filter(pk=pk).first()
    if found is None:
        raise Http404(f"No such {what}.")
    return found


def label_runs_for_user(user) -> QuerySet[LabelRun]:
    return LabelRun.objects.filter(project__in=projects_for_user(user)).select_related("project")


def label_run_get_for_user(user, run_id: int) -> LabelRun:
    return _get(label_runs_for_user(user), run_id, "label run")


def proposals_for_user(user) -> QuerySet[FindingProposal]:
    return FindingProposal.objects.filter(project__in=projects_for_user(user)).select_related(
        "project", "run"
    )


def gaze_runs_for_user(user) -> QuerySet[GazeLabelRun]:
    return GazeLabelRun.objects.filter(project__in=projects_for_user(user)).select_related("project")


def gaze_run_get_for_user(user, run_id: int) -> GazeLabelRun:
    return _get(gaze_runs_for_user(user), run_id, "gaze label run")


def gaze_results_for_user(user) -> QuerySet[GazeLabelResult]:
    return GazeLabelResult.objects.filter(run__project__in=projects_for_user(user)).select_related(
        "recording"
    )


def gaze_heatmaps_for_user(user) -> QuerySet[GazeHeatmap]:
    return GazeHeatmap.objects.filter(run__project__in=projects_for_user(user))


def gaze_heatmap_get_for_user(user, heatmap_id: int) -> GazeHeatmap:
    return _get(gaze_heatmaps_for_user(user).select_related("run", "recording"), heatmap_id, "gaze heatmap")


def gaze_sentences_for_user(user) -> QuerySet[GazeSentence]:
    return GazeSentence.objects.filter(run__project__in=projects_for_user(user))


def anatomy_records_for_user(user) -> QuerySet[GazeAnatomyRecord]:
    return GazeAnatomyRecord.objects.filter(run__project__in=projects_for_user(user))


def anatomy_record_get_for_user(user, record_id: int) -> GazeAnatomyRecord:
    return _get(anatomy_records_for_user(user), record_id, "anatomy record")


def region_proposals_for_user(user) -> QuerySet[RegionProposal]:
    return RegionProposal.objects.filter(project__in=projects_for_user(user))


def region_proposal_get_for_user(user, proposal_id: int) -> RegionProposal:
    return _get(region_proposals_for_user(user), proposal_id, "region proposal")
