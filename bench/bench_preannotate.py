"""Issue 5 benchmark (CPU or GPU): end-to-end pre-annotation with a registered 3D U-Net (read the stored
scan, preprocess, sliding-window inference, resample back, store the mask proposal) against the same
network's plain MONAI sliding-window inference on the same preprocessed input, in the same run.

Scans: the real 30-slice Lung-PET-CT-Dx series (ingested) and a synthetic 512x512x300 chest CT. The
network is MONAI's UNet (channels 32-64-128-256-320, strides 2, 2 residual units), random weights: the
time does not depend on what it learned. The model's input spec resamples to ``--spacing`` mm.

    .venv/bin/python bench/bench_preannotate.py                    # CPU, both scans
    .venv/bin/python bench/bench_preannotate.py --device cuda --sw-batch 8
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REAL_CT, django_setup  # noqa: E402

NETWORK = {
    "name": "UNet",
    "args": {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [32, 64, 128, 256, 320],
        "strides": [2, 2, 2, 2],
        "num_res_units": 2,
    },
}


def _ingest_scans(project, tmp: Path, big_shape):
    from studies import demo
    from studies.models import Scan
    from studies.services.scans import scans_ingest

    scans = {}
    if REAL_CT.is_dir():
        before = set(Scan.objects.values_list("pk", flat=True))
        scans_ingest(project=project, paths=[REAL_CT], workers=1)
        scans["real 30-slice series"] = Scan.objects.exclude(pk__in=before).get()
    z, y, x = big_shape
    volume, _ = demo.synthetic_chest_ct(shape=(z, y, x), spacing=(1.0, 0.7, 0.7))
    demo.write_ct_series(tmp / "big", volume, (1.0, 0.7, 0.7))
    before = set(Scan.objects.values_list("pk", flat=True))
    scans_ingest(project=project, paths=[tmp / "big"], workers=1)
    scans[f"synthetic {x}x{y}x{z}"] = Scan.objects.exclude(pk__in=before).get()
    return scans


def _plain_monai(model, scan, spec, device, sw_batch) -> float:
    """The same network through MONAI alone on the same preprocessed input (the model's share)."""
    import torch
    from monai.inferers import sliding_window_inference

    from ml.engine.inference import preprocess
    from ml.preannotate import scan_volume
    from ml.specs import InputSpec

    x, _ = preprocess(scan_volume(scan), [float(s) for s in scan.spacing], InputSpec.from_dict(spec))
    x = x.to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        out = sliding_window_inference(x, spec["roi_size"], sw_batch, model, overlap=0.25, mode="gaussian")
        out.argmax(dim=1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sw-batch", type=int, default=2)
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 2.0])
    parser.add_argument("--big", type=int, nargs=3, default=[300, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pre-") as tmp:
        tmp = Path(tmp)
        django_setup(tmp / "work")
        import torch
        from monai.networks.nets import UNet

        from core.job_child import job_child_wait
        from core.services import project_create
        from ml.engine.loading import load_model
        from ml.preannotate import preannotate
        from ml.services import model_version_register

        torch.manual_seed(0)
        torch.set_num_threads(torch.get_num_threads())
        project = project_create(slug="bench", name="bench")
        weights = tmp / "unet.pt"
        torch.save(UNet(**NETWORK["args"]).state_dict(), weights)
        spec = {
            "ndim": 3,
            "channels": 1,
            "roi_size": [args.roi] * 3,
            "spacing": args.spacing,
            "window": [-1000, 400],
            "modality": ["CT"],
        }
        version = model_version_register(
            project=project,
            path=weights,
            fmt="state-dict",
            name="unet",
            input_spec=spec,
            label_names=["background", "lung"],
            network=NETWORK,
        )
        version.refresh_from_db()
        job_child_wait(version.job_id)  # the validation job runs in a child process (core.job_child)
        version.refresh_from_db()
        assert version.status == "ready", version.error
        scans = _ingest_scans(project, tmp, args.big)
        print(
            f"device {args.device}; UNet 32-320, 2 residual units; roi {args.roi}^3, "
            f"sw batch {args.sw_batch}, "
            f"overlap 0.25, gaussian; resampled to {args.spacing} mm; "
            f"torch threads {torch.get_num_threads()}"
        )
        rows = []
        model = load_model(weights, "state-dict", network=NETWORK, device=args.device)
        for name, scan in scans.items():
            _plain_monai(model, scan, spec, args.device, args.sw_batch)  # warm-up (cuDNN plans, allocator)
            plain = _plain_monai(model, scan, spec, args.device, args.sw_batch)
            t0 = time.perf_counter()
            outcome = preannotate(
                scan=scan,
                generator="model:unet",
                params={"device": args.device, "sw_batch_size": args.sw_batch},
            )
            total = time.perf_counter() - t0
            s = outcome.seconds
            rows.append(
                {
                    "scan": name,
                    "shape": scan.shape,
                    "platform_s": total,
                    "model_s": s.get("model", 0.0),
                    "read_s": s.get("read", 0.0),
                    "prep_resample_s": s.get("preprocess_and_resample", 0.0),
                    "store_s": s.get("store", 0.0),
                    "plain_monai_s": plain,
                    "ratio": total / plain,
                    "outside_model_share": 1 - s.get("model", 0.0) / total,
                }
            )
        print(
            "| scan | shape | platform end-to-end s | read | preprocess + resample back | model | store | "
            "plain MONAI s | platform / plain | share outside the model |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            cells = [r["scan"], "x".join(map(str, r["shape"]))]
            keys = ("platform_s", "read_s", "prep_resample_s", "model_s", "store_s", "plain_monai_s")
            cells += [f"{r[k]:.2f}" for k in keys]
            cells += [f"{r['ratio']:.2f}x", f"{100 * r['outside_model_share']:.0f} %"]
            print("| " + " | ".join(cells) + " |")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
