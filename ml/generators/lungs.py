"""Lung segmentation of a chest CT without learned weights: proposals for pre-annotation.

Classic threshold pipeline (after Hu, Hoffman & Reinhardt, IEEE TMI 2001): air-like voxels inside the
body, trachea and main bronchi removed by seeded region growing, left/right separated, holes filled,
lightly smoothed. numpy + SciPy only.

Conventions
-----------
- ``hu``: CT values in Hounsfield units, axes ``(X, Y, Z)`` = (image column, image row, slice) as the
  platform's canonical volumes (:class:`studies.ingest.types.Volume`). Axis 2 is the slice axis (axial
  acquisitions); in-plane operations use axes 0 and 1 only, so thick slices are handled.
- ``spacing``: voxel size in mm per axis ``(sx, sy, sz)``.
- ``affine``: 4x4, voxel index ``(i, j, k)`` -> RAS+ mm. In RAS+ (NIfTI, nibabel) +x points to the
  patient's **Right**, +y Anterior, +z Superior (DICOM's LPS has +x to the patient's Left: RAS x = -LPS x).
  So the patient's left lung is the one with the *smaller* RAS x; for DICOM-derived volumes (affine
  ``[0, 0] < 0``) that is the larger column index X, the right-hand side of a radiological display.
- Volumes are reported in ml (1 ml = 1000 mm^3).

Internally the volume is handled as its transpose ``(Z, Y, X)``: a C-contiguous view of the Fortran-ordered
canonical array, on which ``scipy.ndimage.label`` runs several times faster than on the Fortran order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ml.generators.airways import grow_airway, trachea_seed
from ml.generators.voxels import (
    CONN6,
    PLANE4,
    PLANE8,
    approx_sizes,
    bbox,
    below,
    fill_holes_inplane,
    lut_select,
)


@dataclass(frozen=True)
class LungParams:
    """Thresholds (HU), sizes (mm, mm^2, ml) and smoothing of :func:`lungs_segment`."""

    air_hu: float = -320.0  # lung candidates: HU below this inside the body
    body_hu: float = -500.0  # body: HU above this (largest in-plane component per slice, holes filled)
    airway_hu: float = -950.0  # airway growing starts below this (in-plane 3x3 mean), rises (25 HU steps) ...
    airway_hu_max: float = -750.0  # ... up to this until the tree leaks, or falls (when it leaks at once) ...
    airway_hu_floor: float = -1010.0  # ... down to this
    airway_max_ml: float = 150.0  # an airway tree larger than this has leaked into the lungs
    airway_leak_ml: float = 1.0  # leaks rejected beyond the previous threshold's: the threshold stops rising
    airway_box_mm: float = 90.0  # airways grown within this distance (X and Y) of the trachea seed
    airway_dilate_mm: float = 2.0  # the airway wall (partial volume) removed around the grown lumen
    airway_generations: int = 2  # segments grown: trachea (0), main (1) and lobar (2) bronchi
    airway_explosion: float = 7.0  # a wavefront this many times a segment's smallest one is a leak ...
    airway_child_factor: float = 3.0  # ... and so is a child's this many times its parent's smallest
    airway_settle_mm: float = 3.0  # a segment's smallest wavefront is counted after this much growth
    airway_pending_mm: float = 5.0  # the last part of a leaking segment rejected with the leak
    airway_min_segment_mm: float = 5.0  # a bronchus grows this far before it may divide ...
    airway_trachea_mm: float = 20.0  # ... the trachea this far
    airway_min_branch_mm3: float = 6.0  # smaller wavefront pieces are no branch of their own
    airway_front_mm: float = 5.0  # the wavefront's depth where it is split into branches
    trachea_search_mm: float = 60.0  # trachea seed looked for in the top slices over this height
    trachea_area_mm2: tuple[float, float] = (30.0, 700.0)  # cross-section area of a trachea seed
    trachea_max_offset_mm: float = 40.0  # seed centroid at most this far from the body's centre (x)
    trachea_min_mm: float = 40.0  # a seed continues as a tube of trachea-like area this far down ...
    trachea_track_mm: float = 80.0  # ... the longest tube, counted up to this length, is the trachea
    trachea_gap_mm: float = 5.0  # a tube followed across gaps this long (noise, partial volume)
    min_lung_ml: float = 30.0  # smaller components are not lungs
    second_lung_fraction: float = 0.2  # a second component counts as a lung at this fraction of the first
    min_island_mm2: float = 30.0  # in-plane pieces smaller than this are dropped (gas bubbles, noise)
    smooth_mm: float = 1.5  # radius of the in-plane closing then opening (0: none)


@dataclass
class LungMasks:
    """Result: boolean masks of the input's shape ``(X, Y, Z)`` (Fortran-ordered), volumes in ml."""

    left: np.ndarray
    right: np.ndarray
    left_ml: float
    right_ml: float
    airway: np.ndarray | None = None  # the removed trachea and main bronchi (None when not found)
    warnings: list[str] = field(default_factory=list)

    @property
    def total_ml(self) -> float:
        return self.left_ml + self.right_ml


def _body_mask(v: np.ndarray, body_hu: float, sp: tuple[float, float, float]) -> np.ndarray:
    """Per slice: the largest in-plane component above ``body_hu``, holes filled (the table stays out).

    Found on every 2nd row and column where pixels are under 1 mm (the body's outline needs no more).
    """
    step = 2 if min(sp[1], sp[2]) < 1.0 else 1
    coarse = v[:, ::step, ::step]
    labels, n = ndi.label(~below(coarse, body_hu + 1e-3), structure=PLANE8)  # HU > body_hu
    if n == 0:
        return np.zeros(v.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    zs = np.array([sl[0].start for sl in ndi.find_objects(labels)])
    order = np.lexsort((sizes, zs))  # by slice, then size: the last of each slice is its largest
    last = np.r_[zs[order][1:] != zs[order][:-1], True]
    body = fill_holes_inplane(lut_select(labels, n, order[last] + 1))
    if step > 1:
        body = body.repeat(step, axis=1).repeat(step, axis=2)[:, : v.shape[1], : v.shape[2]]
    return body


def _keep_lungs(mask: np.ndarray, voxel_ml: float, p: LungParams) -> list[np.ndarray]:
    """The largest 3D component and, when large enough, the second one (largest first)."""
    labels, n = ndi.label(mask, structure=CONN6)
    if n == 0:
        return []
    sizes = approx_sizes(labels, n)
    order = np.argsort(sizes)[::-1][:2]
    keep = [order[0]]
    if len(order) > 1 and sizes[order[1]] >= p.second_lung_fraction * sizes[order[0]]:
        keep.append(order[1])
    return [labels == i + 1 for i in keep if sizes[i] * voxel_ml >= p.min_lung_ml]


def _split_joined(comp: np.ndarray, v: np.ndarray, max_erosions: int = 40) -> list[np.ndarray]:
    """Split one component holding both lungs: erode in-plane until two large parts, then flood back.

    The two parts grow back by marker watershed (``watershed_ift``) on the HU values, so the brighter
    pleura of the anterior/posterior junction lines is the ridge between them. Returns one or two masks.
    """
    box = bbox(comp)
    assert box is not None
    sub = comp[box]
    eroded = sub
    for _ in range(max_erosions):
        eroded = ndi.binary_erosion(eroded, structure=PLANE4)
        labels, n = ndi.label(eroded, structure=CONN6)
        if n == 0:
            break
        if n < 2:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        order = np.argsort(sizes)[::-1]
        if sizes[order[1]] < 0.1 * sizes[order[0]]:
            continue
        markers = np.zeros(sub.shape, dtype=np.int16)
        markers[labels == order[0] + 1] = 1
        markers[labels == order[1] + 1] = 2
        cost = np.clip((v[box].astype(np.float32) + 1024.0) / 8.0, 0, 254).astype(np.uint8)
        cost[~sub] = 255
        flooded = ndi.watershed_ift(cost, markers, structure=CONN6)
        parts = []
        for value in (1, 2):
            part = np.zeros(comp.shape, dtype=bool)
            part[box] = (flooded == value) & sub
            parts.append(part)
        return parts
    return [comp]


def _centroid_ras_x(mask: np.ndarray, affine: np.ndarray) -> float:
    """RAS x (mm) of the centroid of a ``(Z, Y, X)`` mask, ``affine`` indexing ``(X, Y, Z)``."""
    count = float(mask.sum())
    ijk = [
        float((mask.sum(axis=tuple(a for a in range(3) if a != ax)) * np.arange(n)).sum()) / count
        for ax, n in ((2, mask.shape[2]), (1, mask.shape[1]), (0, mask.shape[0]))
    ]
    return float((affine @ np.array([*ijk, 1.0]))[0])


def _clean(mask: np.ndarray, sp: tuple[float, float, float], p: LungParams) -> np.ndarray:
    """Fill in-plane holes (vessels), in-plane closing and opening, drop small in-plane islands.

    Works inside the ``(Z, Y, X)`` mask's bounding box (padded in Y and X).
    """
    r = int(round(p.smooth_mm / min(sp[1], sp[2]))) if p.smooth_mm > 0 else 0
    box = bbox(mask, pad=r + 2)
    if box is None:
        return mask
    sub = fill_holes_inplane(mask[box])
    if r > 0:
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = (xx**2 + yy**2 <= r * r)[None]
        sub = ndi.binary_closing(sub, structure=disk)
        sub = fill_holes_inplane(ndi.binary_opening(sub, structure=disk))
    labels, n = ndi.label(sub, structure=PLANE8)
    if n:
        min_px = p.min_island_mm2 / (sp[1] * sp[2])
        sub = lut_select(labels, n, np.flatnonzero(np.bincount(labels.ravel()) >= min_px))
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = sub
    return out


def lungs_segment(
    hu: np.ndarray,
    *,
    spacing: tuple[float, float, float],
    affine: np.ndarray,
    params: LungParams | None = None,
) -> LungMasks:
    """Segment the left and right lungs of a chest CT.

    ``hu`` ``(X, Y, Z)`` in HU, ``spacing`` ``(sx, sy, sz)`` mm, ``affine`` voxel -> RAS+ mm (see the
    module docstring). Left and right are told by the RAS x of each lung's centroid (smaller x = patient
    left). The masks exclude the trachea and main bronchi, include vessels, nodules and airways enclosed by
    lung in a slice (holes filled per slice) and never overlap. Problems (one lung only, no trachea
    found, ...) are listed in ``warnings``.
    """
    p = params or LungParams()
    hu = np.asarray(hu)
    affine = np.asarray(affine, dtype=np.float64)
    if hu.ndim != 3:
        raise ValueError(f"expected a 3D volume (X, Y, Z), got shape {hu.shape}")
    v = np.ascontiguousarray(hu.T)  # (Z, Y, X); a view for the canonical Fortran-ordered arrays
    sp = (float(spacing[2]), float(spacing[1]), float(spacing[0]))
    voxel_ml = sp[0] * sp[1] * sp[2] / 1000.0
    warnings: list[str] = []
    if abs(affine[2, 2]) < 0.5 * np.linalg.norm(affine[:3, 2]):
        warnings.append("slice axis is not axial: lung segmentation expects axial slices")

    body = _body_mask(v, p.body_hu, sp)
    cand = below(v, p.air_hu) & body
    seed = trachea_seed(cand, body, sp, bool(affine[2, 2] >= 0), p)
    del body
    airway = None
    if seed is None:
        warnings.append("no trachea found in the top slices: airways were not removed")
    else:
        airway = grow_airway(v, cand, seed, sp, bool(affine[2, 2] >= 0), p, warnings)
    if airway is not None:
        iters = max(1, int(round(p.airway_dilate_mm / min(sp[1], sp[2]))))
        box = bbox(airway, pad=iters)
        assert box is not None
        cand[box] &= ~ndi.binary_dilation(airway[box], structure=PLANE8, iterations=iters)

    comps = _keep_lungs(cand, voxel_ml, p)
    del cand
    if len(comps) == 1:
        comps = _split_joined(comps[0], v)
    comps = [c for c in (_clean(c, sp, p) for c in comps) if c.any()]
    empty = np.zeros(v.shape, dtype=bool)
    if not comps:
        warnings.append("no lung found")
        left, right = empty, empty.copy()
    elif len(comps) == 2:
        xs = [_centroid_ras_x(c, affine) for c in comps]
        left, right = (comps[0], comps[1]) if xs[0] < xs[1] else (comps[1], comps[0])
        right &= ~left  # smoothing may have made them touch
    else:
        warnings.append("only one lung found")
        centre_x = float((affine @ np.r_[(np.array(hu.shape) - 1) / 2.0, 1.0])[0])
        single = comps[0]
        left, right = (single, empty) if _centroid_ras_x(single, affine) < centre_x else (empty, single)
    left_ml, right_ml = float(left.sum() * voxel_ml), float(right.sum() * voxel_ml)
    for side, ml in (("left", left_ml), ("right", right_ml)):
        if 0 < ml < 0.25 * (left_ml + right_ml):
            warnings.append(f"{side} lung is small ({ml:.0f} ml of {left_ml + right_ml:.0f} ml)")
    return LungMasks(left.T, right.T, left_ml, right_ml, None if airway is None else airway.T, warnings)
