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
_CONN26 = np.ones((3, 3, 3), dtype=bool)

Box = tuple[slice, slice, slice]


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
    """The trachea's cross-section (a ``(Z, Y, X)`` mask, one slice) at the top of the trachea, or None.

    Candidates are small, compact, air-like in-plane components close to the body's left-right centre
    (``trachea_area_mm2``, ``trachea_max_offset_mm``) in the top ``trachea_search_mm``. Each is followed
    slice by slice towards the feet while the overlapping air component keeps a trachea-like area (half to
    twice the previous slice's, within ``trachea_area_mm2``): a lung apex grows too fast, air in the
    oesophagus ends within a few centimetres, the trachea runs on to the carina. The highest slice holding
    a tube of at least ``trachea_min_mm`` gives the seed: its longest tube (counted up to
    ``trachea_track_mm``), the one nearest the centre among equals. ``sp`` is the spacing in (Z, Y, X)
    order, mm.
    """
    nz = cand.shape[0]
    n_search = min(nz, max(1, int(round(p.trachea_search_mm / sp[0]))))
    n_track = max(1, int(np.ceil(p.trachea_track_mm / sp[0])))
    n_min = max(1, int(np.ceil(p.trachea_min_mm / sp[0])))
    n_gap = int(p.trachea_gap_mm // sp[0])
    span = min(nz, n_search + n_track + 1)
    # in-plane components of the top slices, in order from the top (index 0) down
    top = cand[nz - span :][::-1] if superior_high else cand[:span]
    labels, _ = ndi.label(top, structure=_PLANE4)
    sizes = np.bincount(labels.ravel())
    pixel_mm2 = sp[1] * sp[2]
    lo, hi = p.trachea_area_mm2
    tracked = np.zeros(sizes.size, dtype=bool)  # labels already part of a followed tube
    best: tuple[int, float, int] | None = None  # (-length, offset, label)
    for k in range(min(n_search, span)):
        k_body = nz - 1 - k if superior_high else k
        if not body[k_body].any():
            continue
        body_cx = float(np.nonzero(body[k_body])[1].mean())
        for lab in np.unique(labels[k]):
            if lab == 0 or tracked[lab]:
                continue
            if not lo <= sizes[lab] * pixel_mm2 <= hi:
                continue
            ys, xs = np.nonzero(labels[k] == lab)
            box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            off = abs(float(xs.mean()) - body_cx) * sp[2]
            if sizes[lab] < 0.45 * box or off > p.trachea_max_offset_mm:  # not compact, not central
                continue
            length, chain = _follow_tube(labels, sizes, k, lab, n_track, n_gap, p, pixel_mm2)
            tracked[chain] = True
            if length >= n_min and (best is None or (-length, off) < best[:2]):
                best = (-length, off, int(lab))
        if best is not None:
            break  # the highest slice holding a tube
    if best is None:
        return None
    k = int(np.flatnonzero((labels == best[2]).any(axis=(1, 2)))[0])
    seed = np.zeros(cand.shape, dtype=bool)
    seed[nz - 1 - k if superior_high else k] = labels[k] == best[2]
    return seed


def _follow_tube(
    labels: np.ndarray,
    sizes: np.ndarray,
    k: int,
    lab: int,
    n_track: int,
    n_gap: int,
    p: LungParams,
    px: float,
) -> tuple[int, list[int]]:
    """How many slices below slice ``k`` (index order: from the top down) the in-plane component ``lab``
    continues as a tube of trachea-like area (up to ``n_track``), and the labels of the tube. Up to
    ``n_gap`` slices in a row may miss it (noise joins it to a neighbour, partial volume hides it); the
    last section found is then looked for further down. ``px`` is a pixel's area in mm^2."""
    lo, hi = p.trachea_area_mm2
    chain, last, missed = [lab], lab, 0
    section = labels[k] == lab
    for step in range(1, n_track + 1):
        if k + step >= labels.shape[0]:
            return step - 1 - missed, chain
        below = labels[k + step][section]
        hit = np.unique(below[below > 0])
        nxt = int(hit[np.argmax(sizes[hit])]) if hit.size else 0
        if nxt and 0.5 * sizes[last] <= sizes[nxt] <= 2.0 * sizes[last] and lo <= sizes[nxt] * px <= hi:
            chain.append(nxt)
            last, missed = nxt, 0
            section = labels[k + step] == nxt
            continue
        missed += 1
        if missed > n_gap:
            return step - missed, chain
    return n_track - missed, chain


@dataclass
class _Branch:
    """One airway segment while the tree grows: its shells (one per wave) and what they may not exceed."""

    generation: int
    cap: float  # a larger shell (voxels) is an explosion: a child is never much wider than its parent
    min_bifurcate: int  # waves grown before the segment may divide
    shells: list[np.ndarray] = field(default_factory=list)
    min_size: float = np.inf  # smallest shell once settled
    state: str = "growing"  # growing, done, exploded
    keep: int = 0  # shells kept of an exploded segment


class _AirwayGrower:
    """Wavefront region growing of the airway tree with explosion control, in a padded ``(Z, Y, X)`` box.

    After Mori et al. (1996) and Tschirren et al. (2005), as the Pulmonary Toolkit's airway growing does: the
    region grows from the trachea seed in waves of about ``wave_mm`` mm (in-plane and across-slice steps
    balanced for the voxel size, so a shell's voxel count is about the lumen's cross-section whatever the
    direction). Each segment's newest shell is split into 26-connected components; two or more large ones
    make a bifurcation and child segments (one airway generation deeper; segments of ``generations`` stop
    there). A shell larger than ``explosion`` times the segment's smallest settled shell, or than
    ``child_factor`` times its parent's, is an explosion into the parenchyma: the segment stops and its last
    ``pending_mm`` are rejected. Rejected voxels stay blocked, so no other segment grows into a leak.
    """

    def __init__(self, free: np.ndarray, sp: tuple[float, float, float], p: LungParams):
        self.free = free  # padded, C-ordered: True where the airway may grow
        nzp, nyp, nxp = free.shape
        self.flat = free.reshape(-1)
        wave = max(sp)
        n_xy = max(1, int(round(wave / min(sp[1], sp[2]))))
        n_z = max(1, int(round(wave / sp[0])))
        self.n_sub, self.n_z = max(n_xy, n_z), n_z
        self.wave_mm = wave
        plane = np.array([1, -1, nxp, -nxp], dtype=np.int64)
        self.off_all = np.r_[plane, nxp * nyp, -nxp * nyp]
        self.off_plane = plane
        voxel_mm3 = sp[0] * sp[1] * sp[2]
        self.min_points = max(3, int(round(p.airway_min_branch_mm3 / voxel_mm3)))
        self.settle = max(1, int(np.ceil(p.airway_settle_mm / wave)))
        self.pending = max(1, int(np.ceil(p.airway_pending_mm / wave)))
        self.thick = max(1, int(np.ceil(p.airway_front_mm / wave)))
        self.child_bifurcate = max(2, int(np.ceil(p.airway_min_segment_mm / wave)))
        self.p = p
        self.branches: list[_Branch] = []
        self.waves = 0

    def _pieces(self, shell: np.ndarray, behind: list[np.ndarray]) -> list[np.ndarray]:
        """``shell`` (flat, sorted) split by the 26-connected components of the thick wavefront: ``shell``
        with the shells ``behind`` it (noise in the lumen does not divide a thick front). Largest first."""
        idx = np.concatenate([shell, *behind]) if behind else shell
        zyx = np.unravel_index(idx, self.free.shape)
        lo = [int(c.min()) for c in zyx]
        local = tuple(c - o for c, o in zip(zyx, lo, strict=True))
        dense = np.zeros([int(c.max()) + 1 for c in local], dtype=bool)
        dense[local] = True
        labels, n = ndi.label(dense, structure=_CONN26)
        if n == 1:
            return [shell]
        of_shell = labels[tuple(c[: shell.size] for c in local)]
        parts = [shell[of_shell == i] for i in np.unique(of_shell)]
        return sorted(parts, key=len, reverse=True)

    def _wave(self, front: np.ndarray, front_br: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Voxels one wave further than ``front`` and the branch each comes from; marks them used."""
        got_idx, got_br = [], []
        src, src_br = front, front_br
        for sub in range(self.n_sub):
            offs = self.off_all if sub < self.n_z else self.off_plane
            nb = (src[:, None] + offs[None, :]).ravel()
            nb_br = np.repeat(src_br, offs.size)
            ok = self.flat[nb]
            nb, nb_br = nb[ok], nb_br[ok]
            if nb.size == 0:
                break
            nb, first = np.unique(nb, return_index=True)
            nb_br = nb_br[first]
            self.flat[nb] = False
            got_idx.append(nb)
            got_br.append(nb_br)
            src, src_br = nb, nb_br
        if not got_idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        idx, br = np.concatenate(got_idx), np.concatenate(got_br)
        order = np.argsort(idx)
        return idx[order], br[order]

    def grow(self, seed_idx: np.ndarray, max_waves: int) -> tuple[np.ndarray, np.ndarray]:
        """Grow from ``seed_idx`` (flat, padded box); returns the accepted and the rejected voxels (flat)."""
        p = self.p
        self.flat[seed_idx] = False
        root = _Branch(
            generation=0, cap=np.inf, min_bifurcate=max(2, int(np.ceil(p.airway_trachea_mm / self.wave_mm)))
        )
        root.shells.append(np.sort(seed_idx))
        self.branches = [root]
        front, front_br = root.shells[0], np.zeros(seed_idx.size, dtype=np.int64)
        for self.waves in range(1, max_waves + 1):
            idx, br = self._wave(front, front_br)
            if idx.size == 0:
                break
            nxt_idx, nxt_br = [], []
            for b in np.unique(br):
                shell = idx[br == b]
                for child, part in self._advance(int(b), shell):
                    nxt_idx.append(part)
                    nxt_br.append(np.full(part.size, child, dtype=np.int64))
            if not nxt_idx:
                break
            front, front_br = np.concatenate(nxt_idx), np.concatenate(nxt_br)
        accepted, rejected = [], []
        for b in self.branches:
            keep = b.keep if b.state == "exploded" else len(b.shells)
            accepted.extend(b.shells[: max(keep, 0)])
            rejected.extend(b.shells[max(keep, 0) :])
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
        return cat(accepted), cat(rejected)

    def _advance(self, b: int, shell: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add ``shell`` to branch ``b``: continue it, divide it into children, or stop it (explosion)."""
        br = self.branches[b]
        if len(br.shells) >= br.min_bifurcate and shell.size >= 2 * self.min_points:
            parts = self._pieces(shell, br.shells[-self.thick :])
            big = [c for c in parts if c.size >= max(self.min_points, 0.1 * parts[0].size)]
            if len(big) >= 2:
                br.state = "done"
                if br.generation >= self.p.airway_generations:
                    return []
                small = [c for c in parts if c.size < max(self.min_points, 0.1 * parts[0].size)]
                big[0] = np.sort(np.concatenate([big[0], *small]))
                cap = self.p.airway_child_factor * min(br.min_size, max(len(s) for s in br.shells))
                out = []
                for part in big:
                    child = _Branch(generation=br.generation + 1, cap=cap, min_bifurcate=self.child_bifurcate)
                    child.shells.append(part)
                    self.branches.append(child)
                    out.append((len(self.branches) - 1, part))
                return out
        size = float(shell.size)
        grown = len(br.shells)
        floor = max(br.min_size, self.min_points)
        if size > br.cap or (grown > self.settle and size > self.p.airway_explosion * floor):
            br.state = "exploded"
            br.shells.append(shell)
            # the leak began after the last shell of about the segment's width
            normal = [i for i, s in enumerate(br.shells) if len(s) <= 2.0 * floor]
            br.keep = min(len(br.shells) - self.pending, normal[-1] + 1 if normal else 0)
            return []
        if grown >= self.settle:  # a one-wave narrowing (noise in the lumen) is not the segment's width
            br.min_size = min(br.min_size, float(np.median([len(s) for s in br.shells[-2:]] + [size])))
        br.shells.append(shell)
        return [(b, shell)]


def _grow_airway(
    v: np.ndarray,
    cand: np.ndarray,
    seed: np.ndarray,
    sp: tuple[float, float, float],
    superior_high: bool,
    p: LungParams,
    warnings: list[str],
) -> np.ndarray | None:
    """The trachea, main and lobar bronchi grown from ``seed`` with explosion control, or None.

    The lumen is a lung candidate below a threshold; where pixels are under 1.2 mm its in-plane 3x3 mean is
    compared (thin-slice noise would break the lumen up) and the tree then regains its one-pixel rim from
    the unsmoothed values. :class:`_AirwayGrower` grows the tree within ``airway_box_mm`` (X and Y) of the
    seed and only from the seed's slice towards the feet.

    The threshold starts at ``airway_hu`` and rises in 25 HU steps up to ``airway_hu_max`` (partial
    volume raises the bronchi's HU in thick slices) while a step neither makes the trachea or a main
    bronchus explode, nor has explosion control reject more than ``airway_leak_ml`` (or 5 % of the tree)
    beyond the previous step, nor doubles the tree (+ 5 ml), nor exceeds ``airway_max_ml``: the highest
    threshold before the tree leaks, after Kiraly et al. (2002), with leaks counted by explosion control.
    A first step whose tree exceeds ``airway_max_ml`` lowers the threshold down to ``airway_hu_floor``.
    """
    voxel_ml = sp[0] * sp[1] * sp[2] / 1000.0
    centre = np.argwhere(seed).mean(axis=0)
    k_seed = int(round(centre[0]))
    z_box = slice(0, k_seed + 1) if superior_high else slice(k_seed, v.shape[0])
    box = (z_box,) + tuple(
        slice(
            max(0, int(centre[ax] - p.airway_box_mm / sp[ax])), int(centre[ax] + p.airway_box_mm / sp[ax]) + 1
        )
        for ax in (1, 2)
    )
    raw_v, sub_cand = v[box], cand[box]
    smooth = min(sp[1], sp[2]) < 1.2
    sub_v = ndi.uniform_filter(raw_v.astype(np.float32), size=(1, 3, 3)) if smooth else raw_v
    padded = tuple(n + 2 for n in sub_cand.shape)
    seed_idx = np.ravel_multi_index(tuple((np.argwhere(seed[box]) + 1).T), padded)
    max_waves = int(np.ceil(4 * (sub_cand.shape[0] * sp[0] + 2 * p.airway_box_mm) / max(sp)))

    def grow(threshold: float) -> tuple[np.ndarray, float, float, bool]:
        free = np.zeros(padded, dtype=bool)
        free[1:-1, 1:-1, 1:-1] = sub_cand & _below(sub_v, threshold)
        grower = _AirwayGrower(free, sp, p)
        accepted, rejected = grower.grow(seed_idx, max_waves)
        tree = np.zeros(padded, dtype=bool)
        tree.reshape(-1)[accepted] = True
        trunk_leak = any(b.state == "exploded" and b.generation <= 1 for b in grower.branches)
        return tree[1:-1, 1:-1, 1:-1], accepted.size * voxel_ml, rejected.size * voxel_ml, trunk_leak

    best: np.ndarray | None = None
    best_ml, best_rejected, best_leak, best_threshold = 0.0, 0.0, False, p.airway_hu
    threshold = p.airway_hu
    while threshold <= p.airway_hu_max:
        tree, ml, rejected_ml, trunk_leak = grow(threshold)
        if ml > p.airway_max_ml:
            break
        if best is not None and (
            ml > 2.0 * best_ml + 5.0
            or (not best_leak and trunk_leak)  # a first step whose trunk leaked is no reference
            or (not best_leak and rejected_ml - best_rejected > max(p.airway_leak_ml, 0.05 * best_ml))
        ):
            break
        best, best_ml, best_rejected, best_leak, best_threshold = tree, ml, rejected_ml, trunk_leak, threshold
        threshold += 25.0
    threshold = p.airway_hu - 25.0
    while best is None and threshold >= p.airway_hu_floor:
        tree, ml, _, _ = grow(threshold)
        if ml <= p.airway_max_ml:
            best, best_threshold = tree, threshold
        threshold -= 25.0
    if best is None or not best.any():
        warnings.append("airway region growing leaked into the lungs: trachea and bronchi were not removed")
        return None
    tbox = _bbox(best, pad=2)
    assert tbox is not None
    tree = best[tbox]
    if smooth:  # the rim the 3x3 mean took off the lumen, from the unsmoothed values
        tree |= (
            ndi.binary_dilation(tree, structure=_PLANE8)
            & sub_cand[tbox]
            & _below(raw_v[tbox], best_threshold)
        )
    best[tbox] = _fill_holes_inplane(tree)
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
        airway = _grow_airway(v, cand, seed, sp, bool(affine[2, 2] >= 0), p, warnings)
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
