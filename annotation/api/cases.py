"""The case screen's payload (the review screen's one read of a task): the task, its finding and versions,
the study's report with every finding's spans, the study's findings, the scan's region proposals, anatomy
layers and gaze recordings, and for the radiologists the annotator's submission. Every row comes from
``annotation.selectors``; this module only shapes them."""

from __future__ import annotations

from annotation import selectors
from annotation.api.case_gaze import case_gaze_payload
from annotation.api.serializers import AnnotationOut, FindingOut, SubmissionOut, TaskOut
from annotation.models import ReviewTask
from annotation.proposals import finding_layers
from labeling.api.gaze_serializers import RegionProposalOut

REPORT_SECTIONS = ("indication", "comparison", "findings", "impression")


def case_payload(task: ReviewTask, *, versions=None) -> dict:
    """Everything the case screen shows. While the finding is with its readers (stage read) only the
    versions no reader made are listed (``versions``: these instead). ``submission``: the annotator's
    decision, comment and change from the proposal once they submitted (null before, and for a
    consensus of several readers, whose ``agreement`` says it)."""
    finding = task.finding
    if versions is None:
        versions = selectors.case_versions(task)
    report = finding.report
    proposals = selectors.case_proposals(finding)
    layers = finding_layers(finding, proposals)
    submission = selectors.task_submission(task)
    scan = finding.scan
    siblings = list(selectors.case_siblings(finding))
    # The finding as listed (its task and spans loaded with the others).
    shown = next((f for f in siblings if f.pk == finding.pk), finding)
    return {
        "task": TaskOut(task).data,
        "finding": FindingOut(shown).data,
        "versions": AnnotationOut(versions, many=True).data,
        "scan": {"id": scan.pk, "shape": scan.shape, "ndim": scan.ndim, "modality": scan.modality}
        if scan is not None
        else None,
        "report": {"id": report.id, "sections": {k: getattr(report, k) for k in REPORT_SECTIONS}}
        if report
        else None,
        "findings": FindingOut(siblings, many=True).data,
        # Several readers: their agreement and consensus (see annotation/readers.py); null until then.
        "agreement": finding.agreement or None,
        "submission": SubmissionOut(submission).data if submission is not None else None,
        "proposals": RegionProposalOut(proposals, many=True).data,
        # Anatomy proposals of the scan as layers (those of the finding's place first, shown at first),
        # its place, and which proposal its version 1 started from and why (annotation/proposals/).
        "layers": layers["layers"],
        "place": layers["place"],
        "start": layers["start"],
        # The scan's gaze recordings with their newest gaze labels (sentences, anatomies, heatmaps).
        "gaze": case_gaze_payload(finding, siblings),
    }
