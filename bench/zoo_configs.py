"""How many of the MONAI model zoo's radiology segmentation bundles the platform can run, from their
configs alone (no weights): each bundle's ``configs/inference.json|yaml`` and ``configs/metadata.json`` go
through the platform's reader (``ml.bundle_pipeline.bundle_read``: data only, nothing evaluated), then the
worker side builds what would run (``ml.engine.bundle_run.bundle_objects``: the network from
``network_def`` with random weights, the allow-listed MONAI transforms and the inferer).

Baseline in the same run: the reader of the previous release (``ml.bundle_config.bundle_network_def``),
which only read ``network_def`` and ran every bundle without its own pre/postprocessing.

Usage (the mirror is a bare git directory of github.com/Project-MONAI/model-zoo, or a checkout)::

    .venv/bin/python bench/zoo_configs.py /work/.mirror/Project-MONAI+model-zoo/repo

Nothing of the zoo is copied into this repository: the configs are read from the mirror into a
temporary folder per bundle.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# radiology segmentation bundles of the zoo (CT / MR; detection, classification, generation, pathology,
# endoscopy and registration bundles are left out), by folder under models/
RADIOLOGY_SEGMENTATION = [
    "brats_mri_segmentation", "multi_organ_segmentation", "pancreas_ct_dints_segmentation",
    "pediatric_abdominal_ct_segmentation", "prostate_mri_anatomy", "renalStructures_CECT_segmentation",
    "renalStructures_UNEST_segmentation", "segmentation_template", "spleen_ct_segmentation",
    "spleen_deepedit_annotation", "swin_unetr_btcv_segmentation", "ventricular_short_axis_3label",
    "vista3d", "wholeBody_ct_segmentation", "wholeBrainSeg_Large_UNEST_segmentation",
]  # fmt: skip
CONFIGS = ("inference.json", "inference.yaml", "metadata.json")


def _files(mirror: Path, bundle: str) -> dict[str, bytes]:
    """configs/<name> of ``bundle`` from a bare git mirror (``git show HEAD:...``) or a checkout."""
    out = {}
    for name in CONFIGS:
        rel = f"models/{bundle}/configs/{name}"
        if (mirror / rel).is_file():
            out[name] = (mirror / rel).read_bytes()
            continue
        done = subprocess.run(["git", "-C", str(mirror), "show", f"HEAD:{rel}"], capture_output=True)
        if done.returncode == 0:
            out[name] = done.stdout
    return out


def main(mirror: Path) -> int:
    import torch

    from ml.bundle_config import bundle_network_def
    from ml.bundle_pipeline import bundle_read
    from ml.engine.bundle_run import bundle_objects
    from ml.specs import ModelError

    torch.set_num_threads(2)
    commit = subprocess.run(["git", "-C", str(mirror), "rev-parse", "HEAD"], capture_output=True, text=True)
    print(f"model-zoo {commit.stdout.strip()[:12] or '(checkout)'}: {len(RADIOLOGY_SEGMENTATION)} radiology "
          "segmentation bundles")  # fmt: skip
    rows = []
    for bundle in RADIOLOGY_SEGMENTATION:
        files = _files(mirror, bundle)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / bundle
            (folder / "configs").mkdir(parents=True)
            (folder / "models").mkdir()
            for name, data in files.items():
                (folder / "configs" / name).write_bytes(data)
            (folder / "models" / "model.pt").write_bytes(b"")  # configs only: no weights are read
            try:
                bundle_network_def(folder)
                baseline = "network_def read"
            except ModelError as exc:
                baseline = f"refused: {exc}"
            t0 = time.perf_counter()
            try:
                info = bundle_read(folder)
                if info.pipeline is None:
                    raise ModelError(folder.name, "preprocessing", "no pipeline in the config")
                objects = bundle_objects(info, build_network=True)
                labels = info.metadata.labels if info.metadata else None
                inferer = objects.inferer.__class__.__name__
                del objects
                result = (
                    f"runs: {len(info.pipeline.preprocessing)} pre, {inferer}, "
                    f"{len(info.pipeline.postprocessing)} post; "
                    f"{len(labels) if labels else 'no'} labels from metadata"
                )
                ok = True
            except ModelError as exc:
                result, ok = f"refused: [{exc.field}] {exc.reason}", False
            seconds = time.perf_counter() - t0
        rows.append({"bundle": bundle, "ok": ok, "platform": result, "baseline": baseline, "s": seconds})
        print(f"{'OK ' if ok else 'NO '} {bundle:42s} {seconds:5.1f} s  {result}")
        print(f"    baseline (network_def only): {baseline}")
    runnable = sum(r["ok"] for r in rows)
    base = sum(r["baseline"] == "network_def read" for r in rows)
    print(f"\nrunnable with their own pipeline: {runnable} / {len(rows)}")
    print(f"baseline: network_def readable {base} / {len(rows)} (pipeline ignored: 0 run as the bundle does)")
    print(json.dumps({"runnable": runnable, "total": len(rows), "baseline_network_def": base}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/.mirror/Project-MONAI+model-zoo/repo")))
