"""Issue 16 item 6 benchmark: airway removal of the lungs generator, against the same pipeline without it
(no trachea seed: the airway stays wherever the threshold puts it) in the same run.

Cases:

- **real**: the real Lung-PET-CT-Dx series (30 slices, 8 mm), and a 512x512x300 volume made from it
  (``bench.common.make_series``: its slices reused in order, 0.8 mm apart). No truth: the figure is the
  dark midline tube (the trachea, HU < -900, 50-700 mm², on the body's midline) of the four most superior
  slices, in ml, that is inside a lung mask, and the removed airway's volume;
- **phantoms** (``tests/ml/airway_phantoms.py``): six airway-tree shapes with their truth. Figures: the
  airway outside the lung envelopes that stays in a lung mask (ml), the removed airway (ml; the truth
  tree's volume beside it), whether the oesophagus's air was taken for airway, and each lung's Dice.

    .venv/bin/python bench/bench_lungs.py [--no-300]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REAL_CT, make_series  # noqa: E402
from ml.generators.lungs import LungParams, lungs_segment  # noqa: E402
from studies.ingest.dicom import dicom_load_series, dicom_read_headers  # noqa: E402
from tests.ml.airway_phantoms import SHAPES, airway_phantom  # noqa: E402

WITHOUT = LungParams(trachea_area_mm2=(0.0, 0.0))  # no trachea seed: nothing removed


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def trachea_top(hu: np.ndarray, affine: np.ndarray, spacing) -> np.ndarray:
    """The dark midline tube of the four most superior slices (X, Y, Z), as ``tests/ml/test_lungs.py``."""
    out = np.zeros(hu.shape, dtype=bool)
    top = hu.shape[2] - 1 if affine[2, 2] > 0 else 0
    step = -1 if affine[2, 2] > 0 else 1
    pixel_mm2 = spacing[0] * spacing[1]
    for k in range(top, top + 4 * step, step):
        labels, n = ndi.label(hu[:, :, k] < -900)
        for idx in range(1, n + 1):
            tube = labels == idx
            xs = np.nonzero(tube)[0]
            midline = abs(xs.mean() - (hu.shape[0] - 1) / 2) < 0.1 * hu.shape[0]
            border = xs.min() == 0 or xs.max() == hu.shape[0] - 1
            if midline and not border and 50 <= tube.sum() * pixel_mm2 <= 700:
                out[:, :, k] |= tube
    return out


def run(hu, spacing, affine, params):
    t0 = time.perf_counter()
    r = lungs_segment(hu, spacing=spacing, affine=affine, params=params)
    return r, time.perf_counter() - t0


def load(folder: Path):
    files, errors = dicom_read_headers(sorted(folder.glob("*.dcm")))
    assert not errors, errors
    v = dicom_load_series(files)
    return v.array, tuple(v.spacing), np.asarray(v.affine)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-300", action="store_true", help="skip the 512x512x300 volume")
    args = ap.parse_args()
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    real = [("real 512x512x30 (8 mm)", *load(REAL_CT))]
    if not args.no_300:
        with tempfile.TemporaryDirectory() as tmp:
            make_series(REAL_CT, Path(tmp), slices=300, spacing=0.8)
            real.append(("real slices, 512x512x300 (0.8 mm)", *load(Path(tmp))))
    print("\n| scan | pipeline | s | left ml | right ml | airway removed ml "
          "| trachea (top 4 slices) in lungs ml |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, hu, spacing, affine in real:
        tube = trachea_top(hu, affine, spacing)
        voxel_ml = float(np.prod(spacing)) / 1000
        for label, params in (("airway removal", None), ("baseline: none", WITHOUT)):
            r, s = run(hu, spacing, affine, params)
            removed = 0.0 if r.airway is None else float(r.airway.sum()) * voxel_ml
            inside = float(((r.left | r.right) & tube).sum()) * voxel_ml
            print(f"| {name} | {label} | {s:.1f} | {r.left_ml:.0f} | {r.right_ml:.0f} | {removed:.1f} | "
                  f"{inside:.2f} of {float(tube.sum()) * voxel_ml:.2f} |")  # fmt: skip
    print("\n| phantom | pipeline | s | airway outside the lungs left in a mask ml "
          "| airway removed ml (tree) | oesophagus taken | Dice left / right |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        p = airway_phantom(shape)
        for label, params in (("airway removal", None), ("baseline: none", WITHOUT)):
            r, s = run(p.hu, p.spacing, p.affine, params)
            lungs = r.left | r.right
            removed = 0.0 if r.airway is None else float(r.airway.sum()) * p.voxel_ml
            oes = r.airway is not None and bool((r.airway & p.oesophagus).any())
            tree = float(p.tree.sum()) * p.voxel_ml
            print(f"| {shape} | {label} | {s:.1f} | {float((lungs & p.airway).sum()) * p.voxel_ml:.2f} of "
                  f"{float(p.airway.sum()) * p.voxel_ml:.1f} | {removed:.1f} ({tree:.1f}) "
                  f"| {'yes' if oes else 'no'} | {dice(r.left, p.lungs['left']):.3f} / "
                  f"{dice(r.right, p.lungs['right']):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
