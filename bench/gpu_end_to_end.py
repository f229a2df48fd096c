"""Steps 2 and 3 of ``bench/bench_gpu.py``, on the stored scan: the platform's ``preannotate`` end to end
against plain MONAI on the same scan and grid (the fitted U-Net, model loading timed apart), and a 14-label
model's peak GPU memory and host RSS for both (out of memory at roi 96: again at roi 64)."""

import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from bench.gpu_common import MODEL_SPACING, WINDOW, Peaks, amp, build, sync, unet_spec
from bench.plain_monai import plain_monai_transforms


def plain_monai(nifti: str, model, device: str, roi, sw_batch: int, out: Path) -> dict:
    """Plain MONAI on the stored scan: the same preprocessing as the model's spec, sliding window (bf16
    autocast on a GPU), softmax, ``Invertd`` back to the scan's grid, argmax, the label map saved."""
    import nibabel as nib

    pre, post = plain_monai_transforms(WINDOW, MODEL_SPACING)
    t0 = time.perf_counter()
    data = pre({"image": nifti})
    grid = list(data["image"].shape[1:])
    t1 = time.perf_counter()
    with torch.no_grad(), amp(device, torch.bfloat16 if device.startswith("cuda") else torch.float32):
        data["pred"] = sliding_window_inference(
            data["image"][None].to(device), roi, sw_batch, model, overlap=0.25, mode="gaussian"
        )[0].float()
    sync(device)
    t2 = time.perf_counter()
    data = post(data)
    label_map = data["pred"][0].to(torch.uint8).cpu().numpy()
    nib.save(nib.Nifti1Image(label_map, np.asarray(data["pred"].affine.cpu())), out / "monai-labels.nii.gz")
    t3 = time.perf_counter()
    return {
        "total_s": t3 - t0,
        "read_prep_s": t1 - t0,
        "model_s": t2 - t1,
        "post_store_s": t3 - t2,
        "model_grid": grid,
        "scan_grid": list(label_map.shape),
    }


def platform(scan, name: str, device: str, sw_batch: int) -> dict:
    """``preannotate`` end to end; model loading timed apart (``load_model`` wrapped)."""
    import ml.engine.loading as loading
    from ml.preannotate import preannotate

    real, loads = loading.load_model, []

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            sync(device)
            loads.append(time.perf_counter() - t)

    loading.load_model = timed
    try:
        t0 = time.perf_counter()
        outcome = preannotate(
            scan=scan, generator=f"model:{name}", params={"device": device, "sw_batch_size": sw_batch}
        )
        total = time.perf_counter() - t0
    finally:
        loading.load_model = real
    s = outcome.seconds
    grid = [max(1, round(n * float(a) / t)) for n, a, t in zip(scan.shape, scan.spacing, MODEL_SPACING)]
    return {
        "model_grid": grid,
        "total_s": total - sum(loads),
        "load_s": sum(loads),
        "read_s": s.get("read", 0.0),
        "model_s": s.get("model", 0.0),
        "prep_resample_s": s.get("preprocess_and_resample", 0.0),
        "store_s": s.get("store", 0.0),
        "proposals": len(outcome.proposals),
        "warnings": outcome.warnings,
    }


def register(project, work: Path, name: str, spec: tuple, state: dict | None, roi, labels: int):
    from core.job_child import job_child_wait
    from ml.services import model_version_register

    model = build(spec)
    if state is not None:
        model.load_state_dict(state)
    weights = work / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    version = model_version_register(
        project=project,
        path=weights,
        fmt="state-dict",
        name=name,
        input_spec={
            "ndim": 3,
            "channels": 1,
            "roi_size": list(roi),
            "spacing": MODEL_SPACING,
            "window": list(WINDOW),
            "modality": ["CT"],
        },
        label_names=["background"] + [f"label_{c}" for c in range(1, labels)],
        network={"name": spec[0], "args": spec[1]},
    )
    version.refresh_from_db()
    job_child_wait(version.job_id)  # validation runs in a child process (core.job_child)
    version.refresh_from_db()
    assert version.status == "ready", version.error
    return weights


def load_plain(spec: tuple, weights: Path, device: str) -> tuple[torch.nn.Module, float]:
    t = time.perf_counter()
    model = build(spec)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model = model.to(device).eval()
    sync(device)
    return model, time.perf_counter() - t


def bench_end_to_end(project, scan, work, fitted, args, device) -> list[dict]:
    from django.conf import settings

    nifti = str(Path(settings.MEDIA_ROOT) / scan.file.name)
    weights = register(project, work, "unet", fitted["spec"], fitted["state"], args.roi, 2)
    model, load_s = load_plain(fitted["spec"], weights, device)
    rows = []
    for i in range(args.repeats + 1):  # the first of each is a warm-up
        m = plain_monai(nifti, model, device, args.roi, args.sw_batch, work)
        p = platform(scan, "unet", device, args.sw_batch)
        if i:
            rows.append(
                {"monai": {**m, "load_s": load_s}, "platform": p, "ratio": p["total_s"] / m["total_s"]}
            )
            print(
                f"  run {i}: platform {p['total_s']:.2f} s (+ load {p['load_s']:.2f} s) vs plain MONAI "
                f"{m['total_s']:.2f} s (+ load {load_s:.2f} s): {rows[-1]['ratio']:.2f}x; model grids: "
                f"platform {p['model_grid']}, MONAI {m['model_grid']}; both back on {m['scan_grid']}",
                flush=True,
            )
    return rows


def bench_14_labels(project, scan, work, args, device) -> dict:
    from django.conf import settings

    nifti = str(Path(settings.MEDIA_ROOT) / scan.file.name)
    spec = unet_spec(args.quick, channels=14)
    out = {}
    for roi in [args.roi] + ([[64, 64, 64]] if list(args.roi) != [64, 64, 64] and not args.quick else []):
        torch.manual_seed(14)
        name = f"labels14-roi{roi[0]}"
        weights = register(project, work, name, spec, None, roi, 14)
        try:
            with Peaks(device) as pp:
                p = platform(scan, name, device, args.sw_batch)
            model, _ = load_plain(spec, weights, device)
            with Peaks(device) as pm:
                m = plain_monai(nifti, model, device, roi, args.sw_batch, work)
            del model
        except torch.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            out[f"roi {roi[0]}"] = {"error": f"out of GPU memory: {str(exc)[:200]}"}
            print(f"  14 labels, roi {roi[0]}: out of GPU memory; trying a smaller window", flush=True)
            continue
        out[f"roi {roi[0]}"] = {
            "platform": {"host_mb": pp.host_mb, "gpu_mb": pp.gpu_mb, **p},
            "monai": {"host_mb": pm.host_mb, "gpu_mb": pm.gpu_mb, **m},
            "fell_back": p["warnings"],
        }
        gpu = f"GPU {pp.gpu_mb:,.0f} MB vs {pm.gpu_mb:,.0f} MB; " if pp.gpu_mb is not None else ""
        print(
            f"  14 labels, roi {roi[0]}: platform peak {gpu}host {pp.host_mb:,.0f} MB vs plain MONAI "
            f"{pm.host_mb:,.0f} MB; warnings {p['warnings'] or 'none'}",
            flush=True,
        )
        if not p["warnings"]:
            break  # no out-of-memory fallback at this window: no smaller one needed
    return out
