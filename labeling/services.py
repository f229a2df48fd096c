"""Label runs: start (or resume) a run over a project's reports and execute it report by report.

Each report's proposals and its ``RunReport`` row are written in one transaction, so a run killed at any
point resumes without duplicates: reports already finished are skipped, failed ones are tried again.
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterable

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from core.jobs import job_create, job_dispatch
from core.models import Job, Project
from labeling.labelers import Labeler, LabelResult, labeler_for
from labeling.models import FindingProposal, LabelRun, LabelRunStatus, RunReport
from studies.models import Report

log = logging.getLogger(__name__)
CHUNK = 200
SECTIONS = ("indication", "comparison", "findings", "impression")


def settings_hash(*, labeler: Labeler, schema: str, params: dict) -> str:
    """What makes two runs the same: labeler and version, schema, parameters, prompt version, model,
    and how the labeler asks (temperature, seed, the endpoint's name: never its URL or key) where it says."""
    settings = {
        "recorded": _recorded(labeler),
        "labeler": labeler.name,
        "version": labeler.version,
        "schema": schema,
        "params": params,
        "prompt_version": labeler.prompt_version,
        "model": labeler.model_name,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _recorded(labeler: Labeler) -> dict:
    recorded = getattr(labeler, "recorded", None)
    return recorded() if callable(recorded) else {}


def label_run_get_or_create(
    *, project: Project, labeler: str, params: dict | None = None, user=None
) -> LabelRun:
    """The run of these settings in ``project``: an existing one (to resume or extend) or a new one."""
    params = params or {}
    instance = labeler_for(labeler, params)
    schema = project.label_schema
    run, _ = LabelRun.objects.get_or_create(
        project=project,
        settings_hash=settings_hash(labeler=instance, schema=schema, params=params),
        defaults={
            "labeler": labeler,
            "schema": schema,
            "params": {**params, "recorded": _recorded(instance)} if _recorded(instance) else params,
            "prompt_version": instance.prompt_version,
            "model_name": instance.model_name,
            "created_by": user,
        },
    )
    return run


def label_run_start(
    *,
    project: Project,
    labeler: str,
    params: dict | None = None,
    report_ids: list[int] | None = None,
    user=None,
) -> LabelRun:
    """Start (or resume) a run as a Job on its queue; ``report_ids`` limits it to a selection."""
    from labeling.tasks import run_labels, run_llm_labels

    with transaction.atomic():
        run = label_run_get_or_create(project=project, labeler=labeler, params=params, user=user)
        job = job_create(
            project=project, kind="label_run", user=user, params={"run_id": run.pk, "report_ids": report_ids}
        )
        run.job = job
        run.status = LabelRunStatus.PENDING
        run.save(update_fields=["job", "status"])
        job_dispatch(job=job, task=run_labels if labeler == "rules" else run_llm_labels)
    run.refresh_from_db()
    return run


def _report_sections(report: Report) -> dict[str, str]:
    return {name: getattr(report, name) or "" for name in SECTIONS}


def label_run_execute(
    *,
    run: LabelRun,
    report_ids: Iterable[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelRun:
    """Label every selected report of the run's project that the run has not finished yet."""
    labeler = labeler_for(run.labeler, {k: v for k, v in run.params.items() if k != "recorded"})
    reports = Report.objects.filter(project=run.project)
    if report_ids is not None:
        reports = reports.filter(pk__in=list(report_ids))
    finished = RunReport.objects.filter(run=run, ok=True).values("report_id")
    todo = reports.exclude(pk__in=finished).order_by("pk")
    total = reports.count()
    LabelRun.objects.filter(pk=run.pk).update(status=LabelRunStatus.RUNNING, total=total)
    last = 0
    while True:
        chunk = list(todo.filter(pk__gt=last)[:CHUNK])
        if not chunk:
            break
        for report, result in zip(chunk, _label_chunk(labeler, chunk, run.schema)):
            _store_one(run, report, result)
        last = chunk[-1].pk
        counts = _refresh_counts(run, reports)
        if progress is not None:
            progress(counts["done"] + counts["failed"], total)
    counts = _refresh_counts(run, reports)
    status = LabelRunStatus.SUCCEEDED if counts["done"] or not counts["failed"] else LabelRunStatus.FAILED
    LabelRun.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now())
    run.refresh_from_db()
    if status == LabelRunStatus.SUCCEEDED and run.project.findings_after_label_run:
        findings_follow(run)
    return run


FINDINGS_TASK = "annotation.findings_from_proposals"


def findings_follow(run: LabelRun) -> Job:
    """``Project.findings_after_label_run``: the finished run's findings and review tasks, made by the
    annotation app's job (its task found by name: labeling does not import annotation). A broker that
    cannot be reached fails that job, naming why; the run stays finished."""
    from config.celery import app
    from core.errors import ApplicationError, public_message
    from core.jobs import job_fail

    app.loader.import_default_modules()  # the apps' tasks modules (a worker has imported them already)
    job = job_create(
        project=run.project, kind="findings_from_proposals", user=run.created_by, params={"run_id": run.pk}
    )
    try:
        job_dispatch(job=job, task=app.tasks[FINDINGS_TASK])
    except ApplicationError as exc:
        job_fail(job_id=job.pk, reason=public_message(exc))
    return job


def _label_chunk(labeler: Labeler, reports: list[Report], schema: str) -> list[LabelResult | Exception]:
    """Label reports, up to ``labeler.concurrency`` at once (threads: LLM requests wait on the network,
    each thread closes its database connections); results come back in order and are stored by the
    calling thread. A failure is returned, not raised."""
    from labeling.llm.concurrency import label_many

    return label_many(labeler, [_report_sections(r) for r in reports], schema=schema)


def _store_one(run: LabelRun, report: Report, result: LabelResult | Exception) -> None:
    if isinstance(result, Exception):
        log.warning("labeling report %s failed: %s", report.pk, result)
        RunReport.objects.update_or_create(
            run=run,
            report=report,
            defaults={
                "ok": False,
                "error": f"{type(result).__name__}: {result}"[:2000],
                "raw_reply": str(getattr(result, "raw_reply", "") or "")[:100_000],
            },
        )
        return
    with transaction.atomic():
        FindingProposal.objects.filter(run=run, report=report).delete()
        FindingProposal.objects.bulk_create(
            [
                FindingProposal(
                    project_id=run.project_id,
                    run=run,
                    report=report,
                    phrase=p.phrase,
                    section=p.section,
                    start=p.start,
                    end=p.end,
                    assertion=p.assertion,
                    code=p.code,
                    laterality=p.laterality,
                    location=p.location,
                    size_mm=p.size_mm,
                    extra=p.extra,
                    disagreement=bool(p.extra.get("disagreement", False)),
                )
                for p in result.proposals
            ]
        )
        RunReport.objects.update_or_create(
            run=run,
            report=report,
            defaults={
                "ok": True,
                "error": "",
                "raw_reply": result.raw_reply,
                "proposals": len(result.proposals),
            },
        )
        if result.tokens_in or result.tokens_out or result.cost:
            run.tokens_in += result.tokens_in
            run.tokens_out += result.tokens_out
            run.cost += result.cost
            run.save(update_fields=["tokens_in", "tokens_out", "cost"])


def _refresh_counts(run: LabelRun, reports) -> dict[str, int]:
    states = RunReport.objects.filter(run=run, report__in=reports).aggregate(
        done=Count("pk", filter=Q(ok=True)),
        failed=Count("pk", filter=Q(ok=False)),
        proposals=Sum("proposals"),
    )
    counts = {
        "done": states["done"] or 0,
        "failed": states["failed"] or 0,
        "proposals": states["proposals"] or 0,
    }
    LabelRun.objects.filter(pk=run.pk).update(**counts)
    return counts


def label_run_job(*, job: Job) -> tuple[dict, dict, list[dict]]:
    """The body of a label-run job: execute, then summarise for the job row."""
    from core.jobs import job_progress

    run = LabelRun.objects.get(pk=job.params["run_id"])

    def progress(done: int, total: int) -> None:
        job_progress(
            job_id=job.pk, progress=done / total if total else 1.0, message=f"{done}/{total} reports"
        )

    try:
        run = label_run_execute(run=run, report_ids=job.params.get("report_ids"), progress=progress)
    except Exception:
        LabelRun.objects.filter(pk=run.pk).update(status=LabelRunStatus.FAILED, finished_at=timezone.now())
        raise
    errors = [
        {"report_id": s.report_id, "reason": s.error}
        for s in RunReport.objects.filter(run=run, ok=False).order_by("report_id")[:1000]
    ]
    counts = {"reports": run.total, "done": run.done, "failed": run.failed, "proposals": run.proposals}
    return {"run_id": run.pk, "status": run.status}, counts, errors
