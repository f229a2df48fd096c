"""The fast exact Gaussian sum behind the reflacx and custom gaze heatmaps (``labeling.gaze.heatmaps``):
``gaussian_sum`` of per-fixation 2-D Gaussians, each clipped to its half-open shown rectangle, as a
float32 ``(height, width)`` array and its float64 total.

Exactness: the Gaussian sum is evaluated separably, per 256×256 image tile as a
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

import numpy as np

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
