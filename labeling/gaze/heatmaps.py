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
- ``egd``: the dataset's own script (``cxr-eye-gaze/eye-gaze-dataset``,
  ``DataProcessing/DataPostProcessing/create_heatmap_images_and_or_videos.py``, ``process_eye_gaze_table``,
  line numbers below at commit 82f2427): +1 per point on a count map, then
  ``scipy.ndimage.gaussian_filter(σ=150, mode="reflect", truncate=4.0)``; not normalised unless
  ``normalise`` asks. The whole-recording map of an imported EGD-CXR recording is made from every row of
  ``fixations.csv`` as the script reads them (``fixations["egd_rows"]``, see ``egd_row_pixels``), with
  the script's edge cases as defaults, each a documented option:

  - ``egd_fpogv="all"``: rows with FPOGV = 0 count like the others (the script never reads FPOGV);
    ``"valid"`` counts only FPOGV = 1 rows.
  - ``egd_pad_even=True``: an odd height or width gets one zero row or column (lines 258-261); the count
    map has that padded size, the screen-to-pixel scale uses it (line 279: ``image.shape[1] /
    resized_width``), points can land in the padding, the filter reflects at the padded edge; the map
    returned is the image's part (the padding cropped). False: the image's own size.
  - ``egd_keep_row0=False``: a point is counted only when its row is ``> 0`` (line 285, meant to skip the
    ``-1`` of points off the image, it also drops image row 0); True counts every point on the image.
  - a point mapped one past the last row or column (float rounding of the scale) raises IndexError there
    and is skipped by its ``except``; here too.

  Not modelled: the script saves a map when the next image starts, so a session's last image gets none,
  and an image whose rows are not contiguous in the session restarts its count map.
  Time windows, maps of part of the fixations and recordings without ``egd_rows`` use the fixations'
  ``x``/``y`` (fixations with ``inside`` False or a negative coordinate skipped) under the same
  ``egd_pad_even`` / ``egd_keep_row0`` rules.
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

Exactness (reflacx and custom): the Gaussian sum is evaluated separably, per 256×256 image tile as a
matrix product of the fixations' 1-D Gaussians (exact float64 values, rect indicator folded in, stored as
float32; fixations sharing an angular resolution and the fractional part of their position, e.g. REFLACX's
integer positions, share one table of them). On each tile a fixation is left out only when the terms of
all the fixations left out sum to at most 1e-6 of a lower bound of the tile's pixels (the sum of every
fixation's smallest term there; rigorous when all fixations share one shown rect, else checked per pixel
after the product, and a tile failing the check is recomputed in float64 with every fixation, the total
then exactly). The product runs in float32 where the tile's pixels are above 2**-90 (so underflow cannot
matter), in chunks of at most 128 fixations: the inner-product bound (any summation order, FMA or not)
then limits each pixel's rounding to (128 + chunks + 3)·2**-24 relative (inputs rounded to float32, the
accumulation, the sum of up to 4 chunk results, the scaling; beyond 4 chunks they are summed in float64),
at most 8.1e-6; elsewhere in float64. The normalising total is the float64 sum of the 1-D Gaussians over
the tiles they are used on, which misses at most 1e-6 of it. So every pixel whose value is a normal
float32 is within 1e-6 + 8.1e-6 < 1e-5 relative of the exact map (about 1e-6 in practice); smaller ones
come out at most about float32's smallest normal.
"""

from __future__ import annotations

import math

import numpy as np

from labeling.gaze.columns import column, fixation_count, shown_rects, window_weights

METHODS = ("reflacx", "egd", "custom")
NORMALISE = ("sum", "max", "none")
EGD_FPOGV = ("all", "valid")
EGD_SIGMA = 150.0
TILE = 256
_DROP = 1e-6  # planned mass omitted per tile, relative to a lower bound of its pixels
_CHECK = 1e-6  # accepted mass omitted per pixel, relative to the pixel (checked after each tile)
_SLACK = 1e-5  # relative rounding of a computed tile, allowed for in that check
_LADDER = (0.03, 0.1, 0.3)  # candidate drop thresholds, fractions of the budget
_CHUNK = 128  # fixations per float32 GEMM: accumulation error <= _CHUNK·u (u = 2**-24)
_MAX_CHUNKS = 4  # chunk results summed in float32 (error <= chunks·u) up to this many, else in float64
_SAFE_LO = 2.0**-90  # float32 GEMM only where the pixels are above this (see "Exactness")
_MAX_GROUPS = 16  # distinct shown rects checked per tile; more: recompute the tile with every fixation
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
    egd_fpogv: str = "all",
    egd_pad_even: bool = True,
    egd_keep_row0: bool = False,
) -> np.ndarray:
    """The heatmap of ``fixations`` (see the module docstring) as float32 ``(height, width)``."""
    if egd_fpogv not in EGD_FPOGV:
        raise ValueError(f"egd_fpogv: {egd_fpogv!r} is not one of {', '.join(EGD_FPOGV)}")
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

    n = fixation_count(fixations)
    t0 = column(fixations, "start", n)
    t1 = column(fixations, "end", n)
    x = column(fixations, "x", n)
    y = column(fixations, "y", n)
    weighted = method == "reflacx" or (method == "custom" and duration_weighting)
    if weighted:
        bad = np.flatnonzero(~(t1 > t0))
        if bad.size:
            raise ValueError(
                f"end: fixation {int(bad[0])} has a zero or negative duration "
                f"({t0[bad[0]]} to {t1[bad[0]]}); duration weighting needs end > start"
            )
    selected, duration = window_weights(t0, t1, start, end)
    inside = fixations.get("inside")
    inside = np.ones(n, bool) if inside is None else np.asarray(inside, bool).reshape(-1)
    if inside.shape[0] != n:
        raise ValueError(f"inside: {inside.shape[0]} values for {n} fixations")

    if method == "egd":
        rows = fixations.get("egd_rows") if start is None and end is None else None
        if rows:
            px, py, counted = egd_row_pixels(rows, width, height, egd_pad_even, egd_keep_row0)
            if egd_fpogv == "valid":
                counted &= _row_column(rows, "fpogv") == 1
            out = _egd(px[counted], py[counted], width, height, egd_pad_even)
        else:
            keep = selected & inside & (x >= 0) & (y >= (0 if egd_keep_row0 else 1))
            out = _egd(x[keep], y[keep], width, height, egd_pad_even)
        return _normalised(out, normalise, None)

    if method == "custom":
        selected = selected & inside
    if method == "reflacx" or sigma_deg is not None:
        deg = 1.0 if method == "reflacx" else float(sigma_deg)
        if not deg > 0:
            raise ValueError(f"sigma_deg: must be positive, got {sigma_deg}")
        sx = column(fixations, "ang_res_x", n) * deg
        sy = column(fixations, "ang_res_y", n) * deg
        for name, s in (("ang_res_x", sx), ("ang_res_y", sy)):
            if not np.all(s[selected] > 0):
                raise ValueError(f"{name}: angular resolution must be positive on every fixation")
    else:
        if not float(sigma_px) > 0:
            raise ValueError(f"sigma_px: must be positive, got {sigma_px}")
        sx = sy = np.full(n, float(sigma_px))
    if method == "reflacx" or fixations.get("shown_rect"):
        rects = shown_rects(fixations, n, width, height)
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
    divided by its total over the image when ``divide_by_total`` (and the total is positive), and that
    total (both within the bounds of the module docstring's "Exactness")."""
    n = x.shape[0]
    out = np.zeros((height, width), np.float32)
    if n == 0:
        return out, 0.0
    peak = float(amp.max())
    if not peak > 0:
        return out, 0.0
    amp = amp / peak  # <= 1; the peak goes back in with the normalisation
    isx, isy = 1.0 / sx, 1.0 / sy
    cx, cy = np.arange(0, width, TILE), np.arange(0, height, TILE)
    ntx, nty = cx.size, cy.size
    ux, lx = _bounds(x, isx, rects[:, 0], rects[:, 2], cx, width)
    uy, ly = _bounds(y, isy, rects[:, 1], rects[:, 3], cy, height)
    uxa_t, lxa_t = (ux * amp[:, None]).T.copy(), (lx * amp[:, None]).T.copy()  # (ntx, n)

    groups, group_of = _unique_rows(rects)
    one_rect = groups.shape[0] == 1

    # Plan every tile: the fixations kept (the terms of the others sum to at most _DROP of a lower bound
    # of the tile's pixels), the omitted mass per pixel (``omitted``, an upper bound for the pixels in
    # the omitted fixations' rects) and whether the float32 GEMM is safe there (see "Exactness").
    keep = np.empty((nty, ntx, n), bool)
    omitted = np.empty((nty, ntx))
    safe = np.empty((nty, ntx), bool)
    for ty in range(nty):
        m = uxa_t * uy[:, ty]  # (ntx, n): largest term of each fixation on each tile of the band
        low = lxa_t * ly[:, ty]  # smallest non-zero term there (their sum: a lower bound of the pixels)
        budget = _DROP * low.sum(axis=1, keepdims=True)
        kept = m >= _threshold(m, budget, n)
        kept &= m > 0
        keep[ty] = kept
        omitted[ty] = m.sum(axis=1, where=~kept)
        if one_rect:  # every pixel of the tile's part of the rect is >= the lower bound
            safe[ty] = budget[:, 0] >= _DROP * _SAFE_LO
        else:  # every pixel reached by a kept fixation is >= its smallest term
            low[~kept] = np.inf
            safe[ty] = low.min(axis=1) >= _SAFE_LO

    # Exact 1-D Gaussians (float64, rect indicator folded in) on the tiles where a fixation is kept,
    # stored compactly as float32 (x with amp), and their sums there for the normalising total.
    blocks_x, rows_x, sum_x = _axis_blocks(x, isx, rects[:, 0], rects[:, 2], cx, width, keep.any(axis=0), amp)
    blocks_y, rows_y, sum_y = _axis_blocks(
        y, isy, rects[:, 1], rects[:, 3], cy, height, keep.any(axis=1), None
    )
    # every (fixation, tile) pair left out of this total is an omitted one: see "Exactness"
    total = float(np.dot(amp * sum_x, sum_y)) * peak
    factor = (1.0 / total if total > 0 else 1.0) if divide_by_total else 1.0
    factor *= peak
    f32 = np.float32(factor)
    scale32 = _SAFE_LO <= factor <= 1.0 / _SAFE_LO  # else scale in float64

    failed = False
    for ty, r0 in enumerate(cy):
        r1 = min(r0 + TILE, height)
        for tx, c0 in enumerate(cx):
            c1 = min(c0 + TILE, width)
            k = np.flatnonzero(keep[ty, tx])
            if k.size == 0:  # no fixation reaches the tile (the plan keeps one whenever one does)
                continue
            if safe[ty, tx]:
                tile = _gemm32(blocks_y[ty][rows_y[ty, k]], blocks_x[tx][rows_x[tx, k]])
            else:
                tile = _gemm64(k, x, y, isx, isy, amp, rects, r0, r1, c0, c1)
            if (
                not one_rect  # one rect: the plan's lower bound holds on every non-zero pixel
                and omitted[ty, tx] > 0
                and not _covered(
                    tile, omitted[ty, tx], ty, tx, k, uy, uxa_t, groups, group_of, r0, c0, factor
                )
            ):
                failed = True
                k = np.flatnonzero(uy[:, ty] * uxa_t[tx] > 0)
                tile = _gemm64(k, x, y, isx, isy, amp, rects, r0, r1, c0, c1)
            view = out[r0:r1, c0:c1]
            if tile.dtype == np.float32 and scale32:
                np.multiply(tile, f32, out=view)
            else:
                np.multiply(tile, factor, out=view, casting="unsafe", dtype=np.float64)
    if failed:
        # a tile was recomputed with every fixation: the total above may miss more than _CHECK of it
        exact = _exact_total(x, y, isx, isy, amp, rects, width, height) * peak
        if divide_by_total and exact > 0 and total > 0:
            np.multiply(out, total / exact, out=out, casting="unsafe", dtype=np.float64)
        total = exact
    return out, total


def _bounds(
    pos: np.ndarray, inv: np.ndarray, lo: np.ndarray, hi: np.ndarray, starts: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per fixation and tile along one axis: an upper bound of ``exp(-(i-pos)²·inv²/2)`` over the tile's
    indices ``i`` in the fixation's ``[lo, hi)``, and its exact minimum there (the farther end); both 0
    where the tile misses ``[lo, hi)``."""
    a = np.maximum(starts[None, :], lo[:, None]).astype(np.float64)
    b = np.minimum(np.minimum(starts + TILE, size)[None, :], hi[:, None]).astype(np.float64) - 1.0
    p = pos[:, None]
    near = np.maximum(np.maximum(a - p, p - b), 0.0) * inv[:, None]
    far = np.maximum(p - a, b - p) * inv[:, None]
    empty = a > b
    upper = np.exp(-0.5 * near * near)
    lower = np.exp(-0.5 * far * far)
    upper[empty] = 0.0
    lower[empty] = 0.0
    return upper, lower


def _threshold(m: np.ndarray, budget: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``m`` (tiles × fixations), a threshold such that the terms below it sum to at most
    ``budget``: the largest of a short ladder that does, else ``budget / n``."""
    best = budget / n
    for f in _LADDER:  # ascending; the sums grow with the threshold, so the last one that fits wins
        t = budget * f
        best = np.where(m.sum(axis=1, keepdims=True, where=m < t) <= budget, t, best)
    return best


def _axis_blocks(
    pos: np.ndarray,
    inv: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    starts: np.ndarray,
    size: int,
    need: np.ndarray,
    weight: np.ndarray | None,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Along one axis, per tile ``t``: the 1-D Gaussians (times ``weight``) of the fixations ``need[t]``
    on the tile as float32 rows, the row of each fixation there (-1: none), and per fixation the float64
    sum of its Gaussian over those tiles."""
    n = pos.shape[0]
    table = _table(pos, inv, size)
    sums = np.zeros(n)
    rows = np.full((starts.size, n), -1, np.intp)
    blocks = []
    for t, a in enumerate(starts):
        idx = np.flatnonzero(need[t])
        rows[t, idx] = np.arange(idx.size)
        g = _block(pos[idx], inv[idx], lo[idx], hi[idx], int(a), min(int(a) + TILE, size), table, idx)
        sums[idx] += g.sum(axis=1)
        if weight is None:
            blocks.append(g.astype(np.float32))
        else:
            blocks.append(np.multiply(g, weight[idx, None], dtype=np.float64).astype(np.float32))
    return blocks, rows, sums


def _table(pos: np.ndarray, inv: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(tab, off)`` with ``tab[off[i] + j] == exp(-((j - pos[i])·inv[i])²/2)`` for ``j`` in ``[0, size)``,
    when the fixations share few (``inv``, fractional part of ``pos``) pairs (REFLACX: integer positions,
    a few angular resolutions): the Gaussian then only depends on ``j - floor(pos)`` within a pair, and
    one table per pair replaces an ``exp`` per fixation and index. ``None`` otherwise."""
    base = np.floor(pos)
    frac = pos - base  # exact
    keys, group = _unique_rows(np.stack([inv, frac], axis=1))
    if keys.shape[0] * 8 > pos.shape[0]:
        return None
    top = np.full(keys.shape[0], -np.inf)
    bottom = np.full(keys.shape[0], np.inf)
    np.maximum.at(top, group, base)
    np.minimum.at(bottom, group, base)
    length = (size + top - bottom).astype(np.int64)  # offsets j - floor(pos) from -top to size-1-bottom
    if int(length.sum()) > 4 * size * keys.shape[0]:
        return None
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    which = np.repeat(np.arange(keys.shape[0]), length)
    d = np.arange(which.size, dtype=np.float64) - (start + top)[which]
    tab = (d - keys[which, 1]) * keys[which, 0]
    np.multiply(tab, tab, out=tab)
    tab *= -0.5
    np.exp(tab, out=tab)
    off = (start + top)[group] - base
    return tab, off.astype(np.intp)


def _unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``a`` and the index of each row's among them."""
    if np.all(a == a[0]):
        return a[:1], np.zeros(a.shape[0], np.intp)
    rows, index = np.unique(a, axis=0, return_inverse=True)
    return rows, index.reshape(-1)


def _block(
    pos: np.ndarray,
    inv: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    a: int,
    b: int,
    table: tuple[np.ndarray, np.ndarray] | None = None,
    idx: np.ndarray | None = None,
) -> np.ndarray:
    """``exp(-(i-pos)²·inv²/2)`` (float64, fixations × indices ``[a, b)``), zero outside ``[lo, hi)``; from
    ``_table``'s ``table`` (for the fixations ``idx`` of it) when given."""
    at = np.arange(a, b, dtype=np.float64)
    if table is not None:
        tab, off = table
        g = np.lib.stride_tricks.sliding_window_view(tab, b - a)[off[idx] + a]
    else:
        g = at[None, :] - pos[:, None]
        g *= inv[:, None]
        np.multiply(g, g, out=g)
        g *= -0.5
        np.exp(g, out=g)
    if np.any(lo > a) or np.any(hi < b):
        g[(at[None, :] < lo[:, None]) | (at[None, :] >= hi[:, None])] = 0.0
    return g


def _gemm32(gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """``gy.T @ gx`` (float32) in chunks of at most _CHUNK fixations, summed (in float64 beyond
    _MAX_CHUNKS chunks; see "Exactness")."""
    k = gy.shape[0]
    if k <= _CHUNK:
        return gy.T @ gx
    parts = -(-k // _CHUNK)
    edges = [k * j // parts for j in range(parts + 1)]
    tile = gy[: edges[1]].T @ gx[: edges[1]]
    if parts > _MAX_CHUNKS:
        tile = tile.astype(np.float64)
    for j0, j1 in zip(edges[1:-1], edges[2:]):
        tile += gy[j0:j1].T @ gx[j0:j1]
    return tile


def _gemm64(k, x, y, isx, isy, amp, rects, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """The tile from the fixations ``k`` in float64, from freshly computed 1-D Gaussians."""
    gy = _block(y[k], isy[k], rects[k, 1], rects[k, 3], r0, r1)
    gx = _block(x[k], isx[k], rects[k, 0], rects[k, 2], c0, c1)
    gx *= amp[k, None]
    return gy.T @ gx


def _covered(tile, omitted, ty, tx, k, uy, uxa_t, groups, group_of, r0, c0, factor) -> bool:
    """With several distinct shown rects: whether the mass omitted from the tile is at most _CHECK of
    every pixel it can reach (or too small to show in float32 after ``factor``). ``omitted`` bounds it per
    pixel; where that is not small enough, it is split per rect, each part reaching that rect's pixels."""
    accept = _CHECK * (1.0 - _SLACK)  # _SLACK covers the tile's own rounding (see "Exactness")
    if float(tile.min()) * accept >= omitted:
        return True
    m = uy[:, ty] * uxa_t[tx]
    m[k] = 0.0
    drop = np.flatnonzero(m > 0)
    per_group = np.bincount(group_of[drop], weights=m[drop], minlength=groups.shape[0])
    hit = np.flatnonzero(per_group > 0)
    if hit.size > _MAX_GROUPS:
        return False
    bound = np.zeros(tile.shape)
    for g in hit:
        x0, y0, x1, y1 = (int(v) for v in groups[g])
        bound[max(y0 - r0, 0) : max(y1 - r0, 0), max(x0 - c0, 0) : max(x1 - c0, 0)] += per_group[g]
    return bool(np.all((bound <= accept * tile) | ((tile + bound) * factor < _TINY)))


def _exact_total(x, y, isx, isy, amp, rects, width: int, height: int) -> float:
    """``Σ amp·(Σ gx)·(Σ gy)`` over whole rects, without truncation (in chunks of fixations)."""
    total = 0.0
    for i in range(0, x.shape[0], 64):
        s = slice(i, i + 64)
        gx = _block(x[s], isx[s], rects[s, 0], rects[s, 2], 0, width).sum(axis=1)
        gy = _block(y[s], isy[s], rects[s, 1], rects[s, 3], 0, height).sum(axis=1)
        total += float(np.dot(amp[s] * gx, gy))
    return total


def egd_grid(width: int, height: int, pad_even: bool = True) -> tuple[int, int]:
    """``(width, height)`` of EGD-CXR's count map: padded to even when ``pad_even`` (module docstring)."""
    if pad_even:
        return width + width % 2, height + height % 2
    return width, height


def egd_row_pixels(
    rows: dict, width: int, height: int, pad_even: bool = True, keep_row0: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``fixations["egd_rows"]`` (every fixations.csv row of the image: ``fpogx``, ``fpogy``
    screen fractions or None, ``pads`` [left, right, top, bottom] and ``screen`` [width, height] px):
    the pixel the dataset's script computes (``X_ORIGINAL``/``Y_ORIGINAL``, lines 268-280: strictly
    inside the image's screen area, else -1, times the count map's size over the area's, truncated) and
    whether the script adds it to the count map (row > 0, or any point on the image with ``keep_row0``;
    within the count map). The float64 operations are the script's, in its order."""
    try:
        screen_w, screen_h = (float(v) for v in rows["screen"])
        left, right, top, bottom = (float(v) for v in rows["pads"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("egd_rows: expected screen [w, h] and pads [left, right, top, bottom]") from None
    grid_w, grid_h = egd_grid(width, height, pad_even)
    eye_x = _row_column(rows, "fpogx") * screen_w
    eye_y = _row_column(rows, "fpogy") * screen_h
    if eye_x.shape != eye_y.shape:
        raise ValueError(f"egd_rows: {eye_x.size} fpogx values for {eye_y.size} fpogy values")
    on = (eye_x > left) & (eye_x < screen_w - right) & (eye_y > top) & (eye_y < screen_h - bottom)
    x_original = np.where(on, eye_x - left, -1.0)
    y_original = np.where(on, eye_y - top, -1.0)
    px = np.trunc(grid_w / (screen_w - left - right) * x_original).astype(np.int64)
    py = np.trunc(grid_h / (screen_h - top - bottom) * y_original).astype(np.int64)
    counted = (on & (py >= 0)) if keep_row0 else (py > 0)
    counted &= (px < grid_w) & (py < grid_h)  # IndexError in the script: skipped
    return px, py, counted


def _row_column(rows: dict, name: str) -> np.ndarray:
    values = rows.get(name)
    if not isinstance(values, list):
        raise ValueError(f"egd_rows: the {name} column is missing")
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"egd_rows: the {name} column is not numeric") from None


def _egd(x: np.ndarray, y: np.ndarray, width: int, height: int, pad_even: bool = True) -> np.ndarray:
    """``gaussian_filter(counts, σ=150, mode="reflect", truncate=4.0)`` of the +1-per-point count map on
    ``egd_grid``, cropped to the image, computed from the points with float32 products
    (``labeling.gaze.smoothing``: relative error at most 7.8e-6 on every pixel)."""
    from labeling.gaze.smoothing import filtered_impulses

    grid_w, grid_h = egd_grid(width, height, pad_even)
    xi, yi = x.astype(np.int64), y.astype(np.int64)
    ok = (xi < grid_w) & (yi < grid_h)
    out = filtered_impulses(xi[ok], yi[ok], grid_w, grid_h, EGD_SIGMA, fast=True)
    return out[:height, :width]


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
