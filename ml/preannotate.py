"""Pre-annotation of a scan: proposals from a generator or a registered model, stored with provenance.

Generators: ``lungs`` (CT: left and right lung, no weights), ``pet-suv`` (PET: a lesion grown from each
(SUVmax, slice) seed that the study's reports state, or the ``suvmax``/``slice`` given), ``gaze`` (the
intense-focus regions of the gaze recordings of a radiograph, from the gaze labels), and
``model:<name>`` (the newest ready version of a registered model). 3D masks are stored as uint8 NIfTI on
the scan's grid (its affine), 2D masks as 1-bit PNG (rows = the image's Y); every proposal records the
generator, its parameters and, for a model, the version, mean probability and entropy inside the mask.

Running a generator on a scan again (a new job, the CLI, or the same job delivered again after a crash)
replaces that generator's earlier proposals of the scan (``params["generator"]``: ``lungs``,
``model:<name>`` ...) instead of adding duplicates. An earlier proposal that a finding's annotation
started from (``Annotation.region_proposal``) is kept, marked ``params["superseded"]``; a mask file that
a training run's examples or a frozen release still name is kept in storage when its row goes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.apps import apps
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from core.jobs import job_create, job_dispatch
from core.models import Job
from core.storage import project_key, storage_all_or_nothing, storage_save_bytes
from labeling.models import RegionProposal
from ml.model_regions import model_regions
from ml.models import TrainingRun
from ml.regions import PreannotateError, Region, scan_volume
from studies.ingest.volume_io import mask_file
from studies.models import Scan

GENERATORS = ("lungs", "pet-suv", "gaze")


@dataclass
class Outcome:
    proposals: list[RegionProposal]
    warnings: list[str]
    seconds: dict[str, float]


def preannotate(
    *, scan: Scan, generator: str, params: dict[str, Any] | None = None, user=None, job_id: int | None = None
) -> Outcome:
    """Run ``generator`` on ``scan`` and store its proposals (all or none), replacing the proposals an
    earlier run of the same generator stored for the scan (a new job, or ``job_id`` delivered again after
    a crash), so a re-run leaves no duplicates; one a finding's annotation started from is kept, marked
    superseded."""
    params = dict(params or {})
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    warnings: list[str] = []
    model_version = None
    if generator.startswith("model:"):
        regions, model_version, more = model_regions(scan, generator.split(":", 1)[1], params, timings)
        warnings += more
    elif generator == "lungs":
        regions, more = _lung_regions(scan, params)
        warnings += more
    elif generator == "pet-suv":
        regions, more = _pet_regions(scan, params)
        warnings += more
    elif generator == "gaze":
        return _gaze(scan, params, t0)
    else:
        raise PreannotateError(
            "generator", f"{generator!r} is not one of {', '.join(GENERATORS)}, model:<name>"
        )
    t1 = time.perf_counter()
    stored = _store(scan, generator, params, regions, model_version, job_id)
    timings["store"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    return Outcome(proposals=stored, warnings=warnings, seconds=timings)


def preannotate_start(*, scan: Scan, generator: str, params: dict | None = None, user=None) -> Job:
    """The same as a Job on the ``gpu`` queue."""
    from ml.tasks import preannotate as task

    with transaction.atomic():
        job = job_create(
            project=scan.project,
            kind="preannotate",
            user=user,
            params={"scan": scan.pk, "generator": generator, "params": params or {}},
        )
        job_dispatch(job=job, task=task)
    return job


def preannotate_job(*, job: Job) -> tuple[dict, dict, list[dict]]:
    scan = Scan.objects.get(pk=job.params["scan"])
    outcome = preannotate(
        scan=scan, generator=job.params["generator"], params=job.params.get("params"), job_id=job.pk
    )
    result = {
        "proposals": [proposal_summary(p) for p in outcome.proposals],
        "warnings": outcome.warnings,
        "seconds": outcome.seconds,
    }
    return result, {"proposals": len(outcome.proposals)}, []


def proposal_summary(p: RegionProposal) -> dict[str, Any]:
    return {
        "id": p.pk,
        "label": p.label,
        "code": p.code,
        "source": p.source,
        "volume_ml": p.volume_ml,
        "pixels": p.pixels,
        "box": p.box,
        "confidence": p.confidence,
        "entropy": p.entropy,
        "model_version": p.model_version_id,
    }


def _lung_regions(scan: Scan, params: dict) -> tuple[list[Region], list[str]]:
    """Left and right lung of a CT (``ml.generators.lungs``); ``params`` may set any ``LungParams`` field."""
    import dataclasses

    from ml.generators.lungs import LungParams, lungs_segment

    if scan.modality != "CT" or scan.ndim != 3:
        raise PreannotateError(
            "modality", f"lungs needs a 3D CT, scan {scan.pk} is {scan.ndim}D {scan.modality}"
        )
    known = {f.name for f in dataclasses.fields(LungParams)}
    if unknown := sorted(set(params) - known - {"device"}):
        raise PreannotateError(
            "params", f"{unknown[0]} is not a lungs parameter ({', '.join(sorted(known))})"
        )
    lung_params = LungParams(**{k: v for k, v in params.items() if k in known})
    result = lungs_segment(
        scan_volume(scan),
        spacing=tuple(float(s) for s in scan.spacing),
        affine=np.asarray(scan.affine),
        params=lung_params,
    )
    regions = [
        Region(label=name, mask=mask, code=name)
        for name, mask in (("left_lung", result.left), ("right_lung", result.right))
        if mask.any()
    ]
    return regions, list(result.warnings)


def _pet_regions(scan: Scan, params: dict) -> tuple[list[Region], list[str]]:
    """A lesion per (SUVmax, slice) seed: ``params`` ``suvmax`` + ``slice``, else every ``suv`` finding
    (present or uncertain) of the study's reports."""
    from labeling.models import FindingProposal
    from ml.generators.pet import pet_lesion_from_seed
    from ml.generators.suv import SuvError, suvbw_factor

    if scan.modality != "PT" or scan.ndim != 3:
        raise PreannotateError(
            "modality", f"pet-suv needs a 3D PET scan (PT), scan {scan.pk} is {scan.ndim}D {scan.modality}"
        )
    try:
        factor = suvbw_factor((scan.meta or {}).get("pet") or {})
    except SuvError as exc:
        raise PreannotateError(exc.field, f"scan {scan.pk} has no usable SUV header ({exc.reason})") from exc
    seeds: list[tuple[float, int, str]] = []
    if params.get("suvmax") is not None or params.get("slice") is not None:
        try:
            seeds.append((float(params["suvmax"]), int(params["slice"]), ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise PreannotateError("params", "give both suvmax (a number) and slice (an integer)") from exc
    else:
        found = FindingProposal.objects.filter(
            project=scan.project, report__study=scan.study, code="suv", assertion__in=["present", "uncertain"]
        ).order_by("id")
        for f in found:
            seed = (float(f.extra["suvmax"]), int(f.extra["slice"]), f.phrase)
            if all(seed[:2] != s[:2] for s in seeds):
                seeds.append(seed)
        if not seeds:
            raise PreannotateError(
                "params",
                f"scan {scan.pk}'s study has no report sentence with one SUVmax and one slice "
                "(run the rules labeler with the petct schema), and no suvmax/slice was given",
            )
    suv = scan_volume(scan) * factor
    spacing = [float(v) for v in scan.spacing]
    regions, warnings = [], []
    for suvmax, slice_number, text in seeds:
        mask, result = pet_lesion_from_seed(
            suv, spacing, suvmax, slice_number, slice_from_end=bool(params.get("slice_from_end", True))
        )
        if not result.ok:
            warnings.append(f"SUVmax {suvmax} slice {slice_number}: {result.outcome} ({result.reason})")
            continue
        regions.append(
            Region(
                label=f"SUVmax {suvmax:g}",
                mask=mask,
                code="suv",
                text=text,
                extra={
                    "suvmax": suvmax,
                    "slice": slice_number,
                    "suvbw_factor": factor,
                    "component_suvmax": result.suvmax,
                    "thresholds": list(result.thresholds),
                    "stopped": result.reason,
                },
            )
        )
    return regions, warnings


def _gaze(scan: Scan, params: dict, t0: float) -> Outcome:
    from labeling.gaze.service import gaze_label_one, gaze_run_get_or_create

    recordings = list(scan.gaze_recordings.all())
    if not recordings:
        raise PreannotateError("scan", f"scan {scan.pk} has no gaze recording")
    run = gaze_run_get_or_create(project=scan.project, params=params)
    warnings = []
    for recording in recordings:
        result = gaze_label_one(run=run, recording=recording)
        if result.status != "done":
            warnings.append(f"recording {recording.external_id}: {result.status}: {result.error}")
    proposals = list(RegionProposal.objects.filter(gaze_run=run, recording__in=recordings))
    return Outcome(proposals=proposals, warnings=warnings, seconds={"total": time.perf_counter() - t0})


def _store(
    scan: Scan, generator: str, params: dict, regions: list[Region], model_version, job_id: int | None
) -> list[RegionProposal]:
    voxel_ml = float(np.prod([float(s) for s in scan.spacing])) / 1000.0
    source = "model" if generator.startswith("model:") else generator
    out = []
    with storage_all_or_nothing() as written, transaction.atomic():
        _replace_earlier(scan, generator, job_id)
        for i, region in enumerate(regions):
            mask = region.full_mask()  # one full-resolution mask alive at a time
            pixels = int(np.count_nonzero(mask))
            if pixels == 0:
                continue
            box = _box(mask)
            data, suffix = mask_file(mask, np.asarray(scan.affine, dtype=np.float64))
            ndim = mask.ndim
            del mask
            key = project_key(
                scan.project,
                "proposals",
                f"scan-{scan.pk}",
                f"{source}-{int(time.time() * 1000)}-{i}{suffix}",
            )
            stored = storage_save_bytes(key, data)
            written.append(stored)
            out.append(
                RegionProposal.objects.create(
                    project=scan.project,
                    scan=scan,
                    source=source,
                    code=region.code,
                    label=region.label,
                    text=region.text,
                    box=box,
                    mask=stored,
                    pixels=pixels,
                    volume_ml=pixels * voxel_ml if ndim == 3 else None,
                    confidence=region.confidence,
                    entropy=region.entropy,
                    score=region.score,
                    model_version=model_version,
                    params={
                        "generator": generator,
                        **params,
                        **region.extra,
                        **({"job": job_id} if job_id else {}),
                    },
                )
            )
    return out


def _box(mask: np.ndarray) -> list[int]:
    """``[min per axis..., max + 1 per axis...]`` of a non-empty mask, from its projections (no
    coordinate arrays: ``np.nonzero`` of a 10 M-voxel organ is 240 MB)."""
    lows, highs = [], []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lows.append(int(hit[0]))
        highs.append(int(hit[-1]) + 1)
    return lows + highs


def _replace_earlier(scan: Scan, generator: str, job_id: int | None) -> None:
    """Delete the proposals ``generator`` stored for ``scan`` before (and, after commit, their mask files);
    keep those an annotation started from, marked ``params["superseded"]``, and the mask files that a
    training run or a frozen release names. Runs in the caller's transaction, with the scan's row locked
    so that two runs of one scan replace one after the other (PostgreSQL; SQLite has one writer)."""
    Scan.objects.select_for_update().filter(pk=scan.pk).first()
    earlier = RegionProposal.objects.filter(scan=scan, params__generator=generator)
    started_from = earlier.filter(annotations__isnull=False).distinct()
    superseded = {
        "superseded": True,
        "superseded_at": timezone.now().isoformat(),
        "superseded_by_job": job_id,
    }
    for proposal in started_from:
        if not proposal.params.get("superseded"):
            proposal.params = {**proposal.params, **superseded}
            proposal.save(update_fields=["params"])
    gone = earlier.exclude(pk__in=started_from.values("pk"))
    keys = [key for key in gone.values_list("mask", flat=True) if key]
    gone.delete()
    if keys:
        kept = _mask_keys_in_use(scan.project, keys)
        transaction.on_commit(lambda: [default_storage.delete(k) for k in keys if k not in kept])


def _mask_keys_in_use(project, keys: list[str]) -> set[str]:
    """Which of these mask files a training run's examples or a frozen release name (they read them later
    by key and sha256). Releases are looked up by name: ``releases`` imports ``ml``, not the reverse."""
    wanted = set(keys)
    used = {
        e.get("mask")
        for examples in TrainingRun.objects.filter(project=project).values_list("examples", flat=True)
        for e in examples or []
        if isinstance(e, dict) and e.get("mask") in wanted
    }
    if apps.is_installed("releases"):
        labels = apps.get_model("releases", "ReleaseLabel")
        used |= set(labels.objects.filter(mask_key__in=wanted).values_list("mask_key", flat=True))
    return used
