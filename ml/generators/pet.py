"""PET lesion label from a report's (SUVmax, slice) seed, and a synthetic PET phantom to test it.

Conventions (the platform's canonical volumes): an SUV volume is a float array with axes ``(X, Y, Z)`` =
(column, row, slice), values SUVbw (g/ml); ``spacing`` is the voxel size in mm along the same axes; a
physical position in mm is the voxel index times the spacing (voxel centres, origin at voxel (0, 0, 0)).

The method (docs/formats.md, "PET/CT positive findings from SUVmax and slice numbers"):

1. **Seed.** Reported SUVmax below 2.5 is dropped. Threshold the volume at ``(0.617·bg/SUV + 0.316)·SUV``
   with bg = 1 and SUV the reported SUVmax; 6-connected components. Keep a component whose z-range contains
   the reported slice and whose own SUVmax is within 0.1 of the reported value (the closest one when
   several do); a component longer than 50 slices is rejected when the reported SUVmax is below 5.
2. **Growth.** With SUVmax the seed component's maximum (fixed from here on),
   ``T = (0.078/V_ml + 0.617·bg/SUVmax + 0.316)·SUVmax``, bg = mean SUV of the ring of voxels within 3
   voxels (Euclidean, in voxel units) outside the current label, V_ml the current label's volume. The
   first pass leaves out the volume term and grows with the "21-connected" neighbourhood, later passes
   with 6-connectivity; the label is the component of ``SUV ≥ T`` holding the seed's hottest voxel.
   Iterate until T changes by ≤ 1 % from the previous pass. A pass with ``T/SUVmax > 0.9`` drops the label
   (a higher T only shrinks the label, which raises T further).

"21-connected" has no standard 3D meaning (the usual neighbourhoods are 6, 18 and 26) and the source does
not define it; the nearest reading, used here, is **18-connectivity** (faces and edges, no corners) for
the first growth pass; ``first_connectivity`` lets a caller choose 6, 18 or 26 instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage

__all__ = ["PetSeedResult", "pet_lesion_from_seed", "pet_phantom"]

MIN_SUVMAX = 2.5
SUV_TOLERANCE = 0.1
MAX_SLICES_LOW_SUV = 50
LOW_SUV = 5.0
MAX_T_RATIO = 0.9
RING_VOXELS = 3
CONVERGENCE = 0.01

Outcome = Literal["lesion", "no_seed", "dropped"]


@dataclass(frozen=True)
class PetSeedResult:
    """Outcome of one seed. ``outcome`` is ``lesion`` (mask non-empty), ``no_seed`` or ``dropped``;
    ``reason`` says why it stopped (``converged``, ``max_iterations`` or the no-seed/drop reason).

    ``slice_index`` is the 0-based Z index k the report's slice number maps to; ``suvmax`` the seed
    component's SUVmax (g/ml); ``seed_threshold`` the seed threshold (SUV); ``thresholds`` the growth T of
    each pass (SUV); ``voxels`` and ``volume_ml`` the final label's size.
    """

    outcome: Outcome
    reason: str
    slice_index: int | None = None
    suvmax: float | None = None
    seed_threshold: float | None = None
    thresholds: tuple[float, ...] = field(default=())
    voxels: int = 0
    volume_ml: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "lesion"


def _structure(connectivity: int) -> np.ndarray:
    rank = {6: 1, 18: 2, 26: 3}.get(connectivity)
    if rank is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    return ndimage.generate_binary_structure(3, rank)


def _slice_index(slice_number: int, depth: int, slice_from_end: bool) -> int:
    """0-based Z index: ``depth − slice`` when the number counts from the other end (slice 1 is the last
    index), else ``slice − 1`` (1-based from index 0)."""
    return depth - slice_number if slice_from_end else slice_number - 1


def _ring_mean(suv: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean SUV of the voxels within ``RING_VOXELS`` (Euclidean, voxel units) outside ``mask``; None when
    there is no such voxel (the label fills the volume)."""
    coords = np.nonzero(mask)
    margin = RING_VOXELS + 1
    box = tuple(
        slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
        for c, n in zip(coords, mask.shape)
    )
    inside = mask[box]
    distance = ndimage.distance_transform_edt(~inside)
    ring = ~inside & (distance <= RING_VOXELS)
    if not ring.any():
        return None
    return float(suv[box][ring].mean())


def _grow(suv: np.ndarray, threshold: float, anchor: tuple[int, ...], structure: np.ndarray) -> np.ndarray:
    labels, _ = ndimage.label(suv >= threshold, structure=structure)
    label = labels[anchor]
    return labels == label if label else np.zeros(suv.shape, dtype=bool)


def _seed(suv: np.ndarray, suvmax: float, k: int) -> tuple[np.ndarray | None, float, str, float | None]:
    """(seed mask or None, seed threshold, reason, component SUVmax)."""
    threshold = (0.617 * (1.0 / suvmax) + 0.316) * suvmax
    labels, _ = ndimage.label(suv >= threshold, structure=_structure(6))
    candidates: list[tuple[float, int, float]] = []
    too_long = 0
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or not box[2].start <= k < box[2].stop:
            continue
        component_max = float(suv[box][labels[box] == index].max())
        if abs(component_max - suvmax) > SUV_TOLERANCE + 1e-9:
            continue
        if suvmax < LOW_SUV and box[2].stop - box[2].start > MAX_SLICES_LOW_SUV:
            too_long += 1
            continue
        candidates.append((abs(component_max - suvmax), index, component_max))
    if not candidates:
        if too_long:
            reason = f"matching component longer than {MAX_SLICES_LOW_SUV} slices with SUVmax < {LOW_SUV}"
            return None, threshold, reason, None
        reason = (
            f"no component at threshold {threshold:.3f} spans slice {k} with SUVmax {suvmax}±{SUV_TOLERANCE}"
        )
        return None, threshold, reason, None
    _, index, component_max = min(candidates)
    return labels == index, threshold, "", component_max


def pet_lesion_from_seed(
    suv: np.ndarray,
    spacing: Sequence[float],
    suvmax: float,
    slice_number: int,
    *,
    slice_from_end: bool = True,
    first_connectivity: int = 18,
    max_iterations: int = 50,
) -> tuple[np.ndarray, PetSeedResult]:
    """Lesion label for a report's seed (``suvmax`` g/ml, ``slice_number`` as the report states it).

    ``suv``: SUVbw volume ``(X, Y, Z)``; ``spacing``: voxel size in mm ``(sx, sy, sz)`` (for V_ml).
    ``slice_from_end=True`` (the reports' convention): k = depth − slice_number, so slice 1 is Z index
    depth − 1; ``False``: k = slice_number − 1. Returns a boolean mask ``(X, Y, Z)`` (all False unless the
    outcome is ``lesion``) and a ``PetSeedResult``.
    """
    volume = np.asarray(suv, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"SUV volume must be 3-D (X, Y, Z), got shape {volume.shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
    first_structure, six = _structure(first_connectivity), _structure(6)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    empty = np.zeros(volume.shape, dtype=bool)
    k = _slice_index(int(slice_number), volume.shape[2], slice_from_end)
    if suvmax < MIN_SUVMAX:
        return empty, PetSeedResult("dropped", f"reported SUVmax {suvmax} < {MIN_SUVMAX}", k)
    if not 0 <= k < volume.shape[2]:
        reason = f"slice {slice_number} maps to Z index {k}, outside 0..{volume.shape[2] - 1}"
        return empty, PetSeedResult("no_seed", reason, k)
    seed, seed_threshold, reason, component_max = _seed(volume, float(suvmax), k)
    if seed is None or component_max is None:
        outcome: Outcome = "dropped" if reason.startswith("matching") else "no_seed"
        return empty, PetSeedResult(outcome, reason, k, seed_threshold=seed_threshold)
    smax = component_max
    anchor = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(seed, volume, -np.inf)), seed.shape))
    mask = seed
    thresholds: list[float] = []
    previous: float | None = None
    reason = "max_iterations"
    for iteration in range(max_iterations):
        bg = _ring_mean(volume, mask)
        if bg is None:
            reason = "label fills the volume: no background ring"
            break
        volume_term = 0.0 if iteration == 0 else 0.078 / (int(mask.sum()) * voxel_ml)
        threshold = (volume_term + 0.617 * bg / smax + 0.316) * smax
        thresholds.append(threshold)
        if threshold / smax > MAX_T_RATIO:
            reason = f"T/SUVmax = {threshold / smax:.3f} > {MAX_T_RATIO}"
            break
        mask = _grow(volume, threshold, anchor, first_structure if iteration == 0 else six)
        if previous is not None and abs(threshold - previous) <= CONVERGENCE * previous:
            reason = "converged"
            break
        previous = threshold
    history = tuple(thresholds)
    if reason not in ("converged", "max_iterations"):
        return empty, PetSeedResult("dropped", reason, k, smax, seed_threshold, history)
    voxels = int(mask.sum())
    return mask, PetSeedResult("lesion", reason, k, smax, seed_threshold, history, voxels, voxels * voxel_ml)


def pet_phantom(
    shape: Sequence[int],
    spacing: Sequence[float],
    spheres: Sequence[tuple[Sequence[float], float, float]],
    background: float = 1.0,
    seed: int = 0,
    *,
    fwhm_mm: float = 6.0,
    noise_sd: float = 0.05,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Synthetic SUV volume ``(X, Y, Z)`` (float32, g/ml) and the true mask of each sphere.

    ``spheres``: ``(centre_xyz_mm, radius_mm, suvmax)`` with the centre in mm from voxel (0, 0, 0)'s
    centre. Each sphere has uniform uptake blurred by a Gaussian point-spread function of ``fwhm_mm``
    (0: no blur), scaled so its peak is exactly ``suvmax``; the background is ``background`` plus Gaussian
    noise of standard deviation ``noise_sd`` (seeded by ``seed``); values inside a sphere never exceed its
    SUVmax and the volume is clipped at 0. A true mask is the voxels whose centre lies within the radius.
    """
    shape3 = tuple(int(n) for n in shape)
    step = np.asarray(spacing, dtype=np.float64)
    if len(shape3) != 3 or step.shape != (3,) or (step <= 0).any():
        raise ValueError("shape and spacing must have three entries (X, Y, Z), spacing positive in mm")
    grid = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape3, step)), indexing="ij")
    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / step
    volume = np.full(shape3, float(background))
    masks, peaks = [], []
    for centre, radius, peak_suv in spheres:
        distance2 = sum((g - float(c)) ** 2 for g, c in zip(grid, centre))
        inside = distance2 <= float(radius) ** 2
        if not inside.any():
            raise ValueError(f"sphere at {tuple(centre)} mm, radius {radius} mm, holds no voxel centre")
        blurred = ndimage.gaussian_filter(inside.astype(np.float64), sigma) if fwhm_mm > 0 else inside * 1.0
        top = np.unravel_index(np.argmax(np.where(inside, blurred, -np.inf)), shape3)
        volume += (float(peak_suv) - background) / blurred[top] * blurred
        masks.append(inside)
        peaks.append((top, float(peak_suv)))
    volume += np.random.default_rng(seed).normal(0.0, noise_sd, shape3)
    for inside, (top, peak_suv) in zip(masks, peaks):
        volume[inside] = np.minimum(volume[inside], peak_suv)
        volume[top] = peak_suv
    return np.clip(volume, 0.0, None).astype(np.float32), masks
