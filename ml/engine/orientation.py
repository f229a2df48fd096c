"""The scan's canonical array reordered to RAS (what MONAI's ``Orientationd(axcodes="RAS")`` gives) and
masks brought back: for registered models run by an input spec, which are trained on RAS-ordered arrays.

The platform stores a scan as array axes (X, Y, Z) with an affine voxel -> RAS+ mm; the array itself is
ordered as acquired (a DICOM CT is LPS-ordered: X runs to the patient's right). ``to_ras`` flips and
permutes axes (no resampling) so that the array's axes run to R, A and S; ``from_ras`` undoes it.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np


def to_ras(
    volume: np.ndarray, affine: np.ndarray, spacing: list[float]
) -> tuple[np.ndarray, list[float], np.ndarray]:
    """``volume`` (X, Y, Z) reordered to RAS, its spacing (mm, in the new axis order) and the orientation
    transform ``from_ras`` needs."""
    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    ras = nib.orientations.apply_orientation(volume, ornt)
    order = [int(a) for a in ornt[:, 0]]
    new_spacing = [0.0] * len(order)
    for source, target in enumerate(order):
        new_spacing[target] = float(spacing[source])
    return np.ascontiguousarray(ras), new_spacing, ornt


def from_ras(mask: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """A mask on the RAS-ordered grid back on the scan's stored grid."""
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
    return np.ascontiguousarray(nib.orientations.apply_orientation(mask, back))


def to_ras_with_affine(
    volume: np.ndarray, affine: np.ndarray, spacing: list[float]
) -> tuple[np.ndarray, list[float], np.ndarray, np.ndarray]:
    """``to_ras`` plus the affine of the reordered array (voxel -> RAS+ mm: the same points in space, so
    whole-volume position channels computed from it are those of the stored grid)."""
    affine = np.asarray(affine, dtype=np.float64)
    ras, new_spacing, ornt = to_ras(volume, affine, spacing)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, volume.shape[:3])
    return ras, new_spacing, new_affine, ornt
