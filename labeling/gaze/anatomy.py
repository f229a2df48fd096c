"""Gaze per anatomy: dwell, fixation count, time to first fixation, sentence assignment, intense focus.

Pure (numpy only). ``masks`` maps an anatomy name (``left_lung``, ``right_lung``, ``mediastinum``,
``aortic_knob``, ``heart``, ...) to a boolean ``(height, width)`` array. Left and right are the
patient's: ``left_lung`` lies on the image's right in a PA radiograph, and "left" in a sentence means it.

A fixation is inside a mask when its pixel ``(int(y), int(x))`` is (fixations with ``inside`` False or
off the image are inside none). Dwell is the sum of the durations (``end - start``) of the fixations
inside; time to first fixation is the earliest ``start`` among them (seconds from the start of the
dictation; ``None`` if never looked at).

Sentence assignment (the ``anatomy`` region set; FG-CXR's seven regions are matched by
``labeling.gaze.regions``) combines what was said with where the reader looked while saying it: the
anatomies a sentence names (``ANATOMY_WORDS``; "lungs", "bilateral", "bibasilar" name both lungs) get it;
a sentence that names none goes to the anatomy holding the largest share of its gaze time (fixation
time clipped to the sentence window ``[start - lead, end]``) when that share is at least ``min_share``.

Intense focus (I-AI): the heatmap as an 8-bit grayscale image (scaled by its maximum), then the pixels
above the ``percentile``-th percentile (numpy's linear interpolation) of its distinct values, 0 included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# Mask names that stand for the same organ in different sources (EGD-CXR's mediastinum mask holds the heart).
HEART_MASKS = ("heart", "mediastinum")
_SIDE_NOUNS = (
    r"lungs?|lobes?|bases?|basilar|basal|apex|apices|apical|hemithorax|hemidiaphragm|costophrenic|pleural|"
    r"perihilar|hilum|hilar|midlung|mid lung|mid-lung|chest|effusions?|pneumothorax|side|lateral"
)
ANATOMY_WORDS: dict[str, re.Pattern[str]] = {
    "left_lung": re.compile(rf"\bleft\b(?:[\s-]+\w+){{0,3}}?[\s-]+(?:{_SIDE_NOUNS})\b|\blingula", re.I),
    "right_lung": re.compile(rf"\bright\b(?:[\s-]+\w+){{0,3}}?[\s-]+(?:{_SIDE_NOUNS})\b", re.I),
    "both_lungs": re.compile(
        r"\b(?:lungs|bilateral(?:ly)?|bibasilar|bibasal|both\s+(?:lungs|bases|sides|hemithoraces)|"
        r"pulmonary\s+(?:vascular|edema|vasculature|congestion)|interstitial)\b",
        re.I,
    ),
    "heart": re.compile(r"\b(?:heart|cardiac|cardio\w*|pericardi\w*|cardiomegaly)\b", re.I),
    "mediastinum": re.compile(r"\b(?:mediastin\w*|cardiomediastinal|trachea\w*|paratracheal)\b", re.I),
    "aortic_knob": re.compile(r"\b(?:aort\w*|knob)\b", re.I),
}


@dataclass
class AnatomyGaze:
    dwell_s: float
    fixation_count: int
    time_to_first_s: float | None
    dwell_share: float  # of all fixation time on the image


def fixation_pixels(fixations: dict, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, on_image)`` of each fixation: its pixel and whether it lies on the image."""
    x = np.asarray(fixations.get("x", []), dtype=np.float64)
    y = np.asarray(fixations.get("y", []), dtype=np.float64)
    on = (x >= 0) & (y >= 0) & (x < width) & (y < height)
    inside = fixations.get("inside")
    if inside is not None:
        on &= np.asarray(inside, dtype=bool)
    cols = np.where(on, x, 0).astype(np.int64)
    rows = np.where(on, y, 0).astype(np.int64)
    return rows, cols, on


def anatomy_gaze(
    fixations: dict, masks: dict[str, np.ndarray], width: int, height: int
) -> dict[str, AnatomyGaze]:
    """Dwell, count, time to first fixation and dwell share per mask (module docstring)."""
    start = np.asarray(fixations.get("start", []), dtype=np.float64)
    duration = np.clip(np.asarray(fixations.get("end", []), dtype=np.float64) - start, 0.0, None)
    rows, cols, on = fixation_pixels(fixations, width, height)
    total = float(duration[on].sum())
    out = {}
    for name, mask in masks.items():
        hit = on & mask[rows, cols]
        dwell = float(duration[hit].sum())
        out[name] = AnatomyGaze(
            dwell_s=dwell,
            fixation_count=int(hit.sum()),
            time_to_first_s=float(start[hit].min()) if hit.any() else None,
            dwell_share=dwell / total if total > 0 else 0.0,
        )
    return out


def gaze_shares(
    fixations: dict, masks: dict[str, np.ndarray], width: int, height: int, start: float, end: float
) -> dict[str, float]:
    """Share of the on-image fixation time within ``[start, end]`` that falls inside each mask."""
    s = np.asarray(fixations.get("start", []), dtype=np.float64)
    e = np.asarray(fixations.get("end", []), dtype=np.float64)
    overlap = np.clip(np.minimum(e, end) - np.maximum(s, start), 0.0, None)
    rows, cols, on = fixation_pixels(fixations, width, height)
    overlap = np.where(on, overlap, 0.0)
    total = float(overlap.sum())
    if total <= 0:
        return dict.fromkeys(masks, 0.0)
    return {name: float(overlap[mask[rows, cols]].sum()) / total for name, mask in masks.items()}


def named_anatomies(text: str, available: list[str] | tuple[str, ...]) -> list[str]:
    """The available mask names that ``text`` talks about (``ANATOMY_WORDS``)."""
    found: set[str] = set()
    for name, pattern in ANATOMY_WORDS.items():
        if pattern.search(text):
            if name == "both_lungs":
                found.update({"left_lung", "right_lung"})
            elif name == "heart":
                found.update(HEART_MASKS)
            else:
                found.add(name)
    # "left lung" also matches the side nouns of "left ... heart border": keep what exists.
    return [name for name in available if name in found]


def assign(text: str, shares: dict[str, float], *, min_share: float) -> tuple[list[str], str]:
    """The anatomies a sentence belongs to and why (``"words"`` or ``"gaze"``, ``""`` if none)."""
    named = named_anatomies(text, list(shares))
    if named:
        return named, "words"
    if shares:
        best = max(shares, key=lambda name: shares[name])
        if shares[best] >= min_share:
            return [best], "gaze"
    return [], ""


def to_uint8(heatmap: np.ndarray) -> np.ndarray:
    """The heatmap as an 8-bit grayscale image scaled by its maximum (all zero stays all zero)."""
    peak = float(heatmap.max()) if heatmap.size else 0.0
    if peak <= 0:
        return np.zeros(heatmap.shape, dtype=np.uint8)
    dtype = np.float64 if heatmap.dtype == np.float64 else np.float32
    scaled = np.multiply(heatmap, 255.0 / peak, dtype=dtype)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def distinct_values(image: np.ndarray) -> np.ndarray:
    """The distinct values of a uint8 image, ascending (bincount in chunks: no int64 copy of the image)."""
    flat = image.reshape(-1)
    counts = np.zeros(256, dtype=np.int64)
    for i in range(0, flat.size, 1 << 20):
        counts += np.bincount(flat[i : i + (1 << 20)], minlength=256)
    return np.flatnonzero(counts)


def intense_focus(heatmap: np.ndarray, percentile: float = 20.0) -> np.ndarray:
    """I-AI's intense-focus mask of a float heatmap (module docstring): boolean ``(height, width)``."""
    image = to_uint8(heatmap)
    threshold = float(np.percentile(distinct_values(image), percentile))
    return image > threshold


def box_of(mask: np.ndarray) -> list[int] | None:
    """``[xmin, ymin, xmax, ymax]`` (pixels, max exclusive) around a mask; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def merge_windows(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching time windows merged, in order."""
    out: list[list[float]] = []
    for start, end in sorted(windows):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def clip_to_windows(fixations: dict, windows: list[tuple[float, float]]) -> dict:
    """The fixations' parts inside the (merged) windows, as a new columnar dict: a fixation that overlaps
    two windows appears twice, each part with its clipped ``start``/``end`` (so duration weights add up to
    its time inside the windows); other columns are copied."""
    start = np.asarray(fixations.get("start", []), dtype=np.float64)
    end = np.asarray(fixations.get("end", []), dtype=np.float64)
    picks, starts, ends = [], [], []
    for a, b in merge_windows(windows):
        keep = np.flatnonzero(
            (np.minimum(end, b) - np.maximum(start, a) > 0) | ((start == end) & (start >= a) & (start <= b))
        )
        picks.append(keep)
        starts.append(np.maximum(start[keep], a))
        ends.append(np.minimum(end[keep], b))
    index = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
    out: dict = {}
    for key, values in fixations.items():
        if isinstance(values, list) and len(values) == len(start):
            out[key] = [values[i] for i in index]
    out["start"] = (np.concatenate(starts) if starts else np.zeros(0)).tolist()
    out["end"] = (np.concatenate(ends) if ends else np.zeros(0)).tolist()
    return out
