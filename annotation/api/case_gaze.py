"""The case payload's gaze part: each eye-gaze recording of the finding's scan, with what the newest gaze
label run that labelled it made (``annotation.selectors.case_gaze_labels``): the transcript's sentences
(times, gaze window, anatomies, findings and the study's findings they are tied to) and the anatomies
(dwell, share, time to first fixation), each with its heatmap's PNG, and the whole recording's heatmap.
The review screen's gaze panel (frontend/src/gaze.ts) shows them over the radiograph."""

from __future__ import annotations

from django.urls import reverse

from annotation import selectors
from annotation.models import Finding
from annotation.proposals.names import LABEL_CODES

NO_RUN = (
    "No gaze label run has labelled this recording yet: a manager starts one in the console (Labels, gaze "
    "labels) or with POST /api/projects/<slug>/gaze-label-runs/."
)


def _png(heatmap_id: int | None) -> str | None:
    return reverse("gaze-heatmap-png", args=[heatmap_id]) if heatmap_id is not None else None


def _same_kind(code: str) -> set[str]:
    """``code`` and the codes of the other schema that name the same kind of finding (a sentence's CheXpert
    "Lung Lesion" is a ReXGroundingCT project's "2d": ``annotation.proposals.names.LABEL_CODES``)."""
    out = {code}
    for codes in LABEL_CODES.values():
        if code in codes:
            out |= codes
    return out


def _tied(sentence_findings: list[dict], siblings: list[Finding]) -> list[int]:
    """The study's findings (``siblings``) a sentence states as present: those made from one of the
    report's finding proposals it is linked to (``proposal_ids``), else those of the same code, else those
    of a code of the same kind in the project's schema (the sentences are read with CheXpert's rules)."""
    out: list[int] = []
    for stated in sentence_findings:
        code = stated.get("code") or ""
        if stated.get("assertion") != "present" or not code:
            continue
        proposals = set(stated.get("proposal_ids") or [])
        ids = [f.pk for f in siblings if f.finding_proposal_id in proposals]
        if not ids:
            ids = [f.pk for f in siblings if f.code == code]
        if not ids:
            kind = _same_kind(code)
            ids = [f.pk for f in siblings if f.code in kind]
        out += [pk for pk in ids if pk not in out]
    return out


def _labels(labels: selectors.CaseGazeLabels, siblings: list[Finding]) -> dict:
    run = labels.result.run
    whole = next((h for h in labels.heatmaps if h.kind == "recording"), None)
    per_sentence = {h.sentence_index: h for h in labels.heatmaps if h.kind == "sentence"}
    return {
        "run_id": run.pk,
        "preset": run.params.get("preset", ""),
        "method": run.params.get("method", ""),
        "lead_s": run.params.get("lead_s"),
        "problems": labels.result.problems,
        "recording": {
            "heatmap_id": whole.pk if whole else None,
            "heatmap_png": _png(whole.pk if whole else None),
            "fixation_count": whole.fixation_count if whole else 0,
        },
        "sentences": [
            {
                "index": s.index,
                "text": s.text,
                "start": s.start,
                "end": s.end,
                "window": [s.window_start, s.window_end],
                "fixation_count": s.fixation_count,
                "anatomies": s.anatomies,
                "assigned_by": s.assigned_by,
                "findings": [{k: f.get(k, "") for k in ("code", "assertion", "phrase")} for f in s.findings],
                "finding_ids": _tied(s.findings, siblings),
                "heatmap_id": per_sentence[s.index].pk if s.index in per_sentence else None,
                "heatmap_png": _png(per_sentence[s.index].pk if s.index in per_sentence else None),
            }
            for s in labels.sentences
        ],
        "anatomies": [
            {
                "anatomy": a.anatomy,
                "dwell_s": a.dwell_s,
                "dwell_share": a.dwell_share,
                "fixation_count": a.fixation_count,
                "time_to_first_s": a.time_to_first_s,
                "sentence_indexes": a.sentence_indexes,
                "caption": a.caption,
                "heatmap_id": a.heatmap_id,
                "heatmap_png": _png(a.heatmap_id),
                "heatmap_source": a.heatmap_source,
            }
            for a in labels.records
        ],
    }


def case_gaze_payload(finding: Finding, siblings: list[Finding]) -> list[dict]:
    """The gaze recordings of the finding's scan for the case payload. ``heatmap_png``: the whole
    recording's heatmap computed now (there with or without labels); ``labels``: null until a gaze label
    run labelled the recording, then ``labels_note`` says so (or why the newest run could not)."""
    recordings = selectors.case_gaze(finding)
    labelled, notes = selectors.case_gaze_labels(recordings)
    out = []
    for rec in recordings:
        labels = labelled.get(rec.pk)
        out.append(
            {
                "id": rec.pk,
                "reader": rec.reader,
                "heatmap_png": reverse("gaze-recording-heatmap", args=[rec.pk]) + "?output=png",
                "labels": _labels(labels, siblings) if labels is not None else None,
                "labels_note": "" if labels is not None else notes.get(rec.pk, NO_RUN),
            }
        )
    return out
