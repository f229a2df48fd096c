"""Training examples from review: the newest mask versions of accepted findings (a box saved after a mask
leaves the mask the finding's: ``annotation.versions.groundings``), in the form
``ml.training.training_run_create(examples=...)`` freezes (mask file and its sha256)."""

from __future__ import annotations

from annotation.models import Finding, FindingStatus
from annotation.selectors import accepted_mask_finding_ids
from annotation.versions import groundings
from core.models import Job, Project
from ml.models import TrainingRun
from ml.services import model_version_latest
from ml.training import TrainingError, mask_sha256, trainable_labels, training_run_create, training_run_start


def accepted_examples(
    project: Project,
    finding_ids: list[int],
    labels: list[str] | None,
    label_map: dict[str, str] | None = None,
) -> list[dict]:
    """The newest mask version of accepted findings (what the radiologists approved), with the finding's
    sentence (``text``: what a grounding model learns to ground). ``labels`` None: any label (a
    grounding model)."""
    findings = list(Finding.objects.filter(project=project, pk__in=finding_ids).select_related("study"))
    if missing := sorted(set(finding_ids) - {f.pk for f in findings}):
        raise TrainingError("finding_ids", f"not findings of {project.slug}: {missing[:20]}")
    grounded = groundings(findings)
    out = []
    for f in findings:
        if f.status != FindingStatus.ACCEPTED:
            raise TrainingError("finding_ids", f"#{f.pk} is {f.status}, not accepted")
        version = grounded[f.pk].mask  # the newest mask, whatever box was saved after it
        if version is None or f.scan_id is None:
            raise TrainingError(
                "finding_ids", f"#{f.pk} has no mask on a scan (its version {f.current_version})"
            )
        label = (label_map or {}).get(f.code, f.code)
        if labels is not None and label not in labels:
            raise TrainingError(
                "finding_ids", f"#{f.pk} ({f.code}) maps to {label!r}; the model's labels are {labels}"
            )
        out.append(
            {
                "finding": f.pk,
                "annotation": version.pk,
                "scan": f.scan_id,
                "patient": f.study.patient_id,
                "label": label,
                "text": f.text,
                "mask": version.mask.name,
                "sha256": mask_sha256(version.mask.name),
            }
        )
    return out


def training_from_accepted(
    *,
    project: Project,
    model: str,
    finding_ids: list[int] | None,
    label_map: dict[str, str],
    params: dict,
    user,
) -> tuple[TrainingRun, Job, int]:
    """A training run of a new version of ``model`` (its newest ready version the parent) from accepted
    findings' current masks (``finding_ids``, or all accepted findings with a mask), started as a job on
    the ``gpu`` queue; returns the run, its job and how many examples it has."""
    parent = model_version_latest(project=project, name=model)
    ids = finding_ids or accepted_mask_finding_ids(project)
    examples = accepted_examples(project, ids, trainable_labels(parent), label_map)
    run = training_run_create(parent=parent, examples=examples, params=params, user=user)
    job = training_run_start(run=run, user=user)
    return run, job, len(examples)
