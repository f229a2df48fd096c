"""Step 1 of ``bench/bench_gpu.py``: each network fitted for a few steps to a known answer (training
patches/s), then sliding-window inference over the whole scan grid in fp32, bf16 and fp16 autocast (bf16
and fp16 on a GPU only), timed warm, with the Dice of each dtype's argmax against fp32's and against the
answer."""

import statistics
import time

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

from bench.gpu_common import amp, build, networks, sync


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
    """(inference rows, training rows, the fitted U-Net's spec and state for the end-to-end steps)."""
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
