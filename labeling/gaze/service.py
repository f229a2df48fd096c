"""Gaze label runs: start (or resume) a run over a project's recordings and store what it makes.

The computation of one recording is pure (``labeling.gaze.labels``) and runs on worker processes when
several recordings are labelled (``GAZE_WORKERS``, 0 = one per core); this process stores each result as
it comes back, one recording per transaction with its files (all or nothing), so a killed run resumes
without duplicates. A recording that cannot give labels is stored as ``unusable`` with the reason.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from core.jobs import job_create, job_dispatch
from core.models import Job, JobStatus, Project
from core.storage import project_key, storage_all_or_nothing, storage_save_bytes
from labeling.gaze.labels import (
    GazeParams,
    RecordingInput,
    RecordingLabels,
    Unusable,
)
from labeling.gaze.sources import recording_anatomy, recording_region_masks
from labeling.gaze.worker import compute_one
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
from labeling.models.gaze import GazeResultStatus
from studies.models import GazeRecording, Report

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
VERSION = "gaze-labels-1"


def gaze_params(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Checked parameters, resolved: the preset ``raw["preset"]`` names (``labeling.gaze.presets``;
    default ``platform``) with ``raw``'s other values over it, every parameter and the preset's name
    included, so a run's stored params say the definition it used; ValueError naming the field."""
    return GazeParams.from_dict(raw).as_dict()


def gaze_run_get_or_create(
    *, project: Project, params: dict[str, Any] | None = None, user=None
) -> GazeLabelRun:
    """The run of these parameters in ``project`` (existing: to resume or extend; else new)."""
    full = gaze_params(params)
    digest = hashlib.sha256(json.dumps({"v": VERSION, **full}, sort_keys=True).encode()).hexdigest()
    run, _ = GazeLabelRun.objects.get_or_create(
        project=project, params_hash=digest, defaults={"params": full, "created_by": user}
    )
    return run


def gaze_run_start(
    *,
    project: Project,
    params: dict[str, Any] | None = None,
    recording_ids: list[int] | None = None,
    user=None,
) -> GazeLabelRun:
    """Start (or resume) a run as a Job on the ``default`` queue; ``recording_ids`` limits it."""
    from labeling.tasks import run_gaze_labels

    with transaction.atomic():
        run = gaze_run_get_or_create(project=project, params=params, user=user)
        job = job_create(
            project=project, kind="gaze_labels", user=user,
            params={"run_id": run.pk, "recording_ids": recording_ids},
        )  # fmt: skip
        GazeLabelRun.objects.filter(pk=run.pk).update(job=job, status=JobStatus.PENDING)
        job_dispatch(job=job, task=run_gaze_labels)
    run.refresh_from_db()
    return run


def gaze_run_execute(
    *,
    run: GazeLabelRun,
    recording_ids: Iterable[int] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> GazeLabelRun:
    """Label every selected recording of the run's project that the run has not finished yet."""
    recordings = GazeRecording.objects.filter(project=run.project)
    if recording_ids is not None:
        recordings = recordings.filter(pk__in=list(recording_ids))
    finished = GazeLabelResult.objects.filter(run=run).exclude(status=GazeResultStatus.FAILED)
    todo = list(
        recordings.exclude(pk__in=finished.values("recording_id")).order_by("pk").values_list("pk", flat=True)
    )
    total = recordings.count()
    GazeLabelRun.objects.filter(pk=run.pk).update(status=JobStatus.RUNNING, total=total)
    params = GazeParams.from_stored(run.params)
    links = _finding_links(run.project)
    n_workers = _worker_count(len(todo), workers)
    with ExitStack() as stack:
        pool = None
        if n_workers > 1:
            context = _mp_context()
            if context.get_start_method() == "fork":
                gc.freeze()
                stack.callback(gc.unfreeze)
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=n_workers, mp_context=context))
        jobs = _payloads(todo, params)
        results = (
            _bounded_map(pool, jobs, window=2 * n_workers) if pool is not None else map(compute_one, jobs)
        )
        for i, (recording, outcome) in enumerate(_paired(todo, results), start=1):
            _store(run, recording, outcome, params, links)
            if progress is not None and (i % 10 == 0 or i == len(todo)):
                counts = _refresh_counts(run, recordings)
                progress(counts["done"] + counts["unusable"] + counts["failed"], total)
    counts = _refresh_counts(run, recordings)
    status = JobStatus.FAILED if counts["failed"] and not counts["done"] else JobStatus.SUCCEEDED
    GazeLabelRun.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now())
    run.refresh_from_db()
    return run


def gaze_label_one(*, run: GazeLabelRun, recording: GazeRecording) -> GazeLabelResult:
    """Label one recording now (the synchronous API), replacing what the run had for it."""
    params = GazeParams.from_stored(run.params)
    with transaction.atomic():
        _clear(run, recording.pk)
    payload = next(_payloads([recording.pk], params))
    _store(run, recording, compute_one(payload), params, _finding_links(run.project))
    _refresh_counts(run, GazeRecording.objects.filter(project=run.project))
    return GazeLabelResult.objects.get(run=run, recording=recording)


def gaze_run_job(*, job: Job) -> tuple[dict, dict, list[dict]]:
    """The body of a gaze-labels job: execute, then summarise for the job row."""
    from core.jobs import job_progress

    run = GazeLabelRun.objects.get(pk=job.params["run_id"])

    def progress(done: int, total: int) -> None:
        job_progress(
            job_id=job.pk, progress=done / total if total else 1.0, message=f"{done}/{total} recordings"
        )

    try:
        run = gaze_run_execute(run=run, recording_ids=job.params.get("recording_ids"), progress=progress)
    except Exception:
        GazeLabelRun.objects.filter(pk=run.pk).update(status=JobStatus.FAILED, finished_at=timezone.now())
        raise
    errors = [
        {"recording_id": r.recording_id, "status": r.status, "reason": r.error}
        for r in GazeLabelResult.objects.filter(run=run).exclude(status=GazeResultStatus.DONE)[:1000]
    ]
    counts = {"recordings": run.total, "done": run.done, "unusable": run.unusable, "failed": run.failed}
    return {"run_id": run.pk, "status": run.status}, counts, errors


# --- computation (worker side: no database) ---------------------------------------------------------


def _payloads(ids: list[int], params: GazeParams) -> Iterator[dict[str, Any]]:
    """What a worker needs for each recording, loaded here (workers use no database)."""
    from studies.services.gaze import scan_image_size

    for pk in ids:
        rec = GazeRecording.objects.select_related("scan").get(pk=pk)
        masks, boxes = recording_anatomy(rec)
        yield {
            "recording": RecordingInput(
                external_id=rec.external_id, source_format=rec.source_format, width=rec.image_width,
                height=rec.image_height, fixations=rec.fixations, transcript=rec.transcript,
                expected_size=scan_image_size(rec.scan) if rec.scan is not None else None, boxes=boxes,
            ),
            "masks": masks, "params": params, "pk": pk,
        }  # fmt: skip


def _worker_count(todo: int, workers: int | None) -> int:
    wanted = workers if workers is not None else getattr(settings, "GAZE_WORKERS", 0)
    if wanted <= 0:
        wanted = os.cpu_count() or 1
    if multiprocessing.current_process().daemon:
        return 1
    return max(1, min(wanted, todo))


def _mp_context():
    """``fork`` when this process runs one thread (children use no database connection), else
    ``forkserver``."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["labeling.gaze.worker"])
    return context


def _bounded_map(pool: ProcessPoolExecutor, jobs: Iterator[dict[str, Any]], *, window: int) -> Iterator[dict]:
    """``compute_one`` over ``jobs`` on the pool, in order, with at most ``window`` recordings loaded or
    in flight (``Executor.map`` would load every payload at once: memory growing with the project)."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(compute_one, job))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _paired(
    ids: list[int], results: Iterable[dict[str, Any]]
) -> Iterator[tuple[GazeRecording, dict[str, Any]]]:
    for pk, outcome in zip(ids, results, strict=True):
        yield GazeRecording.objects.select_related("scan").get(pk=pk), outcome


# --- storing (this process) -------------------------------------------------------------------------


def _finding_links(project: Project) -> dict[int, dict[str, list[int]]]:
    """study id -> code -> ids of the present findings of the study's reports, from the project's latest
    finished report label run (the weak labels a sentence is linked to)."""
    run = LabelRun.objects.filter(project=project, status=JobStatus.SUCCEEDED).order_by("-id").first()
    if run is None:
        return {}
    out: dict[int, dict[str, list[int]]] = {}
    rows = FindingProposal.objects.filter(run=run, assertion="present").values_list("id", "code", "report_id")
    study_of = dict(Report.objects.filter(project=project).values_list("id", "study_id"))
    for pk, code, report_id in rows:
        study = study_of.get(report_id)
        if study is not None:
            out.setdefault(study, {}).setdefault(code, []).append(pk)
    return out


def _clear(run: GazeLabelRun, recording_id: int) -> None:
    keys = []
    for model, field in ((GazeAnatomyRecord, "focus_mask"), (RegionProposal, "mask")):
        rows = model.objects.filter(
            **({"gaze_run": run} if model is RegionProposal else {"run": run}), recording_id=recording_id
        )
        keys += [getattr(row, field).name for row in rows]
        rows.delete()
    GazeSentence.objects.filter(run=run, recording_id=recording_id).delete()
    GazeHeatmap.objects.filter(run=run, recording_id=recording_id).delete()
    GazeLabelResult.objects.filter(run=run, recording_id=recording_id).delete()
    transaction.on_commit(lambda: [default_storage.delete(k) for k in keys if k])


def _store(
    run: GazeLabelRun, recording: GazeRecording, outcome: dict[str, Any], params: GazeParams, links
) -> None:
    seconds = float(outcome.get("seconds", 0.0))
    with transaction.atomic():
        _clear(run, recording.pk)
        if "labels" not in outcome:
            status = GazeResultStatus.UNUSABLE if "unusable" in outcome else GazeResultStatus.FAILED
            GazeLabelResult.objects.create(
                run=run, recording=recording, status=status,
                error=outcome.get("unusable") or outcome.get("failed", ""),
                seconds=seconds,
            )  # fmt: skip
            return
        labels: RecordingLabels = outcome["labels"]
        with storage_all_or_nothing() as written:
            _store_labels(run, recording, labels, params, links, written)
            GazeLabelResult.objects.create(
                run=run, recording=recording, status=GazeResultStatus.DONE, problems=labels.problems,
                transcript_text=labels.transcript_text, sentences=len(labels.sentences),
                proposals=len(labels.proposals), seconds=seconds,
            )  # fmt: skip


def _store_labels(
    run, recording, labels: RecordingLabels, params: GazeParams, links, written: list[str]
) -> None:
    def save(name: str, data: bytes) -> str:
        key = storage_save_bytes(
            project_key(run.project, "gaze-labels", f"run-{run.pk}", recording.external_id, name), data
        )
        written.append(key)
        return key

    heatmaps = GazeHeatmap.objects.bulk_create(
        GazeHeatmap(
            run=run,
            recording=recording,
            kind=m.spec.kind,
            sentence_index=m.spec.sentence_index,
            anatomy=m.spec.anatomy,
            windows=[list(w) for w in m.spec.windows] if m.spec.windows is not None else None,
            mask=m.spec.mask,
            fixation_count=m.fixation_count,
            peak=m.peak,
            width=recording.image_width,
            height=recording.image_height,
        )  # fmt: skip
        for m in labels.maps
    )
    study_links = links.get(recording.study_id, {}) if recording.study_id else {}
    for s in labels.sentences:
        findings = [{**f, "proposal_ids": study_links.get(f["code"], [])} for f in s["findings"]]
        GazeSentence.objects.create(
            run=run, recording=recording, index=s["index"], text=s["text"], start=s["start"], end=s["end"],
            char_start=s["char_start"], char_end=s["char_end"], window_start=s["window"][0],
            window_end=s["window"][1], fixation_count=s["fixation_count"], shares=s["shares"],
            anatomies=s["anatomies"], assigned_by=s["assigned_by"], findings=findings,
        )  # fmt: skip
    for a in labels.anatomy:
        GazeAnatomyRecord.objects.create(
            run=run, recording=recording, anatomy=a["anatomy"], dwell_s=a["dwell_s"],
            dwell_share=a["dwell_share"],
            fixation_count=a["fixation_count"], time_to_first_s=a["time_to_first_s"], caption=a["caption"],
            sentence_indexes=a["sentence_indexes"], heatmap=heatmaps[a["map"]],
            heatmap_source=a["heatmap_source"],
            focus_mask=save(f"focus-{a['anatomy']}.png", a["focus"]), focus_pixels=a["focus_pixels"],
        )  # fmt: skip
    for i, p in enumerate(labels.proposals):
        ids = study_links.get(p["code"], [])
        RegionProposal.objects.create(
            project=run.project, scan=recording.scan, source="gaze", code=p["code"], text=p["text"],
            phrase=p["phrase"], finding_id=ids[0] if ids else None, gaze_run=run, recording=recording,
            sentence_index=p["sentence_index"], anatomies=p["anatomies"], box=p["box"],
            mask=save(f"proposal-{i:03d}-{p['code'].replace(' ', '_')}.png", p["mask"]), pixels=p["pixels"],
            score=p["gaze_mass"], params={**params.as_dict(), "run": run.pk, "recording": recording.pk},
        )  # fmt: skip


def _refresh_counts(run: GazeLabelRun, recordings) -> dict[str, int]:
    states = GazeLabelResult.objects.filter(run=run, recording__in=recordings).aggregate(
        done=Count("pk", filter=Q(status=GazeResultStatus.DONE)),
        unusable=Count("pk", filter=Q(status=GazeResultStatus.UNUSABLE)),
        failed=Count("pk", filter=Q(status=GazeResultStatus.FAILED)),
    )
    counts = {k: v or 0 for k, v in states.items()}
    GazeLabelRun.objects.filter(pk=run.pk).update(**counts)
    return counts


def gaze_heatmap_array(found: GazeHeatmap) -> np.ndarray:
    """The exact float32 map a stored heatmap describes, computed again from its recording."""
    from labeling.gaze.labels import MapSpec, compute_map

    rec = found.recording
    masks = {}
    if found.mask:
        masks = recording_region_masks(rec, GazeParams.from_stored(found.run.params).regions)
        if found.mask not in masks:
            raise Unusable(f"mask: the anatomy mask {found.mask!r} of recording {rec.external_id} is gone")
    spec = MapSpec(
        kind=found.kind,
        windows=[tuple(w) for w in found.windows] if found.windows is not None else None,
        mask=found.mask,
    )
    source = RecordingInput(
        external_id=rec.external_id, source_format=rec.source_format, width=rec.image_width,
        height=rec.image_height, fixations=rec.fixations, transcript=rec.transcript,
    )  # fmt: skip
    return compute_map(source, spec, masks, GazeParams.from_stored(found.run.params))


def gaze_window_heatmap(
    *,
    recording: GazeRecording,
    method: str = "auto",
    start: float | None = None,
    end: float | None = None,
    **options,
) -> np.ndarray:
    """The float32 heatmap of a recording or of its time window ``[start, end]`` (as in a run: fixations
    without positive duration are left out where duration weighs); ValueError naming the field for bad
    options or a recording the method cannot use."""
    from labeling.gaze.labels import MapSpec, compute_map

    params = GazeParams.from_dict({"method": method, **options})
    if start is not None and end is not None and start > end:
        raise ValueError(f"start: the window starts ({start}) after it ends ({end})")
    windows = None
    if start is not None or end is not None:
        windows = [(-np.inf if start is None else start, np.inf if end is None else end)]
    source = RecordingInput(
        external_id=recording.external_id, source_format=recording.source_format, width=recording.image_width,
        height=recording.image_height, fixations=recording.fixations,
    )  # fmt: skip
    return compute_map(source, MapSpec(kind="window", windows=windows), {}, params)
