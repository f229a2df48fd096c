"""Gaze heatmaps of a recording, or of a time window of it, as float32 ``(height, width)`` arrays.

``fixations`` is the columnar dict of ``GazeRecording.fixations``: ``start``, ``end`` (s), ``x`` (column),
``y`` (row) in image pixels; optional ``ang_res_x``/``ang_res_y`` (pixels per degree), ``shown_rect``
(``[xmin, ymin, xmax, ymax]`` image pixels of the part shown on screen) and ``inside``.

Methods (``docs/formats.md``):

- ``reflacx``: the dataset's reference map. Per fixation a normalised 2-D Gaussian density
  ``1/(2π σx σy) · exp(-(c-x)²/2σx² - (r-y)²/2σy²)`` with ``σx, σy = ang_res_x, ang_res_y × 1°``, evaluated
  at the integer pixels of its shown rectangle (bounds rounded, half-open ``[xmin, xmax) × [ymin, ymax)``
  like the slice the reference script adds into, clipped to the image; zero elsewhere), times the
  fixation's duration; divided by the total so it sums to 1. Every fixation counts, including ones off the
  image (``inside`` False): their tails reach into the rectangle in the reference too.
- ``egd``: +1 per fixation at ``(int(y), int(x))`` on a count map (fixations with ``inside`` False or a
  negative coordinate are skipped), then ``scipy.ndimage.gaussian_filter(σ=150, mode="reflect",
  truncate=4.0)``; not normalised unless ``normalise`` asks.
- ``custom``: Gaussians with ``sigma_px`` (isotropic) or ``sigma_deg`` (× the angular-resolution
  columns), weighted by duration or not (``duration_weighting``), clipped to the shown rectangle when the
  recording has one, fixations with ``inside`` False skipped; normalised by ``sum`` (default) or ``max``.

``normalise``: ``None`` (the method's own: ``sum`` for reflacx and custom, ``none`` for egd), ``"sum"``,
``"max"`` or ``"none"``.

Time window ``[start, end]`` (either bound may be None = open): a fixation belongs to it when its interval
overlaps the window with positive length (a zero-length fixation: when its instant lies inside the closed
window); its duration weight is *clipped* to the overlap. A window with no fixation, or whose fixations all
fall outside their shown rectangles, gives an all-zero map (not an error): a sentence spoken while the
reader looked away has no gaze. ``start > end`` is a ValueError.

Exactness: the Gaussian sum is evaluated separably (outer products of 1-D Gaussians, accumulated as
matrix products) over image tiles. In each tile a fixation is left out only when its largest possible
contribution there is below 1e-8/n of a lower bound of every pixel of the tile, and the tile is checked
afterwards: every pixel whose value is a normal float32 has a relative error below 1e-6 from the omitted
terms, else the tile is recomputed with every fixation. The normalising total is computed exactly
(separably, without truncation).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

METHODS = ("reflacx", "egd", "custom")
NORMALISE = ("sum", "max", "none")
EGD_SIGMA = 150.0
TILE = 128
_KEEP = 1e-8  # omitted terms per tile below _KEEP / n of the tile's lower bound
_CHECK = 1e-6  # accepted relative error per pixel from omitted terms
_TINY = float(np.finfo(np.float32).tiny)


def heatmap(
    fixations: dict,
    *,
    width: int,
    height: int,
    method: str = "reflacx",
    start: float | None = None,
    end: float | None = None,
    sigma_px: float | None = None,
    sigma_deg: float | None = None,
    duration_weighting: bool = True,
    normalise: str | None = None,
) -> np.ndarray:
    """The heatmap of ``fixations`` (see the module docstring) as float32 ``(height, width)``."""
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r} (expected one of {', '.join(METHODS)})")
    if normalise is None:
        normalise = "none" if method == "egd" else "sum"
    if normalise not in NORMALISE:
        raise ValueError(f"normalise: unknown normalisation {normalise!r} (expected sum, max or none)")
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"width/height: image size must be positive, got {width}x{height}")
    if method != "custom" and (sigma_px is not None or sigma_deg is not None):
        raise ValueError(f"sigma_px/sigma_deg: only for method 'custom', not {method!r}")
    if method == "custom" and (sigma_px is None) == (sigma_deg is None):
        raise ValueError("sigma_px/sigma_deg: method 'custom' needs exactly one of them")
    if start is not None and end is not None and start > end:
        raise ValueError(f"start: window start {start} is after its end {end}")

    n = _count(fixations)
    t0 = _column(fixations, "start", n)
    t1 = _column(fixations, "end", n)
    x = _column(fixations, "x", n)
    y = _column(fixations, "y", n)
    weighted = method == "reflacx" or (method == "custom" and duration_weighting)
    if weighted:
        bad = np.flatnonzero(~(t1 > t0))
        if bad.size:
            raise ValueError(
                f"end: fixation {int(bad[0])} has a zero or negative duration "
                f"({t0[bad[0]]} to {t1[bad[0]]}); duration weighting needs end > start"
            )
    selected, duration = _window(t0, t1, start, end)
    inside = fixations.get("inside")
    inside = np.ones(n, bool) if inside is None else np.asarray(inside, bool).reshape(-1)
    if inside.shape[0] != n:
        raise ValueError(f"inside: {inside.shape[0]} values for {n} fixations")

    if method == "egd":
        keep = selected & inside & (x >= 0) & (y >= 0)
        out = _egd(x[keep], y[keep], width, height)
        return _normalised(out, normalise, None)

    if method == "custom":
        selected = selected & inside
    if method == "reflacx" or sigma_deg is not None:
        deg = 1.0 if method == "reflacx" else float(sigma_deg)
        if not deg > 0:
            raise ValueError(f"sigma_deg: must be positive, got {sigma_deg}")
        sx = _column(fixations, "ang_res_x", n) * deg
        sy = _column(fixations, "ang_res_y", n) * deg
        for name, s in (("ang_res_x", sx), ("ang_res_y", sy)):
            if not np.all(s[selected] > 0):
                raise ValueError(f"{name}: angular resolution must be positive on every fixation")
    else:
        if not float(sigma_px) > 0:
            raise ValueError(f"sigma_px: must be positive, got {sigma_px}")
        sx = sy = np.full(n, float(sigma_px))
    if method == "reflacx" or fixations.get("shown_rect"):
        rects = _rects(fixations, n, width, height)
    else:
        rects = np.tile(np.array([0, 0, width, height], np.int64), (n, 1))

    idx = np.flatnonzero(selected)
    weight = duration[idx] if weighted else np.ones(idx.size)
    amp = weight / (2.0 * math.pi * sx[idx] * sy[idx])
    out, total = gaussian_sum(
        x[idx], y[idx], sx[idx], sy[idx], amp, rects[idx], width, height, normalise == "sum"
    )
    if normalise == "max":
        return _normalised(out, normalise, None)
    return out


def gaussian_sum(
    x: np.ndarray,
    y: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    amp: np.ndarray,
    rects: np.ndarray,
    width: int,
    height: int,
    divide_by_total: bool = True,
) -> tuple[np.ndarray, float]:
    """``Σ amp·exp(-(c-x)²/2sx² - (r-y)²/2sy²)`` over each fixation's half-open ``rects`` as float32,
    divided by its exact total over the image when ``divide_by_total`` (and the total is positive), and
    the total."""
    n = x.shape[0]
    out = np.zeros((height, width), np.float32)
    if n == 0:
        return out, 0.0
    cols = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)
    gx = np.exp(-np.square((cols[None, :] - x[:, None]) / sx[:, None]) * 0.5)
    gy = np.exp(-np.square((rows[None, :] - y[:, None]) / sy[:, None]) * 0.5)
    gx[(cols[None, :] < rects[:, 0:1]) | (cols[None, :] >= rects[:, 2:3])] = 0.0
    gy[(rows[None, :] < rects[:, 1:2]) | (rows[None, :] >= rects[:, 3:4])] = 0.0
    gxa = gx * amp[:, None]
    total = float(np.dot(gxa.sum(axis=1), gy.sum(axis=1)))

    cx = np.arange(0, width, TILE)
    cy = np.arange(0, height, TILE)
    gx_max = np.maximum.reduceat(gxa, cx, axis=1)
    gy_max = np.maximum.reduceat(gy, cy, axis=1)
    # smallest non-zero value per tile: a heuristic lower bound for the threshold (the check is rigorous)
    gx_min = np.minimum.reduceat(np.where(gxa > 0, gxa, np.inf), cx, axis=1)
    gy_min = np.minimum.reduceat(np.where(gy > 0, gy, np.inf), cy, axis=1)
    scale = 1.0 / total if total > 0 else 1.0
    factor = scale if divide_by_total else 1.0
    floor = np.finfo(np.float64).tiny
    for ty, r0 in enumerate(cy):
        r1 = min(r0 + TILE, height)
        upper = gy_max[:, ty : ty + 1] * gx_max  # (n, tiles in x): largest term per fixation and tile
        low = gy_min[:, ty : ty + 1] * gx_min
        lower = np.where(np.isfinite(low), low, 0.0).max(axis=0)
        for tx, c0 in enumerate(cx):
            c1 = min(c0 + TILE, width)
            m = upper[:, tx]
            keep = m >= max(lower[tx] * (_KEEP / n), floor)
            k = np.flatnonzero(keep)
            if k.size == 0 and not np.any(m > 0):
                continue
            tile = gy[k, r0:r1].T @ gxa[k, c0:c1]
            if k.size < n and np.any(m[~keep] > 0):
                # rigorous bound of the omitted terms per pixel: min of two separable bounds
                drop = np.where(keep, 0.0, 1.0)
                by_col = (gy_max[:, ty] * drop) @ gxa[:, c0:c1]
                by_row = gy[:, r0:r1].T @ (gx_max[:, tx] * drop)
                bound = np.minimum(by_row[:, None], by_col[None, :])
                ok = (bound <= _CHECK * tile) | ((tile + bound) * scale < _TINY)
                if not ok.all():
                    k = np.flatnonzero(m > 0)
                    tile = gy[k, r0:r1].T @ gxa[k, c0:c1]
            out[r0:r1, c0:c1] = tile * factor if factor != 1.0 else tile
    return out, total


def _egd(x: np.ndarray, y: np.ndarray, width: int, height: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    counts = np.zeros((height, width), np.float64)
    xi, yi = x.astype(np.int64), y.astype(np.int64)
    ok = (xi < width) & (yi < height)
    np.add.at(counts, (yi[ok], xi[ok]), 1.0)
    return gaussian_filter(counts, sigma=EGD_SIGMA, mode="reflect", truncate=4.0)


def _normalised(out: np.ndarray, normalise: str, total: float | None) -> np.ndarray:
    if normalise == "sum":
        total = float(out.sum()) if total is None else total
        if total > 0:
            out = out / total
    elif normalise == "max":
        peak = float(out.max()) if out.size else 0.0
        if peak > 0:
            out = out / peak
    return out.astype(np.float32)


def _count(fixations: Any) -> int:
    if not isinstance(fixations, dict):
        raise ValueError(f"fixations: expected a columnar dict, got {type(fixations).__name__}")
    for name in ("start", "end", "x", "y"):
        if name not in fixations:
            raise ValueError(f"{name}: fixations column is missing")
    return len(fixations["x"])


def _column(fixations: dict, name: str, n: int) -> np.ndarray:
    values = fixations.get(name)
    if values is None or (n and len(values) == 0):
        raise ValueError(f"{name}: fixations column is missing")
    try:
        out = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: fixations column is not numeric ({exc})") from None
    if out.shape[0] != n:
        raise ValueError(f"{name}: {out.shape[0]} values for {n} fixations")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: fixations column has missing or non-finite values")
    return out


def _rects(fixations: dict, n: int, width: int, height: int) -> np.ndarray:
    values = fixations.get("shown_rect")
    if values is None or (n and len(values) == 0):
        raise ValueError("shown_rect: fixations column is missing")
    try:
        raw = np.asarray(values, dtype=np.float64).reshape(n, 4)
    except (TypeError, ValueError):
        raise ValueError("shown_rect: expected [xmin, ymin, xmax, ymax] per fixation") from None
    if not np.all(np.isfinite(raw)):
        raise ValueError("shown_rect: non-finite bounds")
    rects = np.round(raw).astype(np.int64)  # round half to even, like Python's round()
    lim = np.array([width, height, width, height])
    return np.clip(rects, 0, lim)


def _window(
    t0: np.ndarray, t1: np.ndarray, start: float | None, end: float | None
) -> tuple[np.ndarray, np.ndarray]:
    lo = np.maximum(t0, -np.inf if start is None else float(start))
    hi = np.minimum(t1, np.inf if end is None else float(end))
    overlap = hi - lo
    selected = overlap > 0
    instant = t1 <= t0
    if start is not None or end is not None:
        s = -np.inf if start is None else float(start)
        e = np.inf if end is None else float(end)
        selected |= instant & (t0 >= s) & (t0 <= e)
    else:
        selected |= instant
    return selected, np.where(selected, np.maximum(overlap, 0.0), 0.0)
