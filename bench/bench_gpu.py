"""Issue 18 GPU benchmark: one script, one process, a few minutes on one CUDA GPU (``bench/gpu_session.sh``
runs it there after the GPU tests); ``--quick --device cpu`` runs every step on small shapes anywhere.

Scan: the real Lung-PET-CT-Dx slices of ``../shared/data`` repeated to 512x512x300 (``--slices``), ingested
into a throw-away SQLite database; ``--quick``: a synthetic 96x96x48 chest CT at 1x1x2.5 mm. Every figure
is printed beside its baseline measured in the same run:

1. networks (MONAI U-Net 32-320 with 2 residual units, SegResNet 32, SwinUNETR 48; ``--quick``: small
   ones), each first fitted for a few steps to a known answer (air and lung: HU < -580) so that its
   argmax means something: training patches/s (batch 2 of roi patches, Dice+CE, Adam, bf16 autocast on a
   GPU), then sliding-window inference over the whole scan grid (roi 96^3, sw batch 8, overlap 0.25,
   Gaussian) in fp32, bf16 and fp16 autocast: best and median of ``--repeats`` warm runs, and the Dice of
   each dtype's argmax against fp32's and against the known answer (target: bf16 within 1 % of fp32);
2. end to end on the same scan and grid: the platform's ``preannotate`` (read the stored scan, load the
   registered model, window, resample to 1.5x1.5x2 mm, sliding window, label map back on the scan's
   grid, store) against plain MONAI (``LoadImaged``, ``ScaleIntensityRanged``, ``Spacingd``, the same
   sliding window, ``Activationsd(softmax)``, ``Invertd`` back to the scan's grid, ``AsDiscreted``, the
   label map saved as NIfTI), the fitted U-Net, repeated warm; model loading timed apart for both
   (target: platform <= 1.5x plain MONAI);
3. a 14-label model (random weights): peak GPU memory (``torch.cuda.max_memory_allocated``) and peak host
   RSS of the platform's pre-annotation beside plain MONAI's; out of memory at roi 96 it is run again at
   roi 64, and the figure says so.

    python3 bench/bench_gpu.py --out $OUT/gpu.json          # on the GPU machine (bench/gpu_session.sh)
    .venv/bin/python bench/bench_gpu.py --quick --device cpu # every step on small shapes
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.inferers import sliding_window_inference  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.networks.nets import SegResNet, SwinUNETR, UNet  # noqa: E402

from bench.common import REAL_CT, django_setup, make_series  # noqa: E402

WINDOW = (-1000.0, 400.0)
AIR = 0.3  # windowed intensity below which a voxel is air or lung (HU < -580): the known answer
MODEL_SPACING = [1.5, 1.5, 2.0]


def networks(quick: bool, channels: int = 2) -> dict:
    """name -> (MONAI class name, args): the same description the registry takes for a state dict."""
    if quick:
        return {
            "UNet": (
                "UNet",
                {
                    "spatial_dims": 3,
                    "in_channels": 1,
                    "out_channels": channels,
                    "channels": [8, 16, 32],
                    "strides": [2, 2],
                    "num_res_units": 1,
                },
            ),
            "SegResNet": (
                "SegResNet",
                {"spatial_dims": 3, "in_channels": 1, "out_channels": channels, "init_filters": 8},
            ),
            "SwinUNETR": (
                "SwinUNETR",
                {"spatial_dims": 3, "in_channels": 1, "out_channels": channels, "feature_size": 12},
            ),
        }
    return {
        "UNet 32-320": (
            "UNet",
            {
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": channels,
                "channels": [32, 64, 128, 256, 320],
                "strides": [2, 2, 2, 2],
                "num_res_units": 2,
            },
        ),
        "SegResNet 32": (
            "SegResNet",
            {"spatial_dims": 3, "in_channels": 1, "out_channels": channels, "init_filters": 32},
        ),
        "SwinUNETR 48": (
            "SwinUNETR",
            {"spatial_dims": 3, "in_channels": 1, "out_channels": channels, "feature_size": 48},
        ),
    }


def build(spec: tuple) -> torch.nn.Module:
    return {"UNet": UNet, "SegResNet": SegResNet, "SwinUNETR": SwinUNETR}[spec[0]](**spec[1])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def amp(device: str, dtype: torch.dtype):
    return torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)


# --- 1. networks ----------------------------------------------------------------------------------------


def fit(model, x, truth, roi, steps: int, device: str) -> float:
    """A few Adam steps on random roi patches towards ``truth``; training patches/s after 2 warm-up steps."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for i in range(steps + 2):
        if i == 2:
            sync(device)
            t0 = time.perf_counter()
        starts = [
            [int(torch.randint(0, n - r + 1, (1,), generator=g)) for n, r in zip(x.shape[2:], roi)]
            for _ in range(2)
        ]
        crop = [tuple(slice(s, s + r) for s, r in zip(st, roi, strict=True)) for st in starts]
        xb = torch.stack([x[0][(slice(None), *c)] for c in crop])
        yb = torch.stack([truth[0][(slice(None), *c)] for c in crop]).long()
        opt.zero_grad(set_to_none=True)
        with amp(device, dtype):
            loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
    sync(device)
    model.eval()
    return 2 * steps / (time.perf_counter() - t0)


def infer(model, x, roi, batch, device, dtype, repeats: int) -> tuple[list[float], torch.Tensor]:
    """Seconds of each warm run (one warm-up first) and the argmax label map."""
    times, labels = [], None
    for _ in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad(), amp(device, dtype):
            out = sliding_window_inference(x, roi, batch, model, overlap=0.25, mode="gaussian")
            labels = out.argmax(dim=1)
        sync(device)
        times.append(time.perf_counter() - t0)
        del out
    return times[1:], labels


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


def bench_networks(x, truth, args, device) -> tuple[list[dict], list[dict], dict]:
    roi, batch = args.roi, args.sw_batch
    dtypes = {"fp32": torch.float32}
    if device.startswith("cuda"):
        dtypes.update(bf16=torch.bfloat16, fp16=torch.float16)
    rows, training, fitted = [], [], {}
    for name, spec in networks(args.quick).items():
        torch.manual_seed(0)
        model = build(spec).to(device)
        try:
            patches = fit(model, x, truth, roi, args.fit_steps, device)
        except Exception as exc:  # one network failing leaves the others' figures (out of memory, ...)
            training.append({"network": name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            print(f"  {name}: training failed: {training[-1]['error']}", flush=True)
            del model
            continue
        training.append({"network": name, "patches_per_s": patches, "steps": args.fit_steps})
        print(f"  {name}: training {patches:.1f} patches/s (batch 2 of {roi}, bf16 on a GPU)", flush=True)
        reference = None
        for label, dtype in dtypes.items():
            try:
                times, labels = infer(model, x, roi, batch, device, dtype, args.repeats)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                rows.append({"network": name, "dtype": label, "error": "out of GPU memory"})
                print(f"  {name} {label}: out of GPU memory", flush=True)
                continue
            if reference is None:
                reference = labels
            row = {
                "network": name,
                "dtype": label,
                "best_s": min(times),
                "median_s": statistics.median(times),
                "runs": len(times),
                "dice_vs_fp32": dice(labels, reference),
                "dice_vs_answer": dice(labels[0], truth[0, 0]),
            }
            rows.append(row)
            print(
                f"  {name} {label}: best {row['best_s']:.3f} s, median {row['median_s']:.3f} s; Dice vs "
                f"fp32 {row['dice_vs_fp32']:.4f}, vs the answer {row['dice_vs_answer']:.3f}",
                flush=True,
            )
        if spec[0] == "UNet":
            fitted = {"spec": spec, "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows, training, fitted


# --- 2. and 3. end to end -------------------------------------------------------------------------------


def _vm(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith(field + ":"))


class Peaks:
    """Peak host RSS (VmHWM, reset) and peak GPU memory over a block, MB."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        self.start = _vm("VmRSS")
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.gpu_start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        self.host_mb = _vm("VmHWM") - self.start
        self.gpu_mb = None
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.gpu_mb = (torch.cuda.max_memory_allocated() - self.gpu_start) / 2**20
        return False


def plain_monai(nifti: str, model, device: str, roi, sw_batch: int, out: Path) -> dict:
    """Plain MONAI on the stored scan: the same preprocessing as the model's spec, sliding window (bf16
    autocast on a GPU), softmax, ``Invertd`` back to the scan's grid, argmax, the label map saved."""
    import nibabel as nib
    from monai.transforms import (
        Activationsd,
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        ScaleIntensityRanged,
        Spacingd,
    )

    pre = Compose(
        [
            LoadImaged("image", image_only=False),
            EnsureChannelFirstd("image"),
            ScaleIntensityRanged("image", a_min=WINDOW[0], a_max=WINDOW[1], b_min=0.0, b_max=1.0, clip=True),
            Spacingd("image", pixdim=MODEL_SPACING, mode="bilinear"),
        ]
    )
    post = Compose(
        [
            Activationsd("pred", softmax=True),
            Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
            AsDiscreted("pred", argmax=True),
        ]
    )
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
    spec = networks(args.quick, channels=14)["UNet" if args.quick else "UNet 32-320"]
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


def make_scan(project, work: Path, quick: bool, slices: int):
    from studies.models import Scan
    from studies.services.scans import scans_ingest

    series = work / "series"
    if quick or not REAL_CT.is_dir():
        from studies import demo

        shape = (48, 96, 96) if quick else (slices, 512, 512)
        volume, _ = demo.synthetic_chest_ct(
            shape=shape, spacing=(2.5, 1.0, 1.0) if quick else (1.0, 0.7, 0.7)
        )
        demo.write_ct_series(series, volume, (2.5, 1.0, 1.0) if quick else (1.0, 0.7, 0.7))
    else:
        make_series(REAL_CT, series, slices=slices, spacing=1.0)
    summary = scans_ingest(project=project, paths=[series], workers=4)
    assert not summary.errors, summary.errors
    return Scan.objects.get(project=project)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--slices", type=int, default=300, help="512x512xN scan")
    parser.add_argument("--quick", action="store_true", help="small shapes and networks (every step)")
    parser.add_argument("--repeats", type=int, help="warm runs after one warm-up (default 3; quick 2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["networks", "e2e", "labels14"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = args.device
    args.roi = [64, 64, 32] if args.quick else [96, 96, 96]  # SwinUNETR: each side a multiple of 32
    args.sw_batch = 2 if args.quick else 8
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.fit_steps = 4 if args.quick else 30
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    import monai

    result = {"device": gpu, "torch": torch.__version__, "monai": monai.__version__, "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        django_setup(work / "db")
        from core.services import project_create
        from ml.preannotate import scan_volume

        project = project_create(slug="bench", name="bench")
        scan = make_scan(project, work, args.quick, args.slices)
        volume = scan_volume(scan)
        result["scan"] = {"shape": list(scan.shape), "spacing": [float(s) for s in scan.spacing]}
        print(
            f"device {device} ({gpu}); torch {torch.__version__}; MONAI {monai.__version__}; scan "
            f"{result['scan']['shape']} at {result['scan']['spacing']} mm "
            f"(setup {time.perf_counter() - t0:.0f} s); "
            f"roi {args.roi}, sw batch {args.sw_batch}, overlap 0.25, gaussian; {args.repeats} warm runs",
            flush=True,
        )
        x = torch.from_numpy(volume)[None, None]
        x = ((x - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).clamp_(0, 1).to(device)
        truth = (x < AIR).to(torch.uint8)
        fitted = {"spec": networks(args.quick)["UNet" if args.quick else "UNet 32-320"], "state": None}
        if "networks" not in args.skip:
            print("1. networks on the scan grid", flush=True)
            rows, training, fitted = bench_networks(x, truth, args, device)
            result.update(inference=rows, training=training)
        del x, truth
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        if "e2e" not in args.skip:
            print(
                "2. end to end: the platform's pre-annotation against plain MONAI, same scan and grid",
                flush=True,
            )
            result["end_to_end"] = bench_end_to_end(project, scan, work, fitted, args, device)
        if "labels14" not in args.skip:
            print("3. a 14-label model: peak memory", flush=True)
            result["labels14"] = bench_14_labels(project, scan, work, args, device)
    summary(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))


def summary(r: dict) -> None:
    print(f"\n## {r['device']}, scan {r['scan']['shape']}, torch {r['torch']}, MONAI {r['monai']}")
    if r.get("inference"):
        print(
            "| network | dtype | best s | median s | Dice vs fp32 | Dice vs the answer | training patches/s |"
        )
        print("|---|---|---|---|---|---|---|")
        train = {t["network"]: t.get("patches_per_s", float("nan")) for t in r["training"]}
        for row in r["inference"]:
            if "error" in row:
                print(f"| {row['network']} | {row['dtype']} | {row['error']} | | | | |")
                continue
            print(
                f"| {row['network']} | {row['dtype']} | {row['best_s']:.3f} | {row['median_s']:.3f} | "
                f"{row['dice_vs_fp32']:.4f} | {row['dice_vs_answer']:.3f} | {train[row['network']]:.1f} |"
            )
    if r.get("end_to_end"):
        print(
            "| run | platform s (without load) | load | read | model | prep + resample | store | "
            "plain MONAI s (without load) | load | read + prep | model | Invertd + argmax + save | "
            "platform / MONAI |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for i, row in enumerate(r["end_to_end"], 1):
            p, m = row["platform"], row["monai"]
            print(
                f"| {i} | {p['total_s']:.2f} | {p['load_s']:.2f} | {p['read_s']:.2f} | {p['model_s']:.2f} | "
                f"{p['prep_resample_s']:.2f} | {p['store_s']:.2f} | {m['total_s']:.2f} | {m['load_s']:.2f} | "
                f"{m['read_prep_s']:.2f} | {m['model_s']:.2f} | {m['post_store_s']:.2f} | "
                f"{row['ratio']:.2f}x |"
            )
    for roi, row in (r.get("labels14") or {}).items():
        if "error" in row:
            print(f"14 labels, {roi}: {row['error']}")
            continue
        p, m = row["platform"], row["monai"]
        gpu = f"GPU {p['gpu_mb']:,.0f} MB (MONAI {m['gpu_mb']:,.0f} MB), " if p["gpu_mb"] is not None else ""
        print(
            f"14 labels, {roi}: platform peak {gpu}host {p['host_mb']:,.0f} MB "
            f"(MONAI {m['host_mb']:,.0f} MB); "
            f"{p['total_s']:.2f} s vs {m['total_s']:.2f} s; fallback: {row['fell_back'] or 'none'}"
        )


if __name__ == "__main__":
    main()
