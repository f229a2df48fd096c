"""Memory of inverting a bundle's probabilities back to the scan's grid: a few channels at a time (the
platform's ``invert_argmax``, 8 by default) against all channels at once (what the bundle's ``Invertd``
does as written, and what ``monai.bundle.run`` does: the baseline, same run).

The test bundle of ``tests/ml/test_bundles.py`` (Orientationd, Spacingd 2.5 x 2.5 x 5 mm,
NormalizeIntensityd, SlidingWindowInferer, Activationsd(softmax) -> Invertd(bilinear) -> AsDiscreted
(argmax)) with ``--channels`` output channels, seeded random weights, on the real CT lungdx-a0002 as the
platform stores it (512 x 512 x 30). Each way runs in its own process; peak resident memory, seconds and
whether the label maps are the same voxel for voxel.

    .venv/bin/python bench/bundle_invert_memory.py [--channels 32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CT = ROOT.parent / "shared" / "data" / "ct" / "lungdx-a0002"


def child(mode: str, folder: Path, nifti: Path, out: Path) -> dict:
    import nibabel as nib
    import numpy as np

    from ml.bundle_pipeline import bundle_read
    from ml.engine.bundle_run import bundle_predict
    from ml.engine.loading import load_model
    from tests.ml.bundle_case import monai_run

    image = nib.load(nifti)
    volume = np.asarray(image.dataobj, dtype=np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if mode == "monai":
        index, _ = monai_run(folder, nifti, out / "monai")
    else:
        bundle = bundle_read(folder)
        names = bundle.metadata.labels
        model = load_model(folder, "monai-bundle")
        pred = bundle_predict(bundle, model, volume, image.affine, names, lean=mode == "per-channel")
        index = pred.label_map.astype(np.int64)
    seconds = time.perf_counter() - t0
    np.save(out / f"{mode}.npy", index.astype(np.int16))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mb": peak, "before_mb": before}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--child")
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--nifti", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        import warnings

        warnings.filterwarnings("ignore")
        print("RESULT " + json.dumps(child(args.child, args.folder, args.nifti, args.out)))
        return 0
    import numpy as np
    import torch

    from studies.ingest.load import load_unit
    from tests.ml.bundle_case import CONFIG, METADATA, NET, write_bundle

    with tempfile.TemporaryDirectory(prefix="invert-") as tmp_name:
        tmp = Path(tmp_name)
        nifti = Path(load_unit("dicom", sorted(CT.glob("*.dcm")), None, "CT", tmp).nifti_path)
        n = args.channels
        config = json.loads(json.dumps(CONFIG))
        config["network_def"]["out_channels"] = n
        metadata = json.loads(json.dumps(METADATA))
        names = ["background", *[f"label_{i}" for i in range(1, n)]]
        metadata["network_data_format"]["outputs"]["pred"].update(
            num_channels=n, channel_def=dict(enumerate(names))
        )
        torch.manual_seed(0)
        from monai.networks.nets import UNet

        net = UNet(**{**NET, "out_channels": n})
        folder = write_bundle(
            tmp / "bundle", config=config, metadata=metadata, state={"model": net.state_dict()}
        )
        print(f"scan 512x512x30, test bundle with {n} output channels (model grid 132x132x48)")
        print(
            "| way | seconds | peak RSS MB | growth over the loaded process MB | same map as monai.bundle |"
        )
        print("|---|---|---|---|---|")
        results = {}
        for mode in ("monai", "all-channels", "per-channel"):
            out = tmp / mode
            out.mkdir()
            command = [sys.executable, __file__, "--child", mode, "--folder", str(folder),
                       "--nifti", str(nifti), "--out", str(out)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(done.stderr[-3000:])
            results[mode] = json.loads(line[7:])
            results[mode]["map"] = np.load(out / f"{mode}.npy")
        base = results["monai"]["map"]
        ways = (("monai", "monai.bundle.run (baseline)"), ("all-channels", "platform, Invertd as written"),
                ("per-channel", "platform, 8 channels at a time (default)"))  # fmt: skip
        for mode, label in ways:
            r = results[mode]
            same = float((r["map"] == base).mean())
            growth = r["peak_rss_mb"] - r["before_mb"]
            print(f"| {label} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {growth:.0f} | {same:.6f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
