"""Active learning: score a project's unlabelled scans under a model and a strategy, so the annotation
queue can start with the cases the model is least sure of.

Strategies (``ml.engine.active``): ``predictive_entropy`` and ``bald`` (MC dropout; the model needs
dropout layers) need the model; ``random`` and ``foreground_aware_random`` (a stable seeded order of whole
cases; the foreground awareness applies to the patches drawn inside a case) do not; the ``power_`` variants
add seeded noise for diversity at ranking time. "Unlabelled" means: no region proposal of this project
has been used in a training run's snapshot for the scan. Scores are stored (``CaseScore``, one per scan,
model version and strategy; computing again replaces them).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from core.errors import FieldError
from core.jobs import job_create, job_dispatch
from core.models import Job, Project
from ml.models import CaseScore, ModelVersion, TrainingRun
from studies.models import Scan

MODEL_STRATEGIES = ("predictive_entropy", "bald")
STRATEGIES = ("random", "foreground_aware_random", *MODEL_STRATEGIES)


class ActiveLearningError(FieldError):
    """Bad strategy, model or selection: ``(field, reason)``."""


def unlabelled_scans(project: Project):
    labelled = {e["scan"] for run in TrainingRun.objects.filter(project=project) for e in run.examples}
    return Scan.objects.filter(project=project).exclude(pk__in=labelled).order_by("pk")


def _check(strategy: str, version: ModelVersion | None) -> str:
    base = strategy.removeprefix("power_")
    if base not in STRATEGIES:
        raise ActiveLearningError(
            "strategy", f"{strategy!r} is not one of {', '.join(STRATEGIES)} (or power_<...>)"
        )
    if base in MODEL_STRATEGIES and version is None:
        raise ActiveLearningError("model", f"strategy {strategy} needs a model")
    return base


def scores_compute(
    *,
    project: Project,
    strategy: str,
    version: ModelVersion | None = None,
    params: dict[str, Any] | None = None,
) -> list[CaseScore]:
    """Score every unlabelled scan the model accepts (modality and dimensions); stores and returns them."""
    params = dict(params or {})
    base = _check(strategy, version)
    seed = int(params.get("seed", 0))
    scans = list(unlabelled_scans(project))
    if version is not None:
        spec = version.input_spec
        scans = [
            s
            for s in scans
            if s.ndim == int(spec.get("ndim", 3))
            and (not spec.get("modality") or s.modality in spec["modality"])
        ]
    scores: dict[int, float] = {}
    if base in MODEL_STRATEGIES:
        from core.storage import storage_local_copy
        from ml.engine import active
        from ml.engine.devices import pick_device
        from ml.engine.loading import load_model
        from ml.preannotate import scan_volume
        from ml.specs import InputSpec

        device = params.get("device") or pick_device()
        with storage_local_copy(version.weights.name) as local:
            model = load_model(local, version.format, network=version.network, device=device)
        spec = InputSpec.from_dict(version.input_spec)
        for scan in scans:
            volume, spacing = scan_volume(scan), [float(v) for v in scan.spacing]
            if base == "bald":
                try:
                    value = active.bald(
                        model,
                        volume,
                        spacing,
                        spec,
                        samples=int(params.get("samples", 8)),
                        device=device,
                        seed=seed,
                    )
                except ValueError as exc:
                    raise ActiveLearningError("model", str(exc)) from exc
            else:
                value = active.predictive_entropy(model, volume, spacing, spec, device=device)
            scores[scan.pk] = value
    else:
        import hashlib

        for scan in scans:  # a stable seeded order (the same as ml.engine.active's, without torch)
            digest = hashlib.blake2b(f"{seed}:{scan.pk}".encode(), digest_size=8).digest()
            scores[scan.pk] = int.from_bytes(digest, "big") / 2**64
    with transaction.atomic():
        CaseScore.objects.filter(project=project, model_version=version, strategy=base).delete()
        rows = CaseScore.objects.bulk_create(
            CaseScore(project=project, scan_id=pk, model_version=version, strategy=base, score=value)
            for pk, value in scores.items()
        )
    return rows


def ranked(
    *, project: Project, strategy: str, version: ModelVersion | None = None, seed: int = 0
) -> list[CaseScore]:
    """The stored scores, best first; ``power_`` strategies re-rank them with seeded noise."""
    base = _check(strategy, version)
    rows = {
        str(r.scan_id): r
        for r in CaseScore.objects.filter(project=project, model_version=version, strategy=base)
    }
    if strategy.startswith("power_"):
        import numpy as np

        rng = np.random.default_rng(seed)
        keys = sorted(rows, key=int)
        # Gumbel top-k: the order of a draw without replacement with probabilities ∝ score (β = 1)
        noisy = {k: (np.log(rows[k].score) + rng.gumbel()) if rows[k].score > 0 else -np.inf for k in keys}
        order = sorted(keys, key=lambda k: (-noisy[k], int(k)))
    else:
        order = sorted(rows, key=lambda k: (-rows[k].score, int(k)))
    return [rows[k] for k in order]


def scores_start(
    *, project: Project, strategy: str, version: ModelVersion | None, params: dict | None, user=None
) -> Job:
    from ml.tasks import score_cases

    _check(strategy, version)
    with transaction.atomic():
        job = job_create(
            project=project,
            kind="active_learning",
            user=user,
            params={
                "strategy": strategy,
                "model_version": version.pk if version else None,
                "params": params or {},
            },
        )
        job_dispatch(job=job, task=score_cases)
    return job


def scores_job(*, job: Job) -> tuple[dict, dict, list[dict]]:
    version = ModelVersion.objects.filter(pk=job.params.get("model_version")).first()
    rows = scores_compute(
        project=job.project, strategy=job.params["strategy"], version=version, params=job.params.get("params")
    )
    return {"scored": len(rows)}, {"scans": len(rows)}, []
