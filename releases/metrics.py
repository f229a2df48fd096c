"""ReXGroundingCT-style grounding metrics for dataset cards: proposals (model or weak masks) against the
accepted (human) masks of the same findings. Pure numpy/scipy, no torch.

Inputs are boolean masks on one grid: ``(X, Y, Z)`` for CT (the platform's canonical NIfTI order) or
``(rows, columns)`` for radiographs; ``spacing`` is in mm **in the same axis order as the mask** (for a
2D ``(rows, columns)`` mask pass ``(spacing_y, spacing_x)``).

Metrics (``formats.md``, "ReXGroundingCT" > Metrics), per finding of a case:

- **Dice** ``2|P∩T| / (|P|+|T|)``. An empty prediction against a non-empty truth scores 0.0; two empty
  masks score 1.0 (nothing to find, nothing found). ReXGroundingCT only evaluates positive findings, so
  its truth masks are never empty; the 1.0 only matters for callers that pass empty truths.
- **Hit**: Dice ≥ 0.1; the hit rate is the share of findings that hit.
- **Instances** are connected components of each finding's mask (full connectivity: 26 in 3D, 8 in 2D).
  A predicted and a true instance match one-to-one (Hungarian assignment that first maximises the number
  of matches, then their Dice) when their Dice is ≥ 0.2: a match is a true positive, an unmatched
  prediction a false positive, an unmatched truth a false negative.
- **Distance matches**, threshold ``2 × max(spacing)`` mm. Focal findings (category ``2a``…``2h``, and
  any finding whose category does not start with ``1``, e.g. radiograph labels without a category) are
  matched instance by instance on centroid distance (mm), one-to-one as above. Non-focal findings
  (``1a``…``1f``: diffuse patterns that fall apart into arbitrary components) are scored as one unit: the
  average symmetric surface distance (ASSD, mm) between the whole predicted and the whole true mask; within
  the threshold → one TP, otherwise one FN (plus one FP when something was predicted).

Precision/recall/F1 are 0.0 when their denominator is 0 (sklearn's ``zero_division=0``). ``aggregate``
pools cases: mean Dice and hit rate over all findings of all cases (ReXGroundingCT's "global" figures),
instance and distance P/R/F1 micro-averaged over TP/FP/FN counts, plus the same per category.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

HIT_THRESHOLD = 0.1
INSTANCE_DICE_THRESHOLD = 0.2

__all__ = [
    "HIT_THRESHOLD",
    "INSTANCE_DICE_THRESHOLD",
    "aggregate",
    "assd",
    "case_metrics",
    "centroid_matches",
    "dice",
    "finding_dices",
    "hit_rate",
    "instance_matches",
    "instances",
    "is_focal",
    "prf",
]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks of one shape (non-zero = inside). Both empty → 1.0; one empty → 0.0."""
    a, b = _bool(a), _bool(b)
    _same_shape(a, b)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def finding_dices(pred_masks: Sequence[np.ndarray | None], true_masks: Sequence[np.ndarray]) -> list[float]:
    """Dice of each finding: ``pred_masks[i]`` against ``true_masks[i]``; a missing prediction (None) is an
    empty one."""
    if len(pred_masks) != len(true_masks):
        raise ValueError(f"{len(pred_masks)} predicted masks for {len(true_masks)} findings")
    return [dice(_or_empty(p, t), t) for p, t in zip(pred_masks, true_masks)]


def hit_rate(dices: Sequence[float], threshold: float = HIT_THRESHOLD) -> float | None:
    """Share of findings with Dice ≥ ``threshold``; None when there are no findings."""
    if len(dices) == 0:
        return None
    return sum(1 for d in dices if d >= threshold) / len(dices)


def prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    """Precision, recall and F1 from counts (0.0 where a denominator is 0), with the counts."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def is_focal(category: str) -> bool:
    """Category ``1x`` is non-focal; everything else (``2x``, empty, unknown) is treated as focal."""
    return not str(category or "").startswith("1")


def instances(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity (26 in 3D, 8 in 2D): (labels 1..n, n)."""
    mask = _bool(mask)
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labels, n = ndimage.label(mask, structure=structure)
    return labels, int(n)


def instance_matches(
    pred: np.ndarray, true: np.ndarray, threshold: float = INSTANCE_DICE_THRESHOLD
) -> dict[str, int]:
    """One-to-one instance matching at Dice ≥ ``threshold``: ``{"tp", "fp", "fn"}``."""
    pred, true = _bool(pred), _bool(true)
    _same_shape(pred, true)
    pred, true = _crop(pred, true)
    p_lab, n_p = instances(pred)
    t_lab, n_t = instances(true)
    if n_p == 0 or n_t == 0:
        return {"tp": 0, "fp": n_p, "fn": n_t}
    p_size = np.bincount(p_lab.ravel(), minlength=n_p + 1)[1:]
    t_size = np.bincount(t_lab.ravel(), minlength=n_t + 1)[1:]
    both = (p_lab > 0) & (t_lab > 0)
    pairs = (p_lab[both].astype(np.int64) - 1) * n_t + (t_lab[both].astype(np.int64) - 1)
    overlap = np.bincount(pairs, minlength=n_p * n_t).reshape(n_p, n_t)
    dices = 2.0 * overlap / (p_size[:, None] + t_size[None, :])
    tp = _assign(dices >= threshold, dices)
    return {"tp": tp, "fp": n_p - tp, "fn": n_t - tp}


def centroid_matches(
    pred: np.ndarray, true: np.ndarray, spacing: Sequence[float], threshold_mm: float | None = None
) -> dict[str, int]:
    """One-to-one instance matching on centroid distance (mm) ≤ ``threshold_mm`` (default 2 × the largest
    spacing): ``{"tp", "fp", "fn"}``."""
    pred, true = _bool(pred), _bool(true)
    _same_shape(pred, true)
    spacing = _spacing(spacing, pred.ndim)
    threshold_mm = 2.0 * max(spacing) if threshold_mm is None else threshold_mm
    p_c, t_c = _centroids(pred, spacing), _centroids(true, spacing)
    if len(p_c) == 0 or len(t_c) == 0:
        return {"tp": 0, "fp": len(p_c), "fn": len(t_c)}
    dist = cdist(p_c, t_c)
    closeness = 1.0 - dist / (dist.max() + 1.0)  # tie-break: among equal counts prefer nearer pairs
    tp = _assign(dist <= threshold_mm, closeness)
    return {"tp": tp, "fp": len(p_c) - tp, "fn": len(t_c) - tp}


def assd(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm between two non-empty masks; ``inf`` when one is empty.

    Surface voxels are mask voxels with a face neighbour outside (voxels on the array border count as
    surface). ASSD = (Σ d(s, ∂B) over s ∈ ∂A + Σ d(s, ∂A) over s ∈ ∂B) / (|∂A| + |∂B|)."""
    a, b = _bool(a), _bool(b)
    _same_shape(a, b)
    spacing = _spacing(spacing, a.ndim)
    if not a.any() or not b.any():
        return 0.0 if not a.any() and not b.any() else float("inf")
    a, b = _crop(a, b)
    sa, sb = _surface(a), _surface(b)
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    total = float(to_b[sa].sum()) + float(to_a[sb].sum())
    return total / (int(sa.sum()) + int(sb.sum()))


def case_metrics(
    pred_masks: Mapping[str, np.ndarray | None] | Sequence[np.ndarray | None],
    true_masks: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    spacing: Sequence[float],
    categories: Mapping[str, str] | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of one case.

    ``true_masks``: the accepted mask of each finding, keyed by finding id (a mapping) or by position (a
    sequence); ``pred_masks`` the proposal for the same findings (same keys/positions; a missing key or
    None = nothing predicted); ``categories`` the ReXGroundingCT category of each finding (``""`` or
    missing = focal). Returns ``{"findings": [per finding: finding, category, focal, dice, hit,
    true_instances, pred_instances, instance {tp, fp, fn}, distance {tp, fp, fn}, assd_mm (non-focal)],
    "dice_mean", "hit_rate", "instance" {tp, fp, fn, precision, recall, f1}, "distance" {...},
    "distance_threshold_mm"}``."""
    keys, truths = _keyed(true_masks)
    preds = _lookup(pred_masks, keys)
    cats = _lookup(categories, keys) if categories is not None else [""] * len(keys)
    spacing = [float(s) for s in spacing]
    threshold_mm = 2.0 * max(spacing)
    findings = []
    for key, pred, true, category in zip(keys, preds, truths, cats):
        true = _bool(true)
        pred = _or_empty(pred, true)
        _same_shape(pred, true)
        pred, true = _crop(pred, true)  # every metric below is unchanged by the crop, and much cheaper
        spacing_nd = _spacing(spacing, true.ndim)
        d = dice(pred, true)
        focal = is_focal(category or "")
        item: dict[str, Any] = {
            "finding": key,
            "category": category or "",
            "focal": focal,
            "dice": d,
            "hit": d >= HIT_THRESHOLD,
            "true_instances": instances(true)[1],
            "pred_instances": instances(pred)[1],
            "instance": instance_matches(pred, true),
        }
        if focal:
            item["distance"] = centroid_matches(pred, true, spacing_nd, threshold_mm)
        else:
            item["assd_mm"] = distance = assd(pred, true, spacing_nd) if true.any() else None
            if distance is None:  # empty truth: a prediction is a false positive, nothing is a miss
                item["distance"] = {"tp": 0, "fp": int(pred.any()), "fn": 0}
            elif distance <= threshold_mm:
                item["distance"] = {"tp": 1, "fp": 0, "fn": 0}
            else:
                item["distance"] = {"tp": 0, "fp": int(pred.any()), "fn": 1}
        findings.append(item)
    return _summarise(findings) | {"findings": findings, "distance_threshold_mm": threshold_mm}


def aggregate(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pool ``case_metrics`` results: ``{"cases", "findings", "dice_mean", "hit_rate", "instance",
    "distance", "by_category": {category: same keys}}`` (means over findings, P/R/F1 micro over counts)."""
    findings = [f for case in cases for f in case["findings"]]
    by_category: dict[str, list[Mapping[str, Any]]] = {}
    for f in findings:
        by_category.setdefault(f["category"] or "", []).append(f)
    out = {"cases": len(cases)} | _summarise(findings)
    out["by_category"] = {c: _summarise(fs) for c, fs in sorted(by_category.items())}
    return out


# -- helpers ------------------------------------------------------------------------------------------


def _summarise(findings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    dices = [f["dice"] for f in findings]
    out: dict[str, Any] = {
        "findings": len(findings),
        "dice_mean": float(np.mean(dices)) if dices else None,
        "hit_rate": hit_rate(dices),
    }
    for part in ("instance", "distance"):
        counts = [sum(int(f[part][k]) for f in findings) for k in ("tp", "fp", "fn")]
        out[part] = prf(*counts)
    return out


def _assign(eligible: np.ndarray, score: np.ndarray) -> int:
    """Most one-to-one pairs among ``eligible``; among equally many, the highest total ``score`` (in
    [0, 1]). Returns the number of pairs."""
    if not eligible.any():
        return 0
    big = min(eligible.shape) + 1.0  # one more pair always outweighs any score difference
    weight = np.where(eligible, big + np.clip(score, 0.0, 1.0), 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return int(eligible[rows, cols].sum())


def _centroids(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    labels, n = instances(mask)
    if n == 0:
        return np.zeros((0, mask.ndim))
    centres = ndimage.center_of_mass(mask, labels, index=np.arange(1, n + 1))
    return np.asarray(centres, dtype=float).reshape(n, mask.ndim) * np.asarray(spacing, dtype=float)


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union plus one voxel (clipped to the array): components,
    surfaces and distances inside are the same as on the full grid, at a fraction of the cost."""
    union = a | b
    if not union.any():
        return a, b
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, union.shape[axis])))
    return a[tuple(box)], b[tuple(box)]


def _bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask != 0


def _or_empty(pred: np.ndarray | None, true: np.ndarray) -> np.ndarray:
    return np.zeros(np.shape(true), dtype=bool) if pred is None else _bool(pred)


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")


def _spacing(spacing: Sequence[float], ndim: int) -> list[float]:
    spacing = [float(s) for s in spacing]
    if len(spacing) < ndim:
        raise ValueError(f"spacing {spacing} has fewer than {ndim} axes")
    return spacing[:ndim]


def _keyed(masks: Mapping[str, Any] | Sequence[Any]) -> tuple[list[str], list[Any]]:
    if isinstance(masks, Mapping):
        return [str(k) for k in masks], list(masks.values())
    return [str(i) for i in range(len(masks))], list(masks)


def _lookup(values: Mapping[str, Any] | Sequence[Any] | None, keys: list[str]) -> list[Any]:
    if values is None:
        return [None] * len(keys)
    if isinstance(values, Mapping):
        unknown = set(map(str, values)) - set(keys)
        if unknown:
            raise ValueError(f"entries for unknown findings: {sorted(unknown)}")
        by_key = {str(k): v for k, v in values.items()}
        return [by_key.get(k) for k in keys]
    if len(values) != len(keys):
        raise ValueError(f"{len(values)} entries for {len(keys)} findings")
    return list(values)
