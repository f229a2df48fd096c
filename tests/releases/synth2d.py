"""Synthetic radiograph cases for the exporter tests (no database)."""

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from releases.records import (
    GazeAnatomyRecord,
    ImageRecord,
    LabelRecord,
    ReleaseMeta,
)

X, Y = 64, 48  # image width (columns) and height (rows)
META = ReleaseMeta(name="cxr-test", version=1, description="synthetic", licence="CC-BY-4.0")


# -- synthetic cases ----------------------------------------------------------------------------------


def image_record(tmp_path: Path, name: str, shape=(X, Y)) -> ImageRecord:
    """An (X, Y) image whose value tells its position: x + 100 * y."""
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    data = (grid[0] + 100 * grid[1]).astype(np.float32)
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return ImageRecord(
        path=path, shape=list(shape), spacing=[0.2] * len(shape), affine=np.eye(4), modality="DX"
    )


def mask_png(tmp_path: Path, name: str, mask: np.ndarray) -> Path:
    path = tmp_path / f"{name}.png"
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)
    return path


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """A (rows, columns) mask with rows y0:y1 and columns x0:x1 set."""
    m = np.zeros((Y, X), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def heatmap(cy: float, cx: float, scale: float) -> np.ndarray:
    yy, xx = np.mgrid[0:Y, 0:X]
    return (scale * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50.0)).astype(np.float32)


def gaze(anatomy: str, reader: str, recording: str, heat: np.ndarray, mask: np.ndarray | None):
    return GazeAnatomyRecord(
        anatomy=anatomy,
        caption=f"{anatomy} is clear.",
        sentences=[f"{anatomy} is clear."],
        dwell_s=1.5,
        fixations=7,
        time_to_first_s=0.25 if reader == "r1" else None,
        dwell_share=0.4,
        reader=reader,
        recording_id=recording,
        load_heatmap=lambda: heat,
        load_mask=lambda: mask,
        load_focus=lambda: heat > np.quantile(heat, 0.8),
        provenance={"lag_s": 1.0},
    )


def label(label_id: str, text: str = "finding", **kw) -> LabelRecord:
    return LabelRecord(label_id=label_id, text=text, **kw)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)
