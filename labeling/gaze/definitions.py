"""The choosable parts of a gaze-label definition (``GazeParams``, ``labeling.gaze.presets``): sentence
windows, intense focus and dwell time. Pure (numpy, Pillow).

- Sentence window (``window_cap``): ``none``: ``[start - lead_s, end]``; ``previous_start`` (the REFLACX
  authors'): the start is at the latest the previous sentence's start, 0 for the first sentence,
  ``[max(start - lead_s, previous start), end]``.
- Intense focus (``focus``): ``percentile``: the pixels of the 8-bit map (``anatomy.to_uint8``) above the
  ``percentile``-th percentile (linear interpolation) of its distinct values; ``iai``: I-AI's, the 8-bit
  map resized first to ``focus_resize`` × ``focus_resize`` px with PIL's bilinear filter when set, its
  distinct values sorted, the threshold the value at index ``len(unique) // 5``, the mask the pixels above
  it; with a resize, that mask (at the model's input size, exactly I-AI's) is brought back to the image
  size by nearest-neighbour sampling.
- Dwell (``dwell``): ``platform``: the summed durations of the fixations whose pixel is in the mask
  (``anatomy.anatomy_gaze``); ``egd``: EGD-CXR's ``validation.py`` (lines 81-111): every fixations.csv row
  of the image (FPOGV 0 included) gets the time since the row above (``Time (in secs)`` difference, the
  first row its own time) and counts where its X_ORIGINAL/Y_ORIGINAL pixel (``heatmaps.egd_row_pixels``)
  lies in the mask; the fixation count is the number of such rows. A recording without those rows
  (REFLACX) uses its fixations in order with ``end`` as the row time. Time to first fixation stays the
  platform's either way.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from labeling.gaze import anatomy as an
from labeling.gaze.heatmaps import egd_row_pixels

WINDOW_CAPS = ("none", "previous_start")
FOCUS = ("percentile", "iai")
DWELL = ("platform", "egd")


def sentence_windows(spans: list[tuple[float, float]], lead_s: float, cap: str) -> list[tuple[float, float]]:
    """The gaze window of each sentence, from the sentences' ``(start, end)`` in order."""
    if cap not in WINDOW_CAPS:
        raise ValueError(f"window_cap: {cap!r} is not one of {', '.join(WINDOW_CAPS)}")
    out = []
    previous = 0.0
    for start, end in spans:
        begin = start - lead_s
        if cap == "previous_start":
            begin = max(begin, previous)
        out.append((begin, end))
        previous = start
    return out


def iai_focus(heatmap: np.ndarray, resize: int | None = None, *, at_input: bool = False) -> np.ndarray:
    """I-AI's intense-focus mask (module docstring): boolean, image size, or the model input size when
    ``at_input`` (with ``resize``)."""
    image = an.to_uint8(heatmap)
    if resize:
        image = np.asarray(Image.fromarray(image).resize((resize, resize), Image.Resampling.BILINEAR))
    distinct = an.distinct_values(image)
    mask = image > distinct[len(distinct) // 5]
    if not resize or at_input:
        return mask
    height, width = heatmap.shape
    back = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(back) > 127


def focus_mask(heatmap: np.ndarray, focus: str, percentile: float, resize: int | None) -> np.ndarray:
    """The intense-focus mask of a heatmap by the chosen definition (module docstring)."""
    if focus == "iai":
        return iai_focus(heatmap, resize)
    if focus != "percentile":
        raise ValueError(f"focus: {focus!r} is not one of {', '.join(FOCUS)}")
    if resize:
        raise ValueError("focus_resize: only for focus iai")
    return an.intense_focus(heatmap, percentile)


def egd_dwell(
    fixations: dict, masks: dict[str, np.ndarray], width: int, height: int, pad_even: bool = True
) -> dict[str, tuple[float, int, float]]:
    """Per mask, EGD-CXR's ``(dwell_s, row count, dwell share)`` (module docstring); the share is of the
    time of all rows whose pixel lies on the image."""
    rows = fixations.get("egd_rows")
    if rows:
        times = np.array([np.nan if v is None else v for v in rows["time"]], dtype=np.float64)
        px, py, _ = egd_row_pixels(rows, width, height, pad_even)
    else:  # the analogue for recordings without fixations.csv rows: fixation ends as row times
        times = np.asarray(fixations.get("end", []), dtype=np.float64)
        px = np.trunc(np.asarray(fixations.get("x", []), dtype=np.float64)).astype(np.int64)
        py = np.trunc(np.asarray(fixations.get("y", []), dtype=np.float64)).astype(np.int64)
        inside = fixations.get("inside")
        if inside is not None:
            off = ~np.asarray(inside, dtype=bool)
            px, py = np.where(off, -1, px), np.where(off, -1, py)
    step = np.diff(times, prepend=0.0)
    step = np.where(np.isfinite(step), step, 0.0)  # a NaN time: NaN in the script's sums; nothing here
    on = (px >= 0) & (py >= 0) & (px < width) & (py < height)
    rows_at, cols_at = np.where(on, py, 0), np.where(on, px, 0)
    total = float(step[on].sum())
    out = {}
    for name, mask in masks.items():
        hit = on & mask[rows_at, cols_at]
        dwell = float(step[hit].sum())
        out[name] = (dwell, int(hit.sum()), dwell / total if total > 0 else 0.0)
    return out
