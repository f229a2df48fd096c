"""Airway removal of the lungs generator (``ml.generators.lungs``): the trachea found in the upper slices,
then the airway tree grown by wavefronts with explosion control.

The trachea is the top of the longest trachea-like tube (oesophageal air and lung apices refused); the
tree grows segment by segment (trachea, main and lobar bronchi), a wavefront that explodes (leaks into the
lung) is rejected back to its onset, and the threshold rises until explosion control rejects leaks (after
the region-growing methods of Hu, Hoffman & Reinhardt 2001 and of airway-tree segmentation with leakage
control). Volumes are ``(Z, Y, X)`` as in ``ml.generators.voxels``; parameters are ``LungParams``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from ml.generators.voxels import CONN26, PLANE4, PLANE8, bbox, below, fill_holes_inplane

if TYPE_CHECKING:
    from ml.generators.lungs import LungParams


def trachea_seed(
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
    labels, _ = ndi.label(top, structure=PLANE4)
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
        labels, n = ndi.label(dense, structure=CONN26)
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


def grow_airway(
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
        free[1:-1, 1:-1, 1:-1] = sub_cand & below(sub_v, threshold)
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
    tbox = bbox(best, pad=2)
    assert tbox is not None
    tree = best[tbox]
    if smooth:  # the rim the 3x3 mean took off the lumen, from the unsmoothed values
        tree |= (
            ndi.binary_dilation(tree, structure=PLANE8) & sub_cand[tbox] & below(raw_v[tbox], best_threshold)
        )
    best[tbox] = fill_holes_inplane(tree)
    airway = np.zeros(v.shape, dtype=bool)
    airway[box] = best
    return airway
