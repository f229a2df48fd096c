"""Training and evaluating a text-conditioned grounding model (``task == "grounding"``,
``ml.engine.grounding``; ``ml.training`` makes its runs and hands their execution here): the training
scans as ``GroundingCase``s, one target per sentence; the evaluation cases (a release's validation split or
the held-out accepted findings); a predictor for ``releases.evaluation.evaluate`` (the scan preprocessed
once for all its sentences); the run trained, evaluated with the ReXGroundingCT metrics beside its parent
and registered when its mean Dice is higher; a version evaluated on a release."""

from __future__ import annotations

from typing import Any

import numpy as np

from ml.models import ModelTask, ModelVersion, TrainingRun
from ml.specs import TrainParams
from ml.training import TrainingError, evaluation_release, example_mask_array, run_checkpoints, run_finish
from studies.models import Scan


def _eval_cases(run: TrainingRun):
    """The run's evaluation cases (``releases.evaluation``): the release's validation split, or the
    held-out examples' findings."""
    from releases.evaluation import finding_cases, release_cases
    from releases.models import DatasetRelease

    evaluation = run.split.get("evaluation") or {}
    ndim = int(run.parent.input_spec.get("ndim", 3))
    if evaluation.get("source") == "release":
        release = DatasetRelease.objects.get(pk=evaluation["release"])
        return release_cases(release, "val", project=run.project, ndim=ndim)
    val = set(run.split["val"])
    return finding_cases(
        run.project, [e["finding"] for e in run.examples if e["scan"] in val and e.get("finding")]
    )


def grounding_predictor(model, version: ModelVersion, *, device: str, encoder=None):
    """``predict(case)`` for ``releases.evaluation.evaluate``: one mask per finding of the case on the
    scan's grid, from its sentence alone (sliding-window inference with the whole volume's position
    channels when the model takes them; sigmoid > 0.5 for one output channel). The scan is preprocessed
    once (``ml.engine.inference.prepare``) and that input reused for each of its sentences."""
    from ml.encoders import text_encoder_for
    from ml.engine.inference import predict, prepare
    from ml.engine.orientation import from_ras, to_ras_with_affine
    from ml.preannotate import scan_volume
    from ml.specs import InputSpec

    spec = InputSpec.from_dict(version.input_spec)
    encoder = encoder or text_encoder_for(version.network, device)

    def run(case) -> list:
        scan = case.scan
        volume = scan_volume(scan)
        embeddings = encoder.encode([f.text for f in case.findings])
        spacing, affine, ornt = list(case.spacing), np.asarray(case.affine, dtype=np.float64), None
        if volume.ndim == 3:  # the model sees the scan reordered to RAS, as in training and pre-annotation
            volume, spacing, affine, ornt = to_ras_with_affine(volume, affine, spacing)
        prepared = prepare(model, volume, spacing, spec, affine)  # once per scan, for every sentence
        out = []
        for i in range(len(case.findings)):
            prediction = predict(
                model, None, spacing, spec, version.label_names, device=device,
                text_embedding=embeddings[i], affine=affine, prepared=prepared,
            )  # fmt: skip
            values = [r.value for r in prediction.labels]
            if not values:
                out.append(None)
                continue
            mask = np.isin(prediction.label_map, values)
            out.append(from_ras(mask, ornt) if ornt is not None else mask)
        return out

    return run


def grounding_evaluate(version: ModelVersion, cases, *, device: str, model=None) -> dict[str, Any]:
    """ReXGroundingCT metrics of ``version`` (or of ``model``, weights being trained from it) on ``cases``."""
    from releases.evaluation import evaluate

    if model is None:
        from core.storage import storage_local_copy
        from ml.engine.loading import load_model

        with storage_local_copy(version.weights.name) as local:
            model = load_model(local, version.format, network=version.network, device=device)
    model.eval()
    return evaluate(cases, grounding_predictor(model, version, device=device))


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a version keeps of an evaluation: the pooled figures and the per-category ones."""
    return {k: metrics[k] for k in ("cases", "findings", "dice_mean", "hit_rate", "instance", "distance",
                                    "by_category") if k in metrics}  # fmt: skip


def _grounding_cases(run: TrainingRun, scan_ids: list[int], texts: list[str]):
    """``GroundingCase``s of the training scans: the image on the model's grid with the whole volume's
    position channels, one entity per sentence (findings of one scan with the same sentence: their
    masks' union)."""
    from ml.engine.inference import preprocess
    from ml.engine.training import grounding_case
    from ml.preannotate import scan_volume
    from ml.specs import InputSpec

    spec = InputSpec.from_dict(run.parent.input_spec)
    position = bool((run.parent.network.get("args") or {}).get("position"))
    out = []
    for scan in Scan.objects.filter(pk__in=scan_ids).order_by("pk"):
        volume = scan_volume(scan)
        masks: dict[int, np.ndarray] = {}
        for e in run.examples:
            if e["scan"] == scan.pk:
                index = texts.index(e["text"])
                mask = example_mask_array(e["mask"], e["sha256"])
                masks[index] = mask | masks[index] if index in masks else mask
        spacing, affine = [float(s) for s in scan.spacing], np.asarray(scan.affine, dtype=np.float64)
        if scan.ndim == 3:  # models see the scan reordered to RAS, as pre-annotation gives it
            from ml.engine.orientation import to_ras, to_ras_with_affine

            masks = {i: to_ras(m, affine, spacing)[0] for i, m in masks.items()}
            volume, spacing, affine, _ = to_ras_with_affine(volume, affine, spacing)
        shape = volume.shape[: spec.ndim]
        image, _ = preprocess(volume, spacing, spec)
        out.append(
            grounding_case(image, sorted(masks.items()), affine=affine, scan_shape=shape, position=position)
        )
    return out


def grounding_run_execute(run: TrainingRun, device: str, on_step=None) -> TrainingRun:
    """Train a grounding model (resuming from the run's checkpoint), evaluate it and its parent with the
    ReXGroundingCT metrics, and register it when its mean Dice is higher."""
    from core.storage import storage_local_copy
    from ml.encoders import text_encoder_for
    from ml.engine.loading import load_model
    from ml.engine.training import train_grounding

    parent = run.parent
    params = TrainParams.from_dict(run.params)
    roi = parent.input_spec["roi_size"]
    train_scans = set(run.split["train"])
    examples = [e for e in run.examples if e["scan"] in train_scans]
    texts = sorted({e["text"] for e in examples})
    train_cases = _grounding_cases(run, sorted(train_scans), texts)
    eval_cases = _eval_cases(run)
    encoder = text_encoder_for(parent.network, device)
    with storage_local_copy(parent.weights.name) as local:
        model = load_model(local, parent.format, network=parent.network, device=device)
    metrics = dict(run.metrics)
    evaluation = run.split.get("evaluation") or {}
    if "parent_grounding" not in metrics:
        metrics["parent_grounding"] = _summary(
            grounding_evaluate(parent, eval_cases, device=device, model=model)
        )
        metrics["parent_val_dice"] = metrics["parent_grounding"]["dice_mean"]
        TrainingRun.objects.filter(pk=run.pk).update(metrics=metrics)
    resume, save = run_checkpoints(run)

    text = encoder.encode(texts)
    result = train_grounding(
        model, train_cases, text, roi, params, save=save, resume=resume, device=device, on_step=on_step
    )
    full = grounding_evaluate(parent, eval_cases, device=device, model=model)
    grounding = _summary(full)
    metrics.update(
        grounding=grounding,
        val_dice=grounding["dice_mean"],
        per_case=full["per_case"],
        evaluation=evaluation,
        steps=result.steps_done,
        resumed_from=result.resumed_from,
        patches_per_second=result.patches_per_second,
        train_cases=len(train_cases),
        train_entities=sum(len(c.entities) for c in train_cases),
        val_cases=len(eval_cases),
    )
    version_metrics = {"grounding": grounding, "evaluated_on": evaluation, "val_dice": grounding["dice_mean"],
                       "parent_grounding": metrics["parent_grounding"], "training_run": run.pk}  # fmt: skip
    return run_finish(run, model, metrics, version_metrics)


def model_version_evaluate(
    *, version: ModelVersion, release_id: int | None = None, device: str | None = None
) -> dict[str, Any]:
    """Evaluate a grounding version on the validation split of a release (``release_id``, default the
    newest frozen one holding the project's scans) and store the figures on it
    (``metrics["grounding"]``, ``metrics["evaluated_on"]``)."""
    from ml.engine.devices import pick_device
    from releases.evaluation import release_cases

    if version.task != ModelTask.GROUNDING:
        raise TrainingError(
            "model", f"{version} is a {version.task} model; grounding metrics need a grounding one"
        )
    release = evaluation_release(version.project, release_id)
    if release is None:
        raise TrainingError("release", f"{version.project.slug} has no frozen release with validation cases")
    ndim = int(version.input_spec.get("ndim", 3))
    cases = release_cases(release, "val", project=version.project, ndim=ndim)
    grounding = _summary(grounding_evaluate(version, cases, device=device or pick_device()))
    evaluated_on = {"source": "release", "release": release.pk, "dataset": release.dataset.slug,
                    "version": release.version, "split": "val"}  # fmt: skip
    metrics = {**version.metrics, "grounding": grounding, "evaluated_on": evaluated_on}
    ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics)
    version.metrics = metrics
    return metrics
