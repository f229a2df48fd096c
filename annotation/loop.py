"""The learning loop: accepted findings train the project's model, and a better model re-orders the queue.

``Project.train_after_accepted`` = N (0: off). When a finding is accepted (``services._close``, once the
transaction commits) ``loop_after_accept`` counts the accepted findings with a mask that the loop's model
can learn and that no training run has frozen yet (a failed run does not use them up); at N or more, and
with no loop job or training of that model under way, it starts one loop job on the ``gpu`` queue
(``annotation.tasks.learning_loop``). The job:

1. trains a new version from *all* the accepted findings the model can learn (a ``TrainingRun``: the
   frozen snapshot, patient split, checkpoints; delivered again after a crash it resumes, and a run that
   already succeeded is not trained twice);
2. when the new version beats its parent on the validation cases (``ml.training``), checks it (the
   forward pass of ``ml.services.model_version_validate``, unless it is ready already) and scores the
   scans of the open review tasks with it (``ml.active_learning.scores_compute``);
3. re-orders the queue by those scores (``services.queue_reprioritise``), so the next task anyone asks
   for is the case the new version is least sure of.

A version that does not beat its parent changes nothing: the queue keeps its order.

What the loop trains (``loop_plan``) continues what a person last did by hand: the model of the project's
newest training run from accepted findings (the train-from-accepted API, ``manage.py learning_loop`` or
an earlier loop job), with that run's mapping of finding codes to model labels and its training
parameters. Without one: the newest ready, trainable (state dict) segmentation or grounding model that
the most accepted findings map to, each finding by its code when that is a label of the model, else by
the label of the region proposal its first version started from; default training parameters. The
strategy is the one last used to score cases with that model (``ml.active_learning.loop_strategy``),
else predictive entropy. ``manage.py learning_loop`` shows the plan and starts a turn by hand, with any
of these chosen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from annotation.models import OPEN_STAGES, Annotation, Finding, FindingStatus, ReviewTask
from annotation.queue import queue_reprioritise
from annotation.training import accepted_examples
from annotation.versions import groundings
from core.errors import Conflict, FieldError, public_message
from core.jobs import LIVE, job_create, job_dispatch
from core.models import Job, JobStatus, Project
from ml.active_learning import loop_strategy, scores_compute, strategy_check
from ml.models import ModelFormat, ModelStatus, ModelTask, ModelVersion, TrainingRun
from ml.services import model_version_validate
from ml.training import TrainingError, training_run_create, training_run_execute

log = logging.getLogger(__name__)

LOOP_JOB = "learning_loop"


class LoopError(FieldError):
    """The loop cannot train: no model, nothing it can learn, a loop already running: ``(field, reason)``."""


@dataclass
class LoopPlan:
    """What a turn of the loop trains: ``parent`` (the newest ready version of the model), ``label_map``
    (finding code -> model label), ``params`` (training), ``strategy`` (scores after a better version),
    ``findings`` (finding id -> label: every accepted finding with a mask the model can learn) and ``new``
    (how many of them no training run has frozen)."""

    parent: ModelVersion
    label_map: dict[str, str]
    params: dict[str, Any]
    strategy: str
    findings: dict[int, str] = field(default_factory=dict)
    new: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.parent.name,
            "parent_version": self.parent.version,
            "label_map": self.label_map,
            "params": self.params,
            "strategy": self.strategy,
            "findings": len(self.findings),
            "new": self.new,
        }


def loop_threshold(project: Project) -> int:
    """N of ``Project.train_after_accepted`` (0: the loop is off)."""
    return max(0, int(getattr(project, "train_after_accepted", 0) or 0))


def _labels(parent: ModelVersion) -> list[str] | None:
    """The labels the model's examples may carry (None: any finding, a grounding model)."""
    if parent.task == ModelTask.GROUNDING:
        return None
    names = list(parent.label_names)
    return names if len(names) == 1 else names[1:]


def _accepted(project: Project) -> list[Finding]:
    """Accepted findings on a scan that have a mask (their newest mask version, whatever box was saved
    after it: ``annotation.versions.groundings``), oldest first."""
    accepted = Finding.objects.filter(project=project, status=FindingStatus.ACCEPTED, scan__isnull=False)
    findings = list(accepted.order_by("id"))
    grounded = groundings(findings)
    return [f for f in findings if grounded[f.pk].mask is not None]


def _start_labels(findings: list[Finding]) -> dict[int, str]:
    """Finding id -> the label of the region proposal its version 1 started from."""
    rows = Annotation.objects.filter(
        finding__in=[f.pk for f in findings], version=1, region_proposal__isnull=False
    ).values_list("finding_id", "region_proposal__label", "region_proposal__code")
    return {fid: label or code for fid, label, code in rows}


def _mapped(
    findings: list[Finding], labels: list[str] | None, label_map: dict[str, str], starts: dict[int, str]
) -> dict[int, str]:
    """Finding id -> model label for the findings the model can learn: ``label_map`` by code, else the
    code itself, else the label of the proposal the finding started from."""
    out = {}
    for f in findings:
        for candidate in (label_map.get(f.code), f.code, starts.get(f.pk)):
            if candidate and (labels is None or candidate in labels):
                out[f.pk] = candidate
                break
    return out


def _frozen(project: Project) -> set[int]:
    """Findings that a training run of the project has frozen (failed runs excepted)."""
    runs = TrainingRun.objects.filter(project=project).exclude(status=JobStatus.FAILED)
    return {int(e["finding"]) for run in runs.only("examples") for e in run.examples if e.get("finding")}


def _last_run(project: Project, name: str | None = None) -> TrainingRun | None:
    """The newest training run from accepted findings (examples that name a finding)."""
    runs = TrainingRun.objects.filter(project=project).select_related("parent").order_by("-id")
    if name:
        runs = runs.filter(name=name)
    for run in runs.only("id", "name", "params", "examples", "parent")[:50]:
        if any(e.get("finding") for e in run.examples):
            return run
    return None


def _trainable(project: Project) -> list[ModelVersion]:
    """The newest ready version of each model the loop can train (a state dict: segmentation, grounding)."""
    newest: dict[str, ModelVersion] = {}
    for version in ModelVersion.objects.filter(
        project=project,
        status=ModelStatus.READY,
        format=ModelFormat.STATE_DICT,
        task__in=[ModelTask.SEGMENTATION, ModelTask.GROUNDING],
    ).order_by("name", "-version"):
        newest.setdefault(version.name, version)
    return list(newest.values())


def _newest_ready(project: Project, name: str) -> ModelVersion:
    version = (
        ModelVersion.objects.filter(project=project, name=name, status=ModelStatus.READY)
        .order_by("-version")
        .first()
    )
    if version is None:
        raise LoopError("model", f"no ready version of {name!r} in {project.slug}")
    if version.format != ModelFormat.STATE_DICT:
        raise LoopError(
            "model", f"{name} v{version.version} is a {version.format}: training needs a state dict"
        )
    return version


def loop_plan(
    project: Project,
    *,
    model: str | None = None,
    label_map: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    strategy: str | None = None,
) -> LoopPlan:
    """What a turn of the loop would train now (see the module docstring); the arguments override the
    choice. ``LoopError`` when there is no model to train or no accepted finding it can learn."""

    findings = _accepted(project)
    starts = _start_labels(findings)
    last = _last_run(project, model)
    if model is not None:
        parent = _newest_ready(project, model)
    elif last is not None:
        parent = _newest_ready(project, last.name)
    else:
        candidates = _trainable(project)
        if not candidates:
            raise LoopError("model", f"{project.slug} has no ready state-dict model to train")
        counted = [(len(_mapped(findings, _labels(v), label_map or {}, starts)), v.pk, v) for v in candidates]
        best = max(counted, key=lambda c: (c[0], c[1]))
        parent = best[2]
    remembered: dict[str, str] = {}
    if last is not None and last.name == parent.name:
        codes = dict(Finding.objects.filter(project=project).values_list("pk", "code"))
        for e in last.examples:
            if e.get("finding") in codes and e.get("label"):
                remembered[codes[e["finding"]]] = e["label"]
    chosen_map = {**remembered, **(label_map or {})}
    mapped = _mapped(findings, _labels(parent), chosen_map, starts)
    if not mapped:
        raise LoopError(
            "label_map",
            f"no accepted finding with a mask maps to a label of {parent.name} ({_labels(parent)}); "
            "map finding codes to its labels (learning_loop --label-map CODE=LABEL)",
        )
    if params is None:
        params = dict(last.params) if last is not None and last.name == parent.name else {}
    chosen = strategy or loop_strategy(project, name=parent.name)
    strategy_check(chosen, parent)
    frozen = _frozen(project)
    codes = {f.pk: f.code for f in findings}
    used = {codes[pk]: label for pk, label in mapped.items()}
    return LoopPlan(
        parent=parent,
        label_map=used,
        params=params,
        strategy=chosen,
        findings=mapped,
        new=sum(1 for pk in mapped if pk not in frozen),
    )


def loop_running(project: Project) -> bool:
    """A loop job pending or running in the project."""
    return Job.objects.filter(project=project, kind=LOOP_JOB, status__in=LIVE).exists()


def loop_start(*, project: Project, plan: LoopPlan, user=None) -> tuple[TrainingRun, Job]:
    """Freeze the plan's findings into a training run and start the loop job on the ``gpu`` queue.
    ``Conflict`` when a loop job or a training of the same model is under way."""
    from annotation.tasks import learning_loop  # a cycle: annotation.tasks runs this module's loop_job

    by_pair: dict[tuple[str, str], list[int]] = {}
    codes = dict(Finding.objects.filter(pk__in=list(plan.findings)).values_list("pk", "code"))
    for pk, label in plan.findings.items():
        by_pair.setdefault((codes[pk], label), []).append(pk)
    labels = _labels(plan.parent)
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()  # one loop start at a time
        if loop_running(project):
            raise Conflict("a learning-loop job of this project is still running", field="loop")
        if TrainingRun.objects.filter(project=project, name=plan.parent.name, job__status__in=LIVE).exists():
            raise Conflict(f"a training run of {plan.parent.name} is still under way", field="loop")
        examples = []
        for (code, label), ids in sorted(by_pair.items()):
            examples += accepted_examples(project, sorted(ids), labels, {code: label})
        try:
            run = training_run_create(parent=plan.parent, examples=examples, params=plan.params, user=user)
        except TrainingError as exc:
            raise LoopError(exc.field or "examples", exc.reason) from exc
        job = job_create(
            project=project,
            kind=LOOP_JOB,
            user=user,
            params={"training_run": run.pk, **plan.as_dict()},
        )
        TrainingRun.objects.filter(pk=run.pk).update(job=job, status=JobStatus.PENDING)
        job_dispatch(job=job, task=learning_loop)
    run.refresh_from_db()
    return run, job


def loop_after_accept(*, project_id: int) -> dict[str, Any]:
    """After a finding was accepted: start a loop job when the project's threshold is reached. Returns
    what happened (``started``: the job id or None, ``reason``); a loop that is on but cannot train is
    logged as a warning and tried again at the next acceptance."""
    project = Project.objects.get(pk=project_id)
    every = loop_threshold(project)
    if every == 0:
        return {"started": None, "reason": "the learning loop is off (train_after_accepted = 0)"}
    if loop_running(project):
        return {"started": None, "reason": "a learning-loop job is running"}
    try:
        plan = loop_plan(project)
    except FieldError as exc:
        log.warning("learning loop of %s: %s", project.slug, exc)
        return {"started": None, "reason": str(exc)}
    if plan.new < every:
        return {"started": None, "reason": f"{plan.new} of {every} new accepted findings"}
    try:
        run, job = loop_start(project=project, plan=plan)
    except (Conflict, FieldError) as exc:
        log.warning("learning loop of %s: %s", project.slug, exc)
        return {"started": None, "reason": str(exc)}
    log.info(
        "learning loop of %s: job %s trains %s on %s findings",
        project.slug,
        job.pk,
        plan.parent,
        len(run.examples),
    )
    return {"started": job.pk, "reason": f"{plan.new} new accepted findings (threshold {every})"}


def open_scan_ids(project: Project) -> list[int]:
    """The scans of the project's open review tasks."""
    return sorted(
        set(
            ReviewTask.objects.filter(
                project=project, stage__in=OPEN_STAGES, finding__scan__isnull=False
            ).values_list("finding__scan_id", flat=True)
        )
    )


def loop_job(*, job: Job) -> tuple[dict[str, Any], dict, list[dict]]:
    """The ``gpu`` side of one turn: train (or resume), then, with a better version, check it, score the
    open cases and re-order the queue."""

    run = TrainingRun.objects.select_related("parent").get(pk=job.params["training_run"])
    if run.status != JobStatus.SUCCEEDED:
        try:
            run = training_run_execute(run=run)
        except Exception as exc:
            TrainingRun.objects.filter(pk=run.pk).update(
                status=JobStatus.FAILED, error=public_message(exc)[:2000]
            )
            raise
    result: dict[str, Any] = {
        "training_run": run.pk,
        "metrics": run.metrics,
        "model_version": run.result_id,
        "beat_parent": run.result_id is not None,
    }
    if run.result_id is None:
        return result, {"examples": len(run.examples)}, []
    version = ModelVersion.objects.get(pk=run.result_id)
    if version.status == ModelStatus.VALIDATING:
        version, _ = model_version_validate(version=version)
    if version.status != ModelStatus.READY:
        raise LoopError(
            "model", f"the new version {version.name} v{version.version} failed its check: {version.error}"
        )
    if version.task == ModelTask.GROUNDING:  # its scores would need a sentence per scan: the queue stays
        result.update(scored=0, reordered=0, note="a grounding version does not score cases")
        return result, {"examples": len(run.examples), "scored": 0, "reordered": 0}, []
    strategy = job.params.get("strategy") or "predictive_entropy"
    scans = open_scan_ids(job.project)
    rows = scores_compute(
        project=job.project,
        strategy=strategy,
        version=version,
        params=job.params.get("score_params"),
        scan_ids=scans,
    )
    changed = queue_reprioritise(project=job.project, strategy=strategy, model_version=version) if rows else 0
    result.update(strategy=strategy, scored=len(rows), reordered=changed)
    return result, {"examples": len(run.examples), "scored": len(rows), "reordered": changed}, []
