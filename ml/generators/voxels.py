"""Voxel helpers of the weight-free generators (``ml.generators.lungs``, ``ml.generators.airways``).

Volumes here are ``(Z, Y, X)``: the C-contiguous transpose of the platform's Fortran-ordered canonical
``(X, Y, Z)`` arrays, on which ``scipy.ndimage.label`` runs several times faster. In-plane operations use
the Y and X axes only, so thick slices are handled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# 3x3x3 structures on (Z, Y, X): in-plane (no link across slices) 4- and 8-connectivity; 3D 6-connectivity.
PLANE4 = np.zeros((3, 3, 3), dtype=bool)
PLANE4[1] = ndi.generate_binary_structure(2, 1)
PLANE8 = np.zeros((3, 3, 3), dtype=bool)
PLANE8[1] = True
CONN6 = ndi.generate_binary_structure(3, 1)
CONN26 = np.ones((3, 3, 3), dtype=bool)

Box = tuple[slice, slice, slice]


def lut_select(labels: np.ndarray, n: int, chosen: np.ndarray) -> np.ndarray:
    """Boolean mask of the voxels whose label is in ``chosen`` (one lookup-table pass)."""
    lut = np.zeros(n + 1, dtype=bool)
    lut[np.asarray(chosen, dtype=np.int64)] = True
    lut[0] = False
    return lut[labels]


def approx_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxel counts of labels ``1..n`` estimated on every 2nd row and column (x4).

    ``np.bincount`` over a whole volume is slow when one label fills most of it (every voxel bumps the
    same counter); a quarter of the voxels is enough to rank components and check sizes.
    """
    return 4 * np.bincount(labels[:, ::2, ::2].ravel(), minlength=n + 1)[1 : n + 1]


def fill_holes_inplane(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice in a ``(Z, Y, X)`` mask: background not 4-connected to the Y/X border."""
    labels, n = ndi.label(~mask, structure=PLANE4)
    faces = (labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1])
    border = np.unique(np.concatenate([f.ravel() for f in faces]))
    return ~lut_select(labels, n, border)


def below(v: np.ndarray, threshold: float) -> np.ndarray:
    """``v < threshold`` without casting an integer volume to float64 (``v < ceil(t)`` is the same)."""
    if v.dtype.kind in "iu":
        info = np.iinfo(v.dtype)
        return v < v.dtype.type(np.clip(np.ceil(threshold), info.min, info.max))
    return v < threshold


def bbox(mask: np.ndarray, pad: int = 0) -> Box | None:
    """Bounding box of a ``(Z, Y, X)`` mask, padded in Y and X only; None when empty."""
    out = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        if hit.size == 0:
            return None
        extra = pad if ax else 0
        out.append(slice(max(0, hit[0] - extra), min(mask.shape[ax], hit[-1] + 1 + extra)))
    return out[0], out[1], out[2]
