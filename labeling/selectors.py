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


def gaze_runs_for_user(user) -> QuerySet[GazeLabelRun]:
    return GazeLabelRun.objects.filter(project__in=projects_for_user(user)).select_related("project")


def gaze_run_get_for_user(user, run_id: int) -> GazeLabelRun:
    run = gaze_runs_for_user(user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such gaze label run.")
    return run


def gaze_results_for_user(user) -> QuerySet[GazeLabelResult]:
    return GazeLabelResult.objects.filter(run__project__in=projects_for_user(user)).select_related(
        "recording"
    )


def gaze_heatmaps_for_user(user) -> QuerySet[GazeHeatmap]:
    return GazeHeatmap.objects.filter(run__project__in=projects_for_user(user))


def gaze_heatmap_get_for_user(user, heatmap_id: int) -> GazeHeatmap:
    found = gaze_heatmaps_for_user(user).select_related("run", "recording").filter(pk=heatmap_id).first()
    if found is None:
        raise Http404("No such gaze heatmap.")
    return found


def gaze_sentences_for_user(user) -> QuerySet[GazeSentence]:
    return GazeSentence.objects.filter(run__project__in=projects_for_user(user))


def anatomy_records_for_user(user) -> QuerySet[GazeAnatomyRecord]:
    return GazeAnatomyRecord.objects.filter(run__project__in=projects_for_user(user))


def anatomy_record_get_for_user(user, record_id: int) -> GazeAnatomyRecord:
    found = anatomy_records_for_user(user).filter(pk=record_id).first()
    if found is None:
        raise Http404("No such anatomy record.")
    return found


def region_proposals_for_user(user) -> QuerySet[RegionProposal]:
    return RegionProposal.objects.filter(project__in=projects_for_user(user))


def region_proposal_get_for_user(user, proposal_id: int) -> RegionProposal:
    found = region_proposals_for_user(user).filter(pk=proposal_id).first()
    if found is None:
        raise Http404("No such region proposal.")
    return found
