"""Issue 5 GPU benchmark: one script for a single CUDA GPU, a few minutes.

MONAI alone, random input of ``--shape`` (default 512x512x300, one channel), sliding window roi 96^3, batch
8, overlap 0.25, Gaussian blending, argmax on the GPU:
- U-Net (channels 32-64-128-256-320, strides 2, 2 residual units), SegResNet (32 initial filters) and
  SwinUNETR (feature size 48) in fp32, bf16 and fp16 (autocast): seconds per volume and volumes/s;
- training patches per second (U-Net, batch 2 of 96^3 patches, Dice+CE, Adam, bf16 autocast);
then the platform's end-to-end pre-annotation (``bench/bench_preannotate.py --device cuda``: read the stored
scan, preprocess, infer, resample back, store) against the same network's plain MONAI time in the same
run (target: within 1.5x).

    python bench/bench_gpu.py --out $OUT/gpu.json            # on the GPU machine
    python bench/bench_gpu.py --quick --device cpu            # a smoke run anywhere
Anchor (issue 5, H200, MONAI alone, bf16): U-Net 0.27 s, SegResNet 1.5 s, SwinUNETR 2.9 s per volume.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.networks.nets import SegResNet, SwinUNETR, UNet

REPO = Path(__file__).resolve().parent.parent


def networks(quick: bool):
    if quick:
        return {"UNet": lambda: UNet(3, 1, 2, (8, 16), (2,), num_res_units=1)}
    return {
        "UNet 32-320": lambda: UNet(3, 1, 2, (32, 64, 128, 256, 320), (2, 2, 2, 2), num_res_units=2),
        "SegResNet 32": lambda: SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=32),
        "SwinUNETR 48": lambda: SwinUNETR(in_channels=1, out_channels=2, feature_size=48, spatial_dims=3),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def infer_seconds(model, x, roi, batch, device, dtype, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up (kernels, allocator)
        sync(device)
        t0 = time.perf_counter()
        with (
            torch.no_grad(),
            torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32),
        ):
            out = sliding_window_inference(x, roi, batch, model, overlap=0.25, mode="gaussian")
            out.argmax(dim=1)
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def train_patches_per_second(device: str, roi, steps: int, quick: bool) -> float:
    model = networks(quick)["UNet" if quick else "UNet 32-320"]().to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x = torch.rand(2, 1, *roi, device=device)
    y = (torch.rand(2, 1, *roi, device=device) > 0.5).long()
    enabled = device.startswith("cuda")
    for i in range(steps + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=enabled):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    sync(device)
    return 2 * steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--quick", action="store_true", help="tiny shapes and one network (smoke test)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = args.device
    shape = [64, 64, 32] if args.quick else args.shape
    roi = [32, 32, 32] if args.quick else [96, 96, 96]
    batch = 2 if args.quick else 8
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    print(
        f"device {device} ({gpu}); torch {torch.__version__}; volume {shape}; roi {roi}; sw batch {batch}",
        flush=True,
    )
    torch.manual_seed(0)
    x = torch.rand(1, 1, *shape, device=device)
    rows = []
    dtypes = {"fp32": torch.float32}
    if device.startswith("cuda"):
        dtypes.update(bf16=torch.bfloat16, fp16=torch.float16)
    for name, make in networks(args.quick).items():
        model = make().to(device).eval()
        for label, dtype in dtypes.items():
            try:
                seconds = infer_seconds(model, x, roi, batch, device, dtype, repeats=1 if args.quick else 2)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                rows.append({"network": name, "dtype": label, "error": "out of memory"})
                continue
            rows.append({"network": name, "dtype": label, "seconds": seconds, "volumes_per_s": 1 / seconds})
            print(f"| {name} | {label} | {seconds:.3f} s | {1 / seconds:.2f} volumes/s |", flush=True)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    patches = train_patches_per_second(device, roi, 3 if args.quick else 20, args.quick)
    print(f"training: {patches:.1f} patches/s (UNet, batch 2, bf16 on GPU)", flush=True)
    result = {"device": gpu, "shape": shape, "inference": rows, "train_patches_per_s": patches}
    big = (
        ["--big", "40", "96", "96"] if args.quick else ["--big", str(shape[2]), str(shape[1]), str(shape[0])]
    )
    platform = REPO / "bench" / "out" / "preannotate.json"
    platform.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(REPO / "bench" / "bench_preannotate.py"),
        "--device",
        device,
        "--sw-batch",
        str(batch),
        "--json",
        str(platform),
        *big,
    ] + (["--roi", "32"] if args.quick else [])
    print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout, flush=True)
    result["platform_vs_monai"] = json.loads(platform.read_text())
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
