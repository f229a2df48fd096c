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

The steps live beside this script: ``gpu_networks.py`` (1), ``gpu_end_to_end.py`` (2 and 3),
``gpu_common.py`` (the networks, window, spacing, autocast and peak memory they share), ``gpu_report.py``
(the tables printed at the end) and ``plain_monai.py`` (plain MONAI's transforms, shared with
``bench_label_memory.py``); this script makes the scan, runs the steps and writes ``--out``.

    python3 bench/bench_gpu.py --out $OUT/gpu.json          # on the GPU machine (bench/gpu_session.sh)
    .venv/bin/python bench/bench_gpu.py --quick --device cpu # every step on small shapes
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

from bench.common import REAL_CT, django_setup, make_series  # noqa: E402
from bench.gpu_common import AIR, WINDOW, unet_spec  # noqa: E402
from bench.gpu_end_to_end import bench_14_labels, bench_end_to_end  # noqa: E402
from bench.gpu_networks import bench_networks  # noqa: E402
from bench.gpu_report import summary  # noqa: E402


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
        fitted = {"spec": unet_spec(args.quick), "state": None}
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


if __name__ == "__main__":
    main()
