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

# 3x3x3 structures on (Z, Y, X): in-plane (no link across slices) 4- and 8-connectivity; 3D 6-connectivity.
_PLANE4 = np.zeros((3, 3, 3), dtype=bool)
_PLANE4[1] = ndi.generate_binary_structure(2, 1)
_PLANE8 = np.zeros((3, 3, 3), dtype=bool)
_PLANE8[1] = True
_CONN6 = ndi.generate_binary_structure(3, 1)

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class LungParams:
    """Thresholds (HU), sizes (mm, mm^2, ml) and smoothing of :func:`lungs_segment`."""

    air_hu: float = -320.0  # lung candidates: HU below this inside the body
    body_hu: float = -500.0  # body: HU above this (largest in-plane component per slice, holes filled)
    airway_hu: float = -950.0  # airway region growing starts below this, rises (20 HU steps) ...
    airway_hu_max: float = -750.0  # ... up to this until it leaks, or falls (when it leaks at once) ...
    airway_hu_floor: float = -1010.0  # ... down to this
    airway_max_ml: float = 150.0  # airway growth larger than this has leaked into the lungs
    airway_box_mm: float = 90.0  # airways grown within this distance (X and Y) of the trachea seed
    airway_dilate_mm: float = 2.0  # the airway wall (partial volume) removed around the grown lumen
    trachea_search_mm: float = 60.0  # trachea seed looked for in the top slices over this height
    trachea_area_mm2: tuple[float, float] = (30.0, 700.0)  # cross-section area of a trachea seed
    trachea_max_offset_mm: float = 40.0  # seed centroid at most this far from the body's centre (x)
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


def _lut_select(labels: np.ndarray, n: int, chosen: np.ndarray) -> np.ndarray:
    """Boolean mask of the voxels whose label is in ``chosen`` (one lookup-table pass)."""
    lut = np.zeros(n + 1, dtype=bool)
    lut[np.asarray(chosen, dtype=np.int64)] = True
    lut[0] = False
    return lut[labels]


def _approx_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxel counts of labels ``1..n`` estimated on every 2nd row and column (x4).

    ``np.bincount`` over a whole volume is slow when one label fills most of it (every voxel bumps the
    same counter); a quarter of the voxels is enough to rank components and check sizes.
    """
    return 4 * np.bincount(labels[:, ::2, ::2].ravel(), minlength=n + 1)[1 : n + 1]


def _fill_holes_inplane(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice in a ``(Z, Y, X)`` mask: background not 4-connected to the Y/X border."""
    labels, n = ndi.label(~mask, structure=_PLANE4)
    faces = (labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1])
    border = np.unique(np.concatenate([f.ravel() for f in faces]))
    return ~_lut_select(labels, n, border)


def _below(v: np.ndarray, threshold: float) -> np.ndarray:
    """``v < threshold`` without casting an integer volume to float64 (``v < ceil(t)`` is the same)."""
    if v.dtype.kind in "iu":
        info = np.iinfo(v.dtype)
        return v < v.dtype.type(np.clip(np.ceil(threshold), info.min, info.max))
    return v < threshold


def _bbox(mask: np.ndarray, pad: int = 0) -> Box | None:
    """Bounding box of a ``(Z, Y, X)`` mask, padded in Y and X only; None when empty."""
    out = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        if hit.size == 0:
            return None
        extra = pad if ax else 0
        out.append(slice(max(0, hit[0] - extra), min(mask.shape[ax], hit[-1] + 1 + extra)))
    return out[0], out[1], out[2]


def _body_mask(v: np.ndarray, body_hu: float, sp: tuple[float, float, float]) -> np.ndarray:
    """Per slice: the largest in-plane component above ``body_hu``, holes filled (the table stays out).

    Found on every 2nd row and column where pixels are under 1 mm (the body's outline needs no more).
    """
    step = 2 if min(sp[1], sp[2]) < 1.0 else 1
    coarse = v[:, ::step, ::step]
    labels, n = ndi.label(~_below(coarse, body_hu + 1e-3), structure=_PLANE8)  # HU > body_hu
    if n == 0:
        return np.zeros(v.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    zs = np.array([sl[0].start for sl in ndi.find_objects(labels)])
    order = np.lexsort((sizes, zs))  # by slice, then size: the last of each slice is its largest
    last = np.r_[zs[order][1:] != zs[order][:-1], True]
    body = _fill_holes_inplane(_lut_select(labels, n, order[last] + 1))
    if step > 1:
        body = body.repeat(step, axis=1).repeat(step, axis=2)[:, : v.shape[1], : v.shape[2]]
    return body


def _trachea_seed(
    cand: np.ndarray, body: np.ndarray, sp: tuple[float, float, float], superior_high: bool, p: LungParams
) -> np.ndarray | None:
    """The trachea's cross-section (a ``(Z, Y, X)`` mask, one slice) in the top slices, or None.

    The trachea is a small, compact, air-like in-plane component close to the body's left-right centre;
    the highest slice holding one is used. ``sp`` is the spacing in (Z, Y, X) order, mm.
    """
    nz = cand.shape[0]
    n_search = min(nz, max(1, int(round(p.trachea_search_mm / sp[0]))))
    ks = range(nz - 1, nz - 1 - n_search, -1) if superior_high else range(n_search)
    pixel_mm2 = sp[1] * sp[2]
    lo, hi = p.trachea_area_mm2
    for k in ks:
        if not body[k].any():
            continue
        labels, n = ndi.label(cand[k])
        body_cx = float(np.nonzero(body[k])[1].mean())
        best, best_off = 0, np.inf
        for idx, sl in enumerate(ndi.find_objects(labels), start=1):
            piece = labels[sl] == idx
            count = int(piece.sum())
            box = (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start)
            if not lo <= count * pixel_mm2 <= hi or count < 0.45 * box:  # not trachea-sized or not compact
                continue
            off = abs(sl[1].start + float(np.nonzero(piece)[1].mean()) - body_cx) * sp[2]
            if off <= p.trachea_max_offset_mm and off < best_off:
                best, best_off = idx, off
        if best:
            seed = np.zeros(cand.shape, dtype=bool)
            seed[k] = labels == best
            return seed
    return None


def _grow_airway(
    v: np.ndarray,
    cand: np.ndarray,
    seed: np.ndarray,
    sp: tuple[float, float, float],
    p: LungParams,
    warnings: list[str],
) -> np.ndarray | None:
    """The airway tree 6-connected to ``seed`` below an adaptive threshold, within ``airway_box_mm``.

    The threshold starts at ``airway_hu`` and rises in 20 HU steps (thick slices raise the bronchi's HU
    by partial volume) until the tree leaks into the lungs: more than ``airway_max_ml`` or more than
    twice the previous step's volume (+ 5 ml); the last tree before the leak is kept. Where the first
    step leaks already, it falls in steps down to ``airway_hu_floor``.
    """
    voxel_ml = sp[0] * sp[1] * sp[2] / 1000.0
    centre = np.argwhere(seed).mean(axis=0)
    box = (slice(None),) + tuple(
        slice(
            max(0, int(centre[ax] - p.airway_box_mm / sp[ax])), int(centre[ax] + p.airway_box_mm / sp[ax]) + 1
        )
        for ax in (1, 2)
    )
    sub_v, sub_cand, sub_seed = v[box], cand[box], seed[box]
    seed_idx = tuple(np.argwhere(sub_seed)[0])

    def grow(threshold: float) -> tuple[np.ndarray, float]:
        labels, _ = ndi.label((sub_cand & _below(sub_v, threshold)) | sub_seed, structure=_CONN6)
        tree = labels == labels[seed_idx]
        return tree, float(tree.sum() * voxel_ml)

    best: np.ndarray | None = None
    best_ml, threshold = 0.0, p.airway_hu
    while threshold <= p.airway_hu_max:
        tree, ml = grow(threshold)
        if ml > p.airway_max_ml or (best is not None and ml > 2.0 * best_ml + 5.0):
            break
        best, best_ml = tree, ml
        threshold += 20.0
    threshold = p.airway_hu - 20.0
    while best is None and threshold >= p.airway_hu_floor:
        tree, ml = grow(threshold)
        if ml <= p.airway_max_ml:
            best = tree
        threshold -= 20.0
    if best is None:
        warnings.append("airway region growing leaked into the lungs: trachea and bronchi were not removed")
        return None
    airway = np.zeros(v.shape, dtype=bool)
    airway[box] = best
    return airway


def _keep_lungs(mask: np.ndarray, voxel_ml: float, p: LungParams) -> list[np.ndarray]:
    """The largest 3D component and, when large enough, the second one (largest first)."""
    labels, n = ndi.label(mask, structure=_CONN6)
    if n == 0:
        return []
    sizes = _approx_sizes(labels, n)
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
    box = _bbox(comp)
    assert box is not None
    sub = comp[box]
    eroded = sub
    for _ in range(max_erosions):
        eroded = ndi.binary_erosion(eroded, structure=_PLANE4)
        labels, n = ndi.label(eroded, structure=_CONN6)
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
        flooded = ndi.watershed_ift(cost, markers, structure=_CONN6)
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
    box = _bbox(mask, pad=r + 2)
    if box is None:
        return mask
    sub = _fill_holes_inplane(mask[box])
    if r > 0:
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = (xx**2 + yy**2 <= r * r)[None]
        sub = ndi.binary_closing(sub, structure=disk)
        sub = _fill_holes_inplane(ndi.binary_opening(sub, structure=disk))
    labels, n = ndi.label(sub, structure=_PLANE8)
    if n:
        min_px = p.min_island_mm2 / (sp[1] * sp[2])
        sub = _lut_select(labels, n, np.flatnonzero(np.bincount(labels.ravel()) >= min_px))
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
    cand = _below(v, p.air_hu) & body
    seed = _trachea_seed(cand, body, sp, bool(affine[2, 2] >= 0), p)
    del body
    airway = None
    if seed is None:
        warnings.append("no trachea found in the top slices: airways were not removed")
    else:
        airway = _grow_airway(v, cand, seed, sp, p, warnings)
    if airway is not None:
        iters = max(1, int(round(p.airway_dilate_mm / min(sp[1], sp[2]))))
        box = _bbox(airway, pad=iters)
        assert box is not None
        cand[box] &= ~ndi.binary_dilation(airway[box], structure=_PLANE8, iterations=iters)

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
