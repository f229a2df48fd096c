"""Training runs: a frozen snapshot of labelled cases, a patient-level split, training on the ``gpu``
queue with checkpoints (a killed worker's run resumes from the last one), validation Dice, and a new
model version only when it beats its parent on the same validation cases.

Labelled cases are region proposals chosen by id (the masks people have accepted, once review exists,
are the intended source: ``examples`` keep the mask file and its sha256, whatever produced it).

A text-conditioned grounding model (``task == "grounding"``) trains from (sentence, mask) pairs instead:
each example carries its finding's report sentence (``text``) and is one entity with its own mask. Its run
is made here (its evaluation split: the validation split of the newest frozen release that holds the
project's scans, or held-out accepted findings; ``split["evaluation"]`` says which) and trained and
evaluated by ``ml.grounding_training``.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from core.errors import FieldError, public_message
from core.jobs import job_create, job_dispatch
from core.models import Job, JobStatus, Project
from core.storage import project_key, storage_save_bytes
from labeling.models import RegionProposal
from ml.models import ModelFormat, ModelStatus, ModelTask, ModelVersion, TrainingRun
from ml.specs import TrainParams
from studies.masks import MaskError, mask_decode
from studies.models import Scan


class TrainingError(FieldError):
    """The run cannot be made or trained: ``(field, reason)``."""


def _patient_split(patients: list[int], fraction: float, seed: int) -> set[int]:
    """Validation patients: a stable ``fraction`` (at least one) chosen by a seeded hash."""
    ranked = sorted(set(patients), key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    n_val = max(1, round(len(ranked) * fraction))
    return set(ranked[:n_val])


def _proposal_examples(project: Project, proposal_ids: list[int], labels: list[str] | None) -> list[dict]:
    proposals = list(
        RegionProposal.objects.filter(project=project, pk__in=proposal_ids).select_related("scan__study")
    )
    if missing := sorted(set(proposal_ids) - {p.pk for p in proposals}):
        raise TrainingError("proposal_ids", f"not region proposals of {project.slug}: {missing[:20]}")
    out = []
    for p in proposals:
        label = p.label or p.code
        if labels is not None and label not in labels:
            raise TrainingError(
                "proposal_ids", f"#{p.pk} is labelled {label!r}; the model's labels are {labels}"
            )
        if p.scan is None:
            raise TrainingError("proposal_ids", f"#{p.pk} belongs to no scan")
        out.append(
            {
                "proposal": p.pk,
                "scan": p.scan_id,
                "patient": p.scan.study.patient_id,
                "label": label,
                "mask": p.mask.name,
                "sha256": mask_sha256(p.mask.name),
                **({"text": p.text} if p.text else {}),
            }
        )
    return out


def trainable_labels(parent: ModelVersion) -> list[str] | None:
    """The labels a version's training examples may carry: any (None) for a grounding model (its
    entities are sentences), the one name of a one-channel (sigmoid) model, the names after
    ``background`` of a softmax model."""
    if parent.task == ModelTask.GROUNDING:
        return None
    names = list(parent.label_names)
    return names if len(names) == 1 else names[1:]


def _with_texts(project: Project, examples: list[dict]) -> list[dict]:
    """Grounding examples with their sentence: ``text`` as given, else the finding's (or proposal's)."""
    from annotation.models import Finding

    need = [e for e in examples if not (e.get("text") or "").strip()]
    findings = dict(
        Finding.objects.filter(
            project=project, pk__in=[e["finding"] for e in need if e.get("finding")]
        ).values_list("pk", "text")
    )
    proposals = dict(
        RegionProposal.objects.filter(
            project=project, pk__in=[e["proposal"] for e in need if e.get("proposal")]
        ).values_list("pk", "text")
    )
    out = []
    for e in examples:
        text = (
            (e.get("text") or "").strip()
            or findings.get(e.get("finding"), "")
            or proposals.get(e.get("proposal"), "")
        )
        if not text.strip():
            which = f"finding #{e['finding']}" if e.get("finding") else f"proposal #{e.get('proposal')}"
            raise TrainingError(
                "examples", f"{which} has no sentence: a grounding model learns (sentence, mask)"
            )
        out.append({**e, "text": text.strip()})
    return out


def evaluation_release(project: Project, release_id: int | None = None):
    """The frozen release a grounding run is evaluated on: ``release_id`` (one of a dataset over
    ``project``), else the newest frozen release holding validation cases of ``project``'s scans; None when
    there is none."""
    from releases.models import DatasetRelease, ReleaseCase, ReleaseStatus

    releases = DatasetRelease.objects.filter(dataset__projects=project, status=ReleaseStatus.FROZEN)
    if release_id is not None:
        release = releases.filter(pk=release_id).first()
        if release is None:
            raise TrainingError(
                "release", f"#{release_id} is no frozen release of a dataset over {project.slug}"
            )
        return release
    for release in releases.order_by("-frozen_at", "-id")[:20]:
        if ReleaseCase.objects.filter(release=release, split="val", scan__project=project).exists():
            return release
    return None


def _grounding_split(project: Project, examples: list[dict], checked: TrainParams, release_id) -> dict:
    """Train scans and the evaluation: a release's validation split (its val and test patients are not
    trained on), else a patient split of the examples (held-out accepted findings)."""
    from releases.models import ReleaseCase

    release = evaluation_release(project, release_id)
    if release is not None:
        held = ReleaseCase.objects.filter(release=release, split__in=["val", "test"], scan__isnull=False)
        held_patients = set(held.values_list("scan__study__patient_id", flat=True))
        val = sorted(set(held.filter(split="val", scan__project=project).values_list("scan_id", flat=True)))
        train = sorted({e["scan"] for e in examples if e["patient"] not in held_patients})
        if not train:
            raise TrainingError(
                "examples", f"every example's patient is in the validation or test split of {release}"
            )
        evaluation = {"source": "release", "release": release.pk, "dataset": release.dataset.slug,
                      "version": release.version, "split": "val"}  # fmt: skip
        return {"train": train, "val": val, "evaluation": evaluation}
    patients = [e["patient"] for e in examples]
    if len(set(patients)) < 2:
        raise TrainingError(
            "examples",
            "cases of at least 2 patients are needed for a patient-level validation split "
            "(or a frozen release of the project to evaluate on)",
        )
    val_patients = _patient_split(patients, checked.val_fraction, checked.seed)
    return {
        "train": sorted({e["scan"] for e in examples if e["patient"] not in val_patients}),
        "val": sorted({e["scan"] for e in examples if e["patient"] in val_patients}),
        "evaluation": {"source": "held-out accepted findings"},
    }


def mask_sha256(key: str) -> str:
    with default_storage.open(key, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def training_run_create(
    *,
    parent: ModelVersion,
    proposal_ids: list[int] | None = None,
    examples: list[dict] | None = None,
    name: str = "",
    params: dict | None = None,
    user=None,
    release: int | None = None,
) -> TrainingRun:
    """Freeze the cases (masks hashed) and split them by patient. Cases: region proposals (``proposal_ids``)
    and/or ``examples`` made elsewhere (``annotation.training``: accepted findings' current masks), each
    ``{"scan", "patient", "label", "mask", "sha256", ...}``; a grounding model's also ``text`` (filled
    from the finding or proposal when missing) and its evaluation (``release``: a release id, default the
    newest that holds the project; see the module docstring)."""
    project: Project = parent.project
    try:
        checked = TrainParams.from_dict(params)
    except (TypeError, ValueError) as exc:
        raise TrainingError("params", f"{exc}") from exc
    if parent.status != ModelStatus.READY:
        raise TrainingError("parent", f"{parent} is not ready ({parent.status})")
    if parent.format != ModelFormat.STATE_DICT:
        raise TrainingError(
            "parent", f"training continues from a state dict with a network spec, not {parent.format}"
        )
    if not proposal_ids and not examples:
        raise TrainingError("examples", "give accepted findings or region proposals to train on")
    labels = trainable_labels(parent)
    given = list(examples or [])
    for e in given:
        if labels is not None and e.get("label") not in labels:
            raise TrainingError("examples", f"{e.get('label')!r} is not one of the model's labels {labels}")
    examples = (_proposal_examples(project, list(proposal_ids), labels) if proposal_ids else []) + given
    if parent.task == ModelTask.GROUNDING:
        examples = _with_texts(project, examples)
        return TrainingRun.objects.create(
            project=project, parent=parent, name=name or parent.name, params=checked.as_dict(),
            examples=examples, split=_grounding_split(project, examples, checked, release), created_by=user,
        )  # fmt: skip
    patients = [e["patient"] for e in examples]
    if len(set(patients)) < 2:
        raise TrainingError(
            "examples", "cases of at least 2 patients are needed for a patient-level validation split"
        )
    val_patients = _patient_split(patients, checked.val_fraction, checked.seed)
    split = {
        "train": sorted({e["scan"] for e in examples if e["patient"] not in val_patients}),
        "val": sorted({e["scan"] for e in examples if e["patient"] in val_patients}),
    }
    return TrainingRun.objects.create(
        project=project,
        parent=parent,
        name=name or parent.name,
        params=checked.as_dict(),
        examples=examples,
        split=split,
        created_by=user,
    )


def training_run_start(*, run: TrainingRun, user=None) -> Job:
    from ml.tasks import train_model

    with transaction.atomic():
        job = job_create(project=run.project, kind="training", user=user, params={"training_run": run.pk})
        TrainingRun.objects.filter(pk=run.pk).update(job=job, status=JobStatus.PENDING)
        job_dispatch(job=job, task=train_model)
    return job


def example_mask_array(key: str, expected_sha: str) -> np.ndarray:
    with default_storage.open(key, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != expected_sha:
        raise TrainingError("examples", f"the mask {key} changed after the run was created")
    try:
        return mask_decode(data, name=key)  # the one mask codec: (X, Y[, Z]) booleans
    except MaskError as exc:
        raise TrainingError("examples", str(exc)) from exc


def _cases(run: TrainingRun, scan_ids: list[int]):
    """Preprocessed images and label maps on the model's grid (labels resampled nearest)."""
    from ml.engine.inference import preprocess
    from ml.engine.training import training_case
    from ml.preannotate import scan_volume
    from ml.specs import InputSpec

    spec = InputSpec.from_dict(run.parent.input_spec)
    names = run.parent.label_names
    out = []
    for scan in Scan.objects.filter(pk__in=scan_ids).order_by("pk"):
        volume = scan_volume(scan)
        labels = np.zeros(volume.shape[: spec.ndim], dtype=np.int64)
        for e in run.examples:
            if e["scan"] == scan.pk:
                labels[example_mask_array(e["mask"], e["sha256"])] = names.index(e["label"])
        spacing = [float(s) for s in scan.spacing]
        if scan.ndim == 3:  # models see the scan reordered to RAS, as pre-annotation gives it
            from ml.engine.orientation import to_ras

            labels = to_ras(labels, np.asarray(scan.affine), spacing)[0]
            volume, spacing, _ = to_ras(volume, np.asarray(scan.affine), spacing)
        image, _ = preprocess(volume, spacing, spec)
        out.append(training_case(image, labels))
    return out


def run_checkpoints(run: TrainingRun):
    """``(resume, save)`` for a run's training loop: the state of its last checkpoint (``None`` for a new
    run) and a ``save(state)`` that stores a new checkpoint in place of the old one and records its step."""
    from ml.engine.training import checkpoint_bytes, checkpoint_load

    resume = None
    if run.checkpoint:
        with default_storage.open(run.checkpoint.name, "rb") as fh:
            resume = checkpoint_load(fh.read())
    key = project_key(run.project, "training", f"run-{run.pk}", "checkpoint.pt")

    def save(state) -> None:
        old = TrainingRun.objects.get(pk=run.pk).checkpoint.name
        stored = storage_save_bytes(key, checkpoint_bytes(state))
        TrainingRun.objects.filter(pk=run.pk).update(checkpoint=stored, step=state["step"])
        if old and old != stored:
            default_storage.delete(old)

    return resume, save


def training_run_execute(*, run: TrainingRun, device: str | None = None, on_step=None) -> TrainingRun:
    """Train (resuming from the run's checkpoint), validate, and register a better version."""
    from ml.engine.devices import pick_device
    from ml.engine.loading import load_model
    from ml.engine.training import dice_score, train

    device = device or pick_device()
    TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.RUNNING, error="")
    if run.parent.task == ModelTask.GROUNDING:
        from ml.grounding_training import grounding_run_execute

        return grounding_run_execute(run, device, on_step)
    params = TrainParams.from_dict(run.params)
    roi = run.parent.input_spec["roi_size"]
    train_cases, val_cases = _cases(run, run.split["train"]), _cases(run, run.split["val"])
    from core.storage import storage_local_copy

    with storage_local_copy(run.parent.weights.name) as local:
        model = load_model(local, run.parent.format, network=run.parent.network, device=device)
    metrics = dict(run.metrics)
    if "parent_val_dice" not in metrics:
        metrics["parent_val_dice"] = dice_score(model, val_cases, roi, device=device)
        TrainingRun.objects.filter(pk=run.pk).update(metrics=metrics)
    resume, save = run_checkpoints(run)

    result = train(
        model,
        train_cases,
        roi,
        len(run.parent.label_names),
        params,
        save=save,
        resume=resume,
        device=device,
        on_step=on_step,
    )
    metrics.update(
        val_dice=dice_score(model, val_cases, roi, device=device),
        steps=result.steps_done,
        resumed_from=result.resumed_from,
        patches_per_second=result.patches_per_second,
        train_cases=len(train_cases),
        val_cases=len(val_cases),
    )
    return run_finish(run, model, metrics, {"val_dice": metrics["val_dice"], "training_run": run.pk})


def run_finish(run: TrainingRun, model, metrics: dict, version_metrics: dict) -> TrainingRun:
    """A trained run's end: its weights registered as a new version of its parent (with
    ``version_metrics``) when its ``val_dice`` beats the parent's on the same cases, and the run marked
    succeeded with ``metrics`` and that version (or none)."""
    from ml.engine.training import save_state_dict
    from ml.services import model_version_register

    new_version = None
    if metrics["val_dice"] > metrics["parent_val_dice"]:
        parent = run.parent
        with tempfile.TemporaryDirectory(prefix="trained-") as tmp:
            path = Path(tmp) / "model.pt"
            save_state_dict(model, path)
            new_version = model_version_register(
                project=run.project, path=path, fmt=ModelFormat.STATE_DICT, name=run.name, task=parent.task,
                input_spec=parent.input_spec, label_names=parent.label_names, network=parent.network,
                parent=parent, metrics=version_metrics,
            )  # fmt: skip
    TrainingRun.objects.filter(pk=run.pk).update(
        status=JobStatus.SUCCEEDED, metrics=metrics, result=new_version, finished_at=timezone.now()
    )
    run.refresh_from_db()
    return run


def training_job(*, job: Job) -> tuple[dict[str, Any], dict, list[dict]]:
    run = TrainingRun.objects.get(pk=job.params["training_run"])
    try:
        run = training_run_execute(run=run)
    except Exception as exc:
        TrainingRun.objects.filter(pk=run.pk).update(
            status=JobStatus.FAILED, error=public_message(exc)[:2000]
        )
        raise
    return {"training_run": run.pk, "metrics": run.metrics, "model_version": run.result_id}, {}, []
