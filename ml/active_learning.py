"""Active learning: score a project's unlabelled scans under a model and a strategy, so the annotation
queue can start with the cases the model is least sure of.

Strategies (``STRATEGIES``, the same names as ``ml.engine.active``): ``predictive_entropy`` and ``bald``
(MC dropout; the model needs dropout layers) need the model; ``random`` (a stable seeded order of whole
cases) and ``foreground_aware_random`` do not. ``foreground_aware_random`` is nnActive's query over the
pool: patches drawn with probabilities random : inside a foreground class : on its border, the cases
visited in a seeded shuffled cycle, so a case with foreground gets more of the patches; a case's score is
its share of the patches (ties in a seeded random order), and the drawn centres are the patches to look
at. The foreground of a scan is what the platform already proposes on it: the union of this project's
region proposals (generators, models, gaze) on the scan, one class per proposal label. The ``power_``
variants of the model strategies add seeded Gumbel noise for diversity at ranking time (``ranked``).
Anything else is refused (``ActiveLearningError``), never read as "no scores".

"Unlabelled" means: no region proposal or accepted finding of this project has been used in a training
run's snapshot for the scan; ``scan_ids`` scores named scans instead (the learning loop scores the scans
of the open review tasks). Scores are stored (``CaseScore``, one per scan, model version and strategy;
computing again replaces them). ``scored_version`` is the version whose scores a queue or listing reads:
the newest version of a model that has scores of the strategy, not merely the newest version.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import transaction

from core.errors import FieldError
from core.jobs import job_create, job_dispatch
from core.models import Job, Project
from ml.models import CaseScore, ModelVersion, TrainingRun
from studies.models import Scan

MODEL_STRATEGIES = ("predictive_entropy", "bald")
BASE_STRATEGIES = ("random", "foreground_aware_random", *MODEL_STRATEGIES)
STRATEGIES = (*BASE_STRATEGIES, *(f"power_{s}" for s in MODEL_STRATEGIES))
DEFAULT_STRATEGY = "predictive_entropy"


class ActiveLearningError(FieldError):
    """Bad strategy, model or selection: ``(field, reason)``."""


def unlabelled_scans(project: Project):
    labelled = {e["scan"] for run in TrainingRun.objects.filter(project=project) for e in run.examples}
    return Scan.objects.filter(project=project).exclude(pk__in=labelled).order_by("pk")


def strategy_check(strategy: str, version: ModelVersion | None) -> str:
    """The stored strategy name of ``strategy`` (``power_x`` is stored as ``x``); ``ActiveLearningError``
    for a name not in ``STRATEGIES`` or a model strategy without a model."""
    if strategy not in STRATEGIES:
        raise ActiveLearningError("strategy", f"{strategy!r} is not one of {', '.join(STRATEGIES)}")
    base = strategy.removeprefix("power_")
    if base in MODEL_STRATEGIES and version is None:
        raise ActiveLearningError("model", f"strategy {strategy} needs a model")
    return base


def _seeded_uniform(seed: int, scan_id: int) -> float:
    """A stable number in [0, 1) per (seed, scan): the random strategy's score and the tie-breaker."""
    digest = hashlib.blake2b(f"{seed}:{scan_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def scores_compute(
    *,
    project: Project,
    strategy: str,
    version: ModelVersion | None = None,
    params: dict[str, Any] | None = None,
    scan_ids: list[int] | None = None,
    patches: dict[int, list[dict]] | None = None,
) -> list[CaseScore]:
    """Score every unlabelled scan (or the project's scans ``scan_ids``) the model accepts (modality and
    dimensions); stores and returns them. ``params``: ``seed``; ``samples`` (BALD); ``device``;
    ``patches``, ``p_random``, ``p_inside``, ``p_border`` (foreground-aware random: how many patches the
    query draws, default three per scan, and the kinds' probabilities). ``patches`` (out): filled with
    scan id -> the drawn patch centres ``{"centre", "kind", "label"}`` for foreground-aware random."""
    params = dict(params or {})
    base = strategy_check(strategy, version)
    seed = int(params.get("seed", 0))
    if scan_ids is None:
        scans = list(unlabelled_scans(project))
    else:
        scans = list(Scan.objects.filter(project=project, pk__in=scan_ids).order_by("pk"))
        if missing := sorted(set(scan_ids) - {s.pk for s in scans}):
            raise ActiveLearningError("scan_ids", f"not scans of {project.slug}: {missing[:20]}")
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
        scores = _model_scores(base, version, scans, params, seed)
    elif base == "foreground_aware_random":
        scores, drawn = _foreground_aware_scores(project, scans, params, seed)
        if patches is not None:
            patches.update(drawn)
    else:
        scores = {scan.pk: _seeded_uniform(seed, scan.pk) for scan in scans}
    with transaction.atomic():
        CaseScore.objects.filter(project=project, model_version=version, strategy=base).delete()
        rows = CaseScore.objects.bulk_create(
            CaseScore(project=project, scan_id=pk, model_version=version, strategy=base, score=value)
            for pk, value in scores.items()
        )
    return rows


def _model_scores(
    base: str, version: ModelVersion, scans: list[Scan], params: dict, seed: int
) -> dict[int, float]:
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
    scores = {}
    for scan in scans:
        volume, spacing = scan_volume(scan), [float(v) for v in scan.spacing]
        if scan.ndim == 3:  # models see the scan reordered to RAS, as pre-annotation gives it
            from ml.engine.orientation import to_ras

            volume, spacing, _ = to_ras(volume, scan.affine, spacing)
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
    return scores


def _foreground_aware_scores(
    project: Project, scans: list[Scan], params: dict, seed: int
) -> tuple[dict[int, float], dict[int, list[dict]]]:
    """nnActive's foreground-aware random query over ``scans`` (see the module docstring): the score of a
    scan is ``(its patches + u) / (n + 1)`` with ``u`` its seeded uniform number, so more patches rank
    first and equal counts in a random order. Masks are read one scan at a time, only for the scans that
    got an inside or border patch."""
    from labeling.models import RegionProposal
    from ml.engine import active

    n = int(params.get("patches", 3 * len(scans)))
    kinds = {
        k: float(params[f"p_{k}"]) for k in ("random", "inside", "border") if params.get(f"p_{k}") is not None
    }
    with_foreground = set(
        RegionProposal.objects.filter(project=project, scan__in=scans, pixels__gt=0)
        .exclude(mask="")
        .values_list("scan_id", flat=True)
    )
    try:
        allocation = active.foreground_aware_allocation(
            {str(s.pk): s.pk in with_foreground for s in scans},
            n=n,
            seed=seed,
            **{f"p_{k}": v for k, v in kinds.items()},
        )
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        raise ActiveLearningError("params", f"{field}: {reason}") from exc
    scores: dict[int, float] = {}
    drawn: dict[int, list[dict]] = {}
    for scan in scans:
        got = allocation[str(scan.pk)]
        scores[scan.pk] = (len(got) + _seeded_uniform(seed, scan.pk)) / (n + 1)
        if not got:
            continue
        shape = [int(v) for v in scan.shape][: scan.ndim]
        foreground = _scan_foreground(project, scan, shape) if any(k != "random" for k in got) else None
        centres = active.foreground_aware_centres_of(shape, foreground, got, seed=seed + scan.pk)
        drawn[scan.pk] = [{"centre": list(c.centre), "kind": c.kind, "label": c.label} for c in centres]
    return scores, drawn


def _scan_foreground(project: Project, scan: Scan, shape: list[int]):
    """A label map of ``shape`` from the project's region proposals on ``scan`` (one class per proposal
    label, in label order; a later proposal's voxels overwrite an earlier one's), or None without any."""
    import numpy as np

    from labeling.models import RegionProposal
    from studies.masks import MaskError, mask_read

    proposals = list(
        RegionProposal.objects.filter(project=project, scan=scan, pixels__gt=0)
        .exclude(mask="")
        .order_by("id")
    )
    if not proposals:
        return None
    names = sorted({p.label or p.code for p in proposals})
    labels = np.zeros(shape, dtype=np.uint16)
    for p in proposals:
        try:
            mask = mask_read(p.mask.name)  # the one mask codec (studies/masks.py): (X, Y[, Z]) booleans
        except MaskError as exc:
            raise ActiveLearningError("foreground", f"proposal #{p.pk}: {exc}") from exc
        mask = mask.reshape(mask.shape[: len(shape)]) if mask.ndim > len(shape) else mask
        if list(mask.shape) != shape:
            raise ActiveLearningError(
                "foreground", f"proposal #{p.pk}'s mask {p.mask.name} is {list(mask.shape)}, its scan {shape}"
            )
        labels[mask] = names.index(p.label or p.code) + 1
    return labels


def ranked(
    *, project: Project, strategy: str, version: ModelVersion | None = None, seed: int = 0
) -> list[CaseScore]:
    """The stored scores, best first; ``power_`` strategies re-rank them with seeded noise."""
    base = strategy_check(strategy, version)
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


def scored_version(*, project: Project, name: str, strategy: str) -> ModelVersion:
    """The newest version of model ``name`` that has stored scores of ``strategy`` (its base name): a
    newer version that was never scored does not hide the scores of an older one. ``ActiveLearningError``
    when the model is unknown or none of its versions has such scores."""
    base = strategy.removeprefix("power_")
    versions = ModelVersion.objects.filter(project=project, name=name)
    if not versions.exists():
        raise ActiveLearningError("model", f"no model {name!r} in {project.slug}")
    scored = (
        versions.filter(
            pk__in=CaseScore.objects.filter(project=project, strategy=base).values("model_version")
        )
        .order_by("-version")
        .first()
    )
    if scored is None:
        raise ActiveLearningError(
            "model",
            f"no version of {name!r} has {base} scores yet: compute them first (POST active-learning)",
        )
    return scored


def loop_strategy(project: Project, name: str | None = None) -> str:
    """The strategy the learning loop scores with: the one of the newest model-based scores of the project
    (of model ``name`` when given: someone chose it for that model), else ``DEFAULT_STRATEGY``."""
    rows = CaseScore.objects.filter(
        project=project, strategy__in=MODEL_STRATEGIES, model_version__isnull=False
    )
    if name:
        rows = rows.filter(model_version__name=name)
    latest = rows.order_by("-created_at", "-id").values_list("strategy", flat=True).first()
    return latest or DEFAULT_STRATEGY


def scores_start(
    *, project: Project, strategy: str, version: ModelVersion | None, params: dict | None, user=None
) -> Job:
    from ml.tasks import score_cases

    strategy_check(strategy, version)
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
    patches: dict[int, list[dict]] = {}
    rows = scores_compute(
        project=job.project,
        strategy=job.params["strategy"],
        version=version,
        params=job.params.get("params"),
        patches=patches,
    )
    result: dict[str, Any] = {"scored": len(rows)}
    if patches:
        result["patches"] = {str(k): v for k, v in patches.items()}
    return result, {"scans": len(rows)}, []
