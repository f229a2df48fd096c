"""Reading the columnar fixations of a recording for the heatmap functions: counts, numeric columns,
shown rectangles and time-window weights, each problem a ValueError that names the column."""

from __future__ import annotations

from typing import Any

import numpy as np


def fixation_count(fixations: Any) -> int:
    if not isinstance(fixations, dict):
        raise ValueError(f"fixations: expected a columnar dict, got {type(fixations).__name__}")
    for name in ("start", "end", "x", "y"):
        if name not in fixations:
            raise ValueError(f"{name}: fixations column is missing")
    return len(fixations["x"])


def column(fixations: dict, name: str, n: int) -> np.ndarray:
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


def shown_rects(fixations: dict, n: int, width: int, height: int) -> np.ndarray:
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


def window_weights(
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
