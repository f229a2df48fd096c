"""A region grown from an annotator's clicks (foreground and background points) in the shown window's
intensity range: the classical answer of the review screen's click tool when the project has no interactive
model (``ml.interactive``). Pure numpy/scipy; no database, no torch.

Conventions (the platform's canonical volumes): arrays have axes ``(X, Y[, Z])`` = (column, row[, slice]);
points are voxel indices on those axes; ``spacing`` is the voxel size in mm along them. The volume is never
read whole: ``read(lo, hi)`` returns the box ``[lo, hi)`` of it (a memory-mapped NIfTI slice for a stored
scan, see ``ml.interactive``), so the time goes with the region, not the scan.

The method:

1. **Intensity range.** What looks alike on screen: with the window ``[low, high]`` the viewer shows (grey
   ``g(v) = clip((v - low) / (high - low), 0, 1)``) a voxel belongs when its grey is within ``tolerance``
   of the grey of a foreground click, i.e. its value is within ``t = tolerance · (high - low)`` of the
   click's value ``m`` (the median of the click's 3×3(×3) neighbourhood, so one noisy voxel does not
   decide). Where ``m - t`` falls below the window, everything below it looks the same (black) and the range
   is open below; likewise above. Several foreground clicks: the union of their ranges (lowest low, highest
   high). ``range`` given: that range instead.
2. **Grow.** The face-connected (6-connected in 3D, 4 in 2D) component of in-range voxels holding the
   foreground clicks (a click itself always belongs), searched in a box around the clicks that starts at
   ``start_radius_mm`` and grows (threefold, or to ``max_radius_mm`` when that is nearer) while the region
   touches a side of the box that is not the scan's edge. Then connections thinner than
   ``min_diameter_mm`` stop carrying it (as 3D Slicer's local-threshold effect does: the component is
   taken again after a morphological opening with a ball of that diameter, then given back its in-range
   voxels within the ball's radius, so its edges stay). A region that still touches the box at
   ``max_radius_mm`` stops at that distance from the clicks and says so (``limited``): it has probably
   leaked into a neighbour of the same intensity; a background click, a narrower window or a lower
   tolerance stops it.
3. **Background clicks** inside the region cut it: the region keeps the voxels nearer (in mm) to a
   foreground click than to every background click that fell inside it, and of those the part connected to
   the foreground clicks. Background clicks outside the region change nothing. (A watershed over intensity
   was tried first; ``scipy.ndimage.watershed_ift`` gives one marker every tie, so on a homogeneous
   structure the cut went wherever the scan order put it.)
4. **Holes** enclosed by the region (a calcification in a nodule, a vessel in consolidation) are filled
   (``fill_holes``).

The result is the region inside its tight box (``box``: ``lo`` and ``hi``, max exclusive, full-volume
voxel indices), the range used, the seed values and what limited the growth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["GrowError", "GrowParams", "GrowResult", "grow_from_clicks"]

Reader = Callable[[tuple[int, ...], tuple[int, ...]], np.ndarray]
MAX_POINTS = 100


class GrowError(ValueError):
    """Clicks or parameters the grow cannot use: ``(field, reason)``."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class GrowParams:
    tolerance: float = 0.1  # share of the window's width (on-screen grey levels) around the clicked value
    range: tuple[float, float] | None = None  # [low, high] of the region's values; overrides the window
    start_radius_mm: float = 16.0
    max_radius_mm: float = 50.0
    min_diameter_mm: float = 2.0  # connections thinner than this do not carry the region (0: off)
    fill_holes: bool = True

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> GrowParams:
        raw = dict(raw or {})
        known = {f for f in cls.__dataclass_fields__}
        if unknown := sorted(set(raw) - known):
            raise GrowError(unknown[0], f"not a region-grow parameter ({', '.join(sorted(known))})")
        try:
            params = cls(
                tolerance=float(raw.get("tolerance", cls.tolerance)),
                range=_pair(raw["range"], "range") if raw.get("range") is not None else None,
                start_radius_mm=float(raw.get("start_radius_mm", cls.start_radius_mm)),
                max_radius_mm=float(raw.get("max_radius_mm", cls.max_radius_mm)),
                min_diameter_mm=float(raw.get("min_diameter_mm", cls.min_diameter_mm)),
                fill_holes=bool(raw.get("fill_holes", cls.fill_holes)),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, GrowError):
                raise
            raise GrowError("params", f"numbers expected: {exc}") from exc
        if not 0 < params.tolerance <= 1:
            raise GrowError("tolerance", f"a share of the window's width in (0, 1], got {params.tolerance}")
        if not 0 < params.start_radius_mm <= params.max_radius_mm <= 2000:
            raise GrowError(
                "max_radius_mm",
                f"need 0 < start_radius_mm ({params.start_radius_mm}) <= max_radius_mm "
                f"({params.max_radius_mm}) <= 2000",
            )
        if not 0 <= params.min_diameter_mm <= 50:
            raise GrowError("min_diameter_mm", f"between 0 and 50 mm, got {params.min_diameter_mm}")
        return params

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["range"] = list(self.range) if self.range is not None else None
        return out


@dataclass
class GrowResult:
    mask: np.ndarray  # bool, the region inside ``lo``..``hi``
    lo: tuple[int, ...]
    hi: tuple[int, ...]  # max exclusive
    range: tuple[float, float]  # values of the region (±inf where open)
    seed_values: list[float]
    radius_mm: float  # the box the region was searched in: this far from the clicks
    limited: bool  # the region reached the box at max_radius_mm (probably leaked)
    split: bool  # background clicks cut the region
    voxels_read: int
    warnings: list[str] = field(default_factory=list)

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    @property
    def box(self) -> list[int]:
        return [*self.lo, *self.hi]


def _pair(value: Any, name: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise GrowError(name, f"[low, high] expected, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise GrowError(name, f"[low, high] with low < high expected, got {value!r}")
    return low, high


def _points(raw: Sequence[Sequence[int]], shape: tuple[int, ...], name: str) -> np.ndarray:
    pts = np.asarray(raw, dtype=np.int64).reshape(-1, len(shape)) if len(raw) else np.zeros((0, len(shape)))
    if len(pts) > MAX_POINTS:
        raise GrowError(name, f"at most {MAX_POINTS} points")
    for p in pts:
        if np.any(p < 0) or np.any(p >= np.asarray(shape)):
            raise GrowError(name, f"{p.tolist()} lies outside the scan (shape {list(shape)})")
    return pts.astype(np.int64)


def _seed_value(image: np.ndarray, local: np.ndarray) -> float:
    """Median of the click's 3×3(×3) neighbourhood (clipped at the box)."""
    sl = tuple(slice(max(0, c - 1), c + 2) for c in local)
    return float(np.median(image[sl]))


def value_range(seeds: list[float], window: tuple[float, float], tolerance: float) -> tuple[float, float]:
    """The range of values that look like the seeds on screen (module docstring, step 1)."""
    low_w, high_w = window
    t = tolerance * (high_w - low_w)
    lows, highs = [], []
    for m in seeds:
        lows.append(-math.inf if m - t <= low_w else m - t)
        highs.append(math.inf if m + t >= high_w else m + t)
    return min(lows), max(highs)


def grow_from_clicks(
    read: Reader,
    shape: Sequence[int],
    spacing: Sequence[float],
    foreground: Sequence[Sequence[int]],
    background: Sequence[Sequence[int]] = (),
    *,
    window: tuple[float, float] | None = None,
    params: GrowParams | None = None,
) -> GrowResult:
    """The region of the clicks (module docstring). ``window``: the viewer's ``[low, high]``; without it and
    without ``params.range`` the 1st–99th percentile of the first box read stands in. ``GrowError`` names
    the field of a click or parameter that cannot be used."""
    params = params or GrowParams()
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    if ndim not in (2, 3) or len(spacing) != ndim:
        raise GrowError("scan", f"2D or 3D scans with one spacing per axis, got {shape} and {list(spacing)}")
    fg = _points(foreground, shape, "points")
    bg = _points(background, shape, "background")
    if not len(fg):
        raise GrowError("points", "at least one foreground point")
    if {tuple(p) for p in fg} & {tuple(p) for p in bg}:
        raise GrowError("background", "a point cannot be both foreground and background")
    if window is not None:
        window = _pair(window, "window")
    space = np.asarray([float(s) for s in spacing])
    if np.any(space <= 0):
        raise GrowError("scan", f"spacing must be positive, got {list(spacing)}")
    structure = ndimage.generate_binary_structure(ndim, 1)
    ball = _ball(params.min_diameter_mm / 2, space)
    radius = min(params.start_radius_mm, params.max_radius_mm)
    first, last = fg.min(axis=0), fg.max(axis=0)
    rng: tuple[float, float] | None = params.range
    seeds: list[float] = []
    read_total = 0
    while True:
        half = np.ceil(radius / space).astype(np.int64)
        lo = np.maximum(0, first - half)
        hi = np.minimum(np.asarray(shape), last + half + 1)
        image = np.asarray(read(tuple(int(v) for v in lo), tuple(int(v) for v in hi)), dtype=np.float32)
        read_total += image.size
        local = fg - lo
        if not seeds:
            seeds = [_seed_value(image, p) for p in local]
        if rng is None:
            shown = window or _display_window(image)
            rng = value_range(seeds, shown, params.tolerance)
        inside = _in_range(image, rng)
        inside[tuple(local.T)] = True
        region = _component(inside, local, structure)
        del inside
        if _touches_open_side(region, lo, hi, shape) and radius < params.max_radius_mm:
            radius = params.max_radius_mm if radius * 3 >= params.max_radius_mm / 2 else radius * 3
            continue
        break
    if ball is not None:  # grown through connections at least min_diameter_mm thick, edges kept
        region = _thick_part(region, local, ball, structure)
    split = False
    bg_local = bg - lo
    in_box = np.all((bg_local >= 0) & (bg_local < np.asarray(image.shape)), axis=1)
    bg_inside = [p for p in bg_local[in_box] if region[tuple(p)]]
    if bg_inside:
        region = _split(region, local, np.asarray(bg_inside), space, structure)
        split = True
    if params.fill_holes and region.any():
        region = _fill_holes(region, structure)
    if not region.any():  # every click was cut away: keep the clicks themselves
        region[tuple(local.T)] = True
    open_sides = _touches_open_side(region, lo, hi, shape)
    warnings: list[str] = []
    if open_sides:
        warnings.append(
            f"the region reached {radius:g} mm from the clicks (max_radius_mm) and was cut there: it "
            "probably leaked into a neighbour of the same intensity; add a background click, narrow the "
            "window or lower the tolerance"
        )
    tight, tight_lo = _bbox(region)
    tight_hi = np.asarray([s.stop for s in tight])
    crop = region[tight]
    return GrowResult(
        mask=np.ascontiguousarray(crop),
        lo=tuple(int(v) for v in lo + tight_lo),
        hi=tuple(int(v) for v in lo + tight_hi),
        range=(float(rng[0]), float(rng[1])),
        seed_values=seeds,
        radius_mm=float(radius),
        limited=bool(open_sides),
        split=split,
        voxels_read=int(read_total),
        warnings=warnings,
    )


def _component(mask: np.ndarray, seeds: np.ndarray, structure) -> np.ndarray:
    """The connected components of ``mask`` that hold a seed (none: all False)."""
    labels, count = ndimage.label(mask, structure=structure)
    return _pick(labels, count, labels[tuple(seeds.T)])


def _pick(labels: np.ndarray, count: int, ids) -> np.ndarray:
    """``labels`` in ``ids`` (0, the background, never) as booleans: a look-up table, not ``np.isin``."""
    wanted = sorted({int(i) for i in np.asarray(ids).ravel()} - {0})
    if len(wanted) == 1:  # the usual case: one comparison, no gather
        return labels == wanted[0]
    keep = np.zeros(count + 1, dtype=bool)
    keep[wanted] = True
    return keep[labels]


def _thick_part(region: np.ndarray, seeds: np.ndarray, ball: np.ndarray, structure) -> np.ndarray:
    """The part of ``region`` the seeds reach through connections at least ``ball`` thick, given back the
    region's voxels within the ball's radius (the region itself when the opening leaves no seed)."""
    box, offset = _bbox(region, pad=np.asarray(ball.shape) // 2)
    sub = region[box]
    core = _component(ndimage.binary_opening(sub, structure=ball), seeds - offset, structure)
    if not core.any():
        return region
    out = np.zeros_like(region)
    out[box] = ndimage.binary_dilation(core, structure=ball) & sub
    return out


def _bbox(mask: np.ndarray, pad=0) -> tuple[tuple[slice, ...], np.ndarray]:
    """The box of ``mask``'s voxels, ``pad`` voxels wider per side (within the array), and its corner."""
    pad = np.broadcast_to(np.asarray(pad), (mask.ndim,))
    lo, hi = [], []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        along = np.flatnonzero(mask.any(axis=others))
        lo.append(max(0, int(along[0]) - int(pad[axis])))
        hi.append(min(mask.shape[axis], int(along[-1]) + 1 + int(pad[axis])))
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), np.asarray(lo)


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray | None:
    """A ball of ``radius_mm`` on the voxel grid (an ellipsoid in voxels); None when it is one voxel."""
    half = np.floor(radius_mm / spacing).astype(np.int64)
    if radius_mm <= 0 or not half.any():
        return None
    grids = np.ogrid[tuple(slice(-int(h), int(h) + 1) for h in half)]
    return sum((g * s / radius_mm) ** 2 for g, s in zip(grids, spacing, strict=True)) <= 1.0


def _display_window(image: np.ndarray) -> tuple[float, float]:
    low, high = (float(v) for v in np.percentile(image, [1, 99]))
    return (low, high) if high > low else (low - 1.0, low + 1.0)


def _in_range(image: np.ndarray, rng: tuple[float, float]) -> np.ndarray:
    low, high = rng
    if math.isinf(low) and math.isinf(high):
        return np.ones(image.shape, dtype=bool)
    if math.isinf(low):
        return image <= high
    if math.isinf(high):
        return image >= low
    return (image >= low) & (image <= high)


def _touches_open_side(region: np.ndarray, lo, hi, shape) -> bool:
    """Does the region touch a side of its box that is not the scan's edge (where it could go on)?"""
    for axis in range(region.ndim):
        if lo[axis] > 0 and np.take(region, 0, axis=axis).any():
            return True
        if hi[axis] < shape[axis] and np.take(region, -1, axis=axis).any():
            return True
    return False


def _split(region, fg_local, bg_local, spacing, structure) -> np.ndarray:
    """The part of ``region`` nearer (in mm) to a foreground click than to any background click, and
    connected to a foreground click (step 3)."""
    box, a = _bbox(region)
    b = np.asarray([s.stop for s in box])
    sub = region[box]
    fg = [p - a for p in fg_local if np.all(p >= a) and np.all(p < b)]
    bg = [p - a for p in bg_local]
    d_fg = _distance_to(sub.shape, fg, spacing)
    d_bg = _distance_to(sub.shape, bg, spacing)
    won = sub & (d_fg < d_bg)
    out = np.zeros_like(region)
    out[box] = _component(won, np.asarray(fg), structure)
    return out


def _distance_to(shape, points, spacing) -> np.ndarray:
    """Squared distance in mm² from every voxel of a box of ``shape`` to the nearest of ``points``: summed
    per axis over broadcast 1D offsets (a few points: far cheaper than a distance transform of the box)."""
    best = np.full(shape, np.inf, dtype=np.float32)
    for point in points:
        axes = np.ix_(*[((np.arange(n) - c) * s).astype(np.float32) ** 2 for n, c, s in
                        zip(shape, point, spacing, strict=True)])  # fmt: skip
        np.minimum(best, sum(axes), out=best)
    return best


def _fill_holes(region: np.ndarray, structure) -> np.ndarray:
    """``region`` with the background it encloses (not connected to its box's border) filled: one labelling
    of the background in the region's box (``binary_fill_holes`` propagates, ~3× slower on large boxes)."""
    box, _ = _bbox(region, pad=1)
    background = ~region[box]
    labels, count = ndimage.label(background, structure=structure)
    faces = [np.take(labels, i, axis=a) for a in range(labels.ndim) for i in (0, -1)]
    outside = np.unique(np.concatenate([f.ravel() for f in faces]))
    holes = np.ones(count + 1, dtype=bool)
    holes[outside] = False
    holes[0] = False
    out = region.copy()
    out[box] |= holes[labels]
    return out
