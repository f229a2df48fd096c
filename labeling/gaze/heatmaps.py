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

Exactness (reflacx and custom): the Gaussian sum is ``labeling.gaze.gaussian_sum.gaussian_sum``; every
pixel whose value is a normal float32 is within 1e-5 relative of the exact map (that module's docstring,
"Exactness").
"""

from __future__ import annotations

import math

import numpy as np

from labeling.gaze.columns import column, fixation_count, shown_rects, window_weights
from labeling.gaze.gaussian_sum import gaussian_sum

METHODS = ("reflacx", "egd", "custom")
NORMALISE = ("sum", "max", "none")
EGD_FPOGV = ("all", "valid")
EGD_SIGMA = 150.0


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
