"""Model-zoo bundles run end to end on the real CT: the platform's bundle runner against MONAI's own
(``monai.bundle.run``), same configs, same random weights, same scan.

For each bundle: its ``configs/inference.json`` and ``metadata.json`` from the model-zoo mirror, a
``models/model.pt`` with seeded random weights of its ``network_def`` (the zoo's weights are not
downloaded), and the CT lungdx-a0002 written as the platform stores it (``load_unit``: canonical NIfTI,
LPS-ordered array, RAS affine). MONAI's runner (baseline) and the platform's runner each run in their own
process; each reports seconds and peak resident memory, and the GPU's peak allocation when on CUDA. The
masks are compared label by label (Dice, labels present in either).

MONAI's runner evaluates the zoo config's ``$`` expressions (the zoo is trusted here; the platform reads
the same files as data).

    .venv/bin/python bench/bundle_zoo_run.py /work/.mirror/Project-MONAI+model-zoo/repo \\
        [--bundles spleen_ct_segmentation,wholeBody_ct_segmentation] [--nifti image.nii]
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


def _peaks() -> dict:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    import torch

    if torch.cuda.is_available():
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_monai(folder: Path, nifti: Path, out: Path) -> dict:
    import numpy as np

    from tests.ml.bundle_case import monai_run

    t0 = time.perf_counter()
    labels, _ = monai_run(folder, nifti, out / "monai", **{"dataloader#num_workers": 0})
    seconds = time.perf_counter() - t0
    np.save(out / "monai.npy", labels.astype(np.int16))
    return {"seconds": seconds, **_peaks()}


def run_platform(folder: Path, nifti: Path, out: Path) -> dict:
    import nibabel as nib
    import numpy as np
    import torch

    from ml.bundle_pipeline import bundle_read
    from ml.engine.bundle_run import bundle_predict
    from ml.engine.loading import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    image = nib.load(nifti)
    volume = np.asarray(image.dataobj, dtype=np.float32)
    bundle = bundle_read(folder)
    labels = bundle.metadata.labels
    model = load_model(folder, "monai-bundle", device=device)
    pred = bundle_predict(bundle, model, volume, image.affine, labels, device=device)
    index = pred.label_map.astype(np.int16)
    seconds = time.perf_counter() - t0
    np.save(out / "platform.npy", index)
    return {"seconds": seconds, "model_seconds": pred.seconds_model, **_peaks()}


def _child(mode: str, folder: Path, nifti: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, __file__, "--child", mode, "--folder", str(folder), "--nifti", str(nifti),
               "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")


def _bundle_folder(mirror: Path, name: str, tmp: Path) -> Path:
    import torch

    from ml.bundle_pipeline import bundle_read
    from ml.engine.bundle_run import bundle_objects

    folder = tmp / name
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    for config in ("inference.json", "metadata.json"):
        data = subprocess.run(["git", "-C", str(mirror), "show", f"HEAD:models/{name}/configs/{config}"],
                              capture_output=True, check=True).stdout  # fmt: skip
        (folder / "configs" / config).write_bytes(data)
    (folder / "models" / "model.pt").write_bytes(b"")
    torch.manual_seed(0)
    network = bundle_objects(bundle_read(folder), build_network=True).network
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mirror", type=Path, nargs="?")
    parser.add_argument("--bundles", default="spleen_ct_segmentation")
    parser.add_argument("--nifti", type=Path)
    parser.add_argument("--child")
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        import warnings

        warnings.filterwarnings("ignore")
        run = run_monai if args.child == "monai" else run_platform
        print("RESULT " + json.dumps(run(args.folder, args.nifti, args.out)))
        return 0
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="zoo-run-") as tmp_name:
        tmp = Path(tmp_name)
        nifti = args.nifti
        if nifti is None:
            from studies.ingest.load import load_unit

            loaded = load_unit("dicom", sorted(CT.glob("*.dcm")), None, "CT", tmp)
            nifti = Path(loaded.nifti_path)
        print(f"scan: {nifti.name} {tuple(__import__('nibabel').load(nifti).shape)}")
        print("| bundle | runner | seconds | peak RSS MB | GPU peak MB | labels | min Dice vs monai.bundle |")
        print("|---|---|---|---|---|---|---|")
        for name in args.bundles.split(","):
            folder = _bundle_folder(args.mirror, name, tmp)
            out = tmp / f"{name}-out"
            out.mkdir()
            base = _child("monai", folder, nifti, out)
            ours = _child("platform", folder, nifti, out)
            expected, got = np.load(out / "monai.npy"), np.load(out / "platform.npy")
            dices = {}
            for c in sorted(set(np.unique(expected).tolist()) | set(np.unique(got).tolist()) - {0}):
                if c == 0:
                    continue
                a, b = expected == c, got == c
                dices[c] = 2 * int((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))
            worst = min(dices.values()) if dices else float("nan")
            for label, r in (("monai.bundle.run (baseline)", base), ("platform", ours)):
                print(f"| {name} | {label} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                      f"{r.get('cuda_peak_mb', float('nan')):.0f} | {len(dices)} | "
                      f"{'' if label.startswith('monai') else f'{worst:.4f}'} |")  # fmt: skip
            agree = float((expected == got).mean())
            print(
                f"  {name}: voxels with the same label {agree:.6f}; Dice per label {json.dumps(dices)[:400]}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
