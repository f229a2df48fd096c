"""Interactive proposals: an annotator's clicks on a finding (foreground and background points) answered
with a mask, on the ``gpu`` queue (issue 16 item 7).

The answer comes from the project's interactive model when it has one (a ready ``ModelVersion`` whose input
spec has ``interactive``: DeepGrow- or DeepEdit-style guidance inputs, ``ml.engine.interactive``), else from
a classical region grow from the clicks in the intensity range of the window the annotator is looking at
(``ml.generators.grow``). The request names the method (``auto``: the model when there is one).

A click is a job (kind ``interactive``) on the ``gpu`` queue: the job row is the click's provenance (who,
which finding, the points, the window, the method and model version, the range used, how long it took).
In the full setup a ``gpu`` worker runs it; in the embedded default it goes to a warm child process that
serves the clicks one after the other (``ml.interactive_worker``): a new child per click would spend ~4 s
of CPU starting Django before the grow's fraction of a second, and a model loaded once stays loaded
(``ml.engine.interactive`` keeps the last one). With ``EMBEDDED_GPU_JOBS_IN_CHILD`` off (the tests) it
runs in-process like every other job.

The answer is not a label: it is the mask inside its box (bit-packed, deflated) in storage, read back by
the clicker alone (``interactive_answer``); the review screen pastes it into the drawing, where it is the
annotator's edit, saved as a version like any stroke. A newer answer of the same finding and user removes
the older ones' files. The scan is never read whole for a region grow: the canonical NIfTI is read box by
box (memory-mapped for the default uncompressed ``.nii``; a ``.nii.gz`` scan is inflated up to the box).
"""

from __future__ import annotations

import base64
import logging
import math
import os
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction

from core.errors import FieldError, NotFound
from core.jobs import job_create, job_dispatch
from core.models import Job, JobStatus
from core.storage import project_key, storage_local_copy, storage_save_bytes
from ml.generators.grow import GrowError, GrowParams, grow_from_clicks
from ml.models import ModelStatus, ModelVersion
from studies.models import Scan

log = logging.getLogger(__name__)

KIND = "interactive"
METHODS = ("auto", "region-grow", "model")
STYLES = ("deepgrow", "deepedit")
ENCODING = "zlib+packbits-le"  # np.packbits(bitorder="little") of the box's voxels, X fastest, deflated


class InteractiveError(FieldError):
    """Clicks, window or parameters that cannot be answered: ``(field, reason)``, a 400."""


def interactive_model(project) -> ModelVersion | None:
    """The project's interactive model: the newest ready version whose input spec says ``interactive``."""
    versions = ModelVersion.objects.filter(project=project, status=ModelStatus.READY).order_by("-created_at")
    for version in versions.only("pk", "input_spec", "name", "version", "label_names", "created_at"):
        if isinstance((version.input_spec or {}).get("interactive"), dict):
            return version
    return None


def interactive_capabilities(project) -> dict[str, Any]:
    """What a click on a finding of ``project`` asks for: the method ``auto`` picks, the model, defaults."""
    model = interactive_model(project)
    return {
        "method": "model" if model else "region-grow",
        "model": _model_summary(model) if model else None,
        "region_grow": GrowParams().as_dict(),
    }


def _model_summary(version: ModelVersion) -> dict[str, Any]:
    return {
        "id": version.pk,
        "name": version.name,
        "version": version.version,
        "style": version.input_spec["interactive"].get("style"),
        "label_names": version.label_names,
    }


def _voxels(raw: Any, scan: Scan, field: str) -> list[list[int]]:
    """Points as voxel indices of the scan's array (X, Y[, Z]); 400 naming ``field`` otherwise."""
    shape = [int(n) for n in scan.shape][: scan.ndim]
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > 100:
        raise InteractiveError(field, "a list of at most 100 points [x, y(, z)] in voxels")
    out = []
    for point in raw:
        if (
            not isinstance(point, list | tuple)
            or len(point) != len(shape)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
        ):
            raise InteractiveError(field, f"{point!r}: a point is {len(shape)} voxel indices [x, y(, z)]")
        voxel = [int(round(float(v))) for v in point]
        if any(v < 0 or v >= n for v, n in zip(voxel, shape, strict=True)):
            raise InteractiveError(field, f"{voxel} lies outside the scan (shape {shape})")
        out.append(voxel)
    return out


def interactive_start(
    *,
    scan: Scan,
    finding_id: int,
    user,
    points: Any,
    background: Any = None,
    window: Any = None,
    params: dict | None = None,
    method: str = "auto",
    label: str = "",
) -> Job:
    """Check the click and start its job on the ``gpu`` queue (see the module docstring); the job's params
    name the scan, the finding, the points, the window, the method and the model version chosen."""
    from ml.tasks import interactive as task

    if scan is None:
        raise InteractiveError("finding", "this finding has no scan to click on")
    if method not in METHODS:
        raise InteractiveError("method", f"{method!r} is not one of {', '.join(METHODS)}")
    fg = _voxels(points, scan, "points")
    bg = _voxels(background, scan, "background")
    if not fg:
        raise InteractiveError("points", "at least one foreground point")
    if window is not None:
        try:
            low, high = (float(v) for v in window)
        except (TypeError, ValueError) as exc:
            raise InteractiveError("window", f"[low, high] expected, got {window!r}") from exc
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise InteractiveError("window", f"[low, high] with low < high expected, got {window!r}")
        window = [low, high]
    model = interactive_model(scan.project) if method in ("auto", "model") else None
    if method == "model" and model is None:
        raise InteractiveError("method", f"project {scan.project.slug} has no ready interactive model")
    chosen = "model" if model else "region-grow"
    params = dict(params or {})
    if chosen == "model" and (unknown := sorted(set(params) - {"device"})):
        raise InteractiveError(unknown[0], "an interactive model takes no parameters but device")
    if chosen == "region-grow":
        try:
            params = GrowParams.from_dict(params).as_dict()
            if {tuple(p) for p in fg} & {tuple(p) for p in bg}:
                raise GrowError("background", "a point cannot be both foreground and background")
        except GrowError as exc:
            raise InteractiveError(exc.field, exc.reason) from exc
    with transaction.atomic():
        job = job_create(
            project=scan.project,
            kind=KIND,
            user=user,
            params={
                "scan": scan.pk,
                "finding": int(finding_id),
                "points": fg,
                "background": bg,
                "window": window,
                "method": chosen,
                "model_version": model.pk if model else None,
                "label": label,
                "params": params,
            },
        )
        _dispatch(job, task)
    return job


def _dispatch(job: Job, task) -> None:
    """The ``gpu`` queue: a worker (broker configured), else the warm child (``ml.interactive_worker``), else
    (``EMBEDDED_GPU_JOBS_IN_CHILD`` off) in-process."""
    from config.celery import app
    from core.job_child import runs_in_child

    if app.conf.task_always_eager and runs_in_child(task):
        from ml.interactive_worker import worker_submit

        transaction.on_commit(lambda: worker_submit(job_id=job.pk))
        return
    job_dispatch(job=job, task=task)


@contextmanager
def scan_reader(scan: Scan) -> Iterator[Callable[[tuple, tuple], np.ndarray]]:
    """``read(lo, hi)``: the box ``[lo, hi)`` of the scan's canonical array (X, Y[, Z]) as float32, read from
    the stored NIfTI without loading the rest (nibabel's array proxy)."""
    import nibabel as nib

    with storage_local_copy(scan.file.name) as path:
        proxy = nib.load(str(path)).dataobj
        flat = scan.ndim == 2 and len(proxy.shape) == 3

        def read(lo: tuple, hi: tuple) -> np.ndarray:
            box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            data = proxy[(*box, 0)] if flat else proxy[box]
            return np.asarray(data, dtype=np.float32)

        yield read


def interactive_job(*, job: Job) -> tuple[dict, dict, list[dict]]:
    """Worker side: answer the click, store the mask, return the job's result (no mask in it)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    p = job.params
    scan = Scan.objects.get(pk=p["scan"])
    spacing = [float(s) for s in scan.spacing][: scan.ndim]
    shape = [int(n) for n in scan.shape][: scan.ndim]
    seconds: dict[str, float] = {}
    result: dict[str, Any] = {"method": p["method"], "model_version": p.get("model_version")}
    if p["method"] == "model":
        version = ModelVersion.objects.get(pk=p["model_version"])
        lo, mask, info = _model_answer(scan, version, p, seconds)
        result.update(info)
    else:
        window = tuple(p["window"]) if p.get("window") else None
        t = time.perf_counter()
        with scan_reader(scan) as read:
            try:
                grown = grow_from_clicks(
                    read,
                    shape,
                    spacing,
                    p["points"],
                    p.get("background") or [],
                    window=window,
                    params=GrowParams.from_dict(p.get("params")),
                )
            except GrowError as exc:
                raise InteractiveError(exc.field, exc.reason) from exc
        seconds["grow"] = time.perf_counter() - t
        lo, mask = list(grown.lo), grown.mask
        result.update(
            range=[_finite(v) for v in grown.range],
            seed_values=grown.seed_values,
            radius_mm=grown.radius_mm,
            limited=grown.limited,
            split=grown.split,
            voxels_read=grown.voxels_read,
            warnings=grown.warnings,
        )
    t = time.perf_counter()
    key = _store_mask(job, scan, mask)
    seconds["store"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    seconds["cpu"] = time.process_time() - cpu0  # this process's CPU time (the rest: waiting for a core)
    voxels = int(mask.sum())
    voxel_ml = float(np.prod(spacing)) / 1000.0
    result.update(
        box=[*lo, *(a + n for a, n in zip(lo, mask.shape, strict=True))],
        voxels=voxels,
        volume_ml=voxels * voxel_ml if scan.ndim == 3 else None,
        mask_key=key,
        seconds=seconds,
        pid=os.getpid(),  # the process that answered (the warm child, a worker)
    )
    return result, {"voxels": voxels}, []


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _model_answer(scan: Scan, version: ModelVersion, p: dict, seconds: dict) -> tuple[list, np.ndarray, dict]:
    """The interactive model's mask for the clicks (``ml.engine.interactive``), inside the box it saw."""
    from ml.engine.devices import pick_device
    from ml.engine.interactive import interactive_box, interactive_predict
    from ml.specs import InputSpec

    spec = InputSpec.from_dict(version.input_spec)
    shape = [int(n) for n in scan.shape][: scan.ndim]
    spacing = [float(s) for s in scan.spacing][: scan.ndim]
    lo, hi = interactive_box(spec, shape, spacing, p["points"])
    t = time.perf_counter()
    with scan_reader(scan) as read:
        image = read(tuple(lo), tuple(hi))
    seconds["read"] = time.perf_counter() - t
    affine = np.asarray(scan.affine, dtype=np.float64)
    box_affine = affine.copy()  # voxel -> mm of the box: its corner moved to voxel lo
    box_affine[:3, 3] = affine[:3, :3] @ np.asarray([*lo, 0, 0][:3], dtype=np.float64) + affine[:3, 3]
    label = p.get("label") or ""
    t = time.perf_counter()
    with storage_local_copy(version.weights.name) as weights:
        answer = interactive_predict(
            key=f"{version.pk}:{version.checksum}",
            weights=weights,
            fmt=version.format,
            network=version.network or None,
            spec=spec,
            label_names=version.label_names,
            image=image,
            affine=box_affine,
            spacing=spacing,
            foreground=[[a - b for a, b in zip(pt, lo, strict=True)] for pt in p["points"]],
            background=[
                [a - b for a, b in zip(pt, lo, strict=True)]
                for pt in p.get("background") or []
                if all(b <= a < c for a, b, c in zip(pt, lo, hi, strict=True))
            ],
            label=label,
            device=p.get("params", {}).get("device") or pick_device(),
        )
    seconds["model"] = time.perf_counter() - t
    mask = answer.mask
    info = {
        "model": {"id": version.pk, "name": version.name, "version": version.version},
        "label": answer.label,
        "style": answer.style,
        "warnings": answer.warnings,
        "input_shape": answer.input_shape,
        "device": answer.device,
        "loaded": answer.loaded,
    }
    if not mask.any():
        return lo, mask[tuple(slice(0, 1) for _ in mask.shape)], info
    where = [
        np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        for axis in range(mask.ndim)
    ]
    tight = tuple(slice(int(w[0]), int(w[-1]) + 1) for w in where)
    return [a + s.start for a, s in zip(lo, tight, strict=True)], mask[tight], info


def _folder(scan: Scan, finding_id: int, user_id: int | None) -> str:
    return project_key(scan.project, "interactive", f"finding-{finding_id}-user-{user_id or 0}")


def _store_mask(job: Job, scan: Scan, mask: np.ndarray) -> str:
    """The box's mask, bit-packed (X fastest) and deflated, under the finding's and user's folder; the
    older answers there are removed."""
    data = zlib.compress(np.packbits(np.asarray(mask, dtype=bool).ravel(order="F"), bitorder="little"), 1)
    folder = _folder(scan, job.params["finding"], job.created_by_id)
    key = storage_save_bytes(f"{folder}/job-{job.pk}.bits", data)
    try:
        _, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotImplementedError):
        files = []
    for name in files:
        if name != key.rsplit("/", 1)[-1] and name.startswith("job-") and name.endswith(".bits"):
            try:
                if int(name[4:-5]) < job.pk:
                    default_storage.delete(f"{folder}/{name}")
            except ValueError:
                continue
    return key


def interactive_job_get(*, finding_id: int, job_id: int, user) -> Job:
    """The click job ``job_id`` of this finding made by ``user`` (anyone else's: 404)."""
    job = Job.objects.filter(pk=job_id, kind=KIND, created_by=user, params__finding=int(finding_id)).first()
    if job is None:
        raise NotFound("No such click of yours on this finding.")
    return job


def interactive_answer(job: Job) -> dict[str, Any]:
    """The job's state and, once it succeeded, its mask: ``{"box", "shape", "order": "F", "encoding",
    "data"}`` (base64), the box's voxels in the scan's array order with X fastest."""
    out: dict[str, Any] = {
        "job_id": job.pk,
        "status": job.status,
        "message": job.message,
        "method": job.params.get("method"),
    }
    if job.status != JobStatus.SUCCEEDED:
        return out
    result = {k: v for k, v in (job.result or {}).items() if k not in ("mask_key", "pid")}
    out.update(result)
    key = (job.result or {}).get("mask_key")
    try:
        with default_storage.open(key, "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, TypeError, ValueError):
        out.update(status="gone", message="a newer click on this finding replaced this answer")
        return out
    box = result["box"]
    n = len(box) // 2
    out["mask"] = {
        "box": box,
        "shape": [box[n + i] - box[i] for i in range(n)],
        "order": "F",
        "encoding": ENCODING,
        "data": base64.b64encode(data).decode("ascii"),
    }
    return out


def mask_decode(payload: dict[str, Any]) -> np.ndarray:
    """The boolean box of an answer's ``mask`` (for tests and scripts)."""
    shape = tuple(payload["shape"])
    bits = np.frombuffer(zlib.decompress(base64.b64decode(payload["data"])), dtype=np.uint8)
    flat = np.unpackbits(bits, bitorder="little", count=int(np.prod(shape))).astype(bool)
    return flat.reshape(shape, order="F")
