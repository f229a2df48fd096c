"""Agreement between readers and consensus of their segmentations (pure numpy, no database, no torch).

Conventions shared by every function here:

* A *mask* is a binary array of any dimension (for volumes ``(H, W, D)`` or whatever axis order the caller
  uses: nothing here depends on axis order or voxel spacing, all measures are voxel counts). ``bool`` arrays
  are used as they are; integer or float arrays are accepted when every value is 0 or 1.
* All masks compared or combined must have the same shape; they are never resampled or cropped.
* Bad input raises ``ValueError`` whose message starts with the offending argument (``a``, ``b``,
  ``masks``, ``masks['alice']``, ``ratings[3]``, ``tie``, ``prior`` ...).
* For speed on large volumes the work is done inside the bounding box of the union of the masks (voxels
  outside it are 0 for every reader) and voxels are counted with ``np.count_nonzero``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import Literal

import numpy as np

__all__ = [
    "cohen_kappa",
    "dice",
    "fleiss_kappa",
    "iou",
    "majority_vote",
    "pairwise",
    "per_reader",
    "staple",
]

Metric = Literal["dice", "iou"]
_METRICS = ("dice", "iou")
# Largest number of readers STAPLE handles: vote patterns are packed into a uint64 code.
_MAX_STAPLE_READERS = 64


# --------------------------------------------------------------------------------------------- validation


def _binary(x: object, name: str) -> np.ndarray:
    """``x`` as a bool array; ValueError naming ``name`` when it is empty or not binary."""
    arr = np.asarray(x)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a binary mask (bool, or numbers 0/1), got dtype {arr.dtype}")
    if not np.all((arr == 0) | (arr == 1)):
        bad = arr[(arr != 0) & (arr != 1)].flat[0]
        raise ValueError(f"{name} must be a binary mask (only 0 and 1), found value {bad!r}")
    return arr != 0


def _same_shape(arr: np.ndarray, name: str, ref: np.ndarray, ref_name: str) -> None:
    if arr.shape != ref.shape:
        raise ValueError(f"{name} has shape {arr.shape} but {ref_name} has shape {ref.shape}")


def _mask_list(masks: Sequence[object], name: str = "masks") -> list[np.ndarray]:
    """Validate a sequence of at least two binary masks of one shape."""
    if isinstance(masks, np.ndarray) and masks.ndim >= 1:
        masks = list(masks)  # a stacked (R, ...) array: one reader per leading index
    if isinstance(masks, Mapping) or not isinstance(masks, Sequence):
        raise ValueError(f"{name} must be a sequence of masks, got {type(masks).__name__}")
    if len(masks) < 2:
        raise ValueError(f"{name} needs at least 2 readers, got {len(masks)}")
    out = [_binary(m, f"{name}[{i}]") for i, m in enumerate(masks)]
    for i, m in enumerate(out[1:], start=1):
        _same_shape(m, f"{name}[{i}]", out[0], f"{name}[0]")
    return out


def _mask_dict(masks: Mapping[str, object], name: str = "masks") -> dict[str, np.ndarray]:
    """Validate a reader -> mask mapping with at least two readers of one shape."""
    if not isinstance(masks, Mapping):
        raise ValueError(f"{name} must be a mapping reader -> mask, got {type(masks).__name__}")
    if len(masks) < 2:
        raise ValueError(f"{name} needs at least 2 readers, got {len(masks)}")
    out = {reader: _binary(m, f"{name}[{reader!r}]") for reader, m in masks.items()}
    first = next(iter(out))
    for reader, m in out.items():
        _same_shape(m, f"{name}[{reader!r}]", out[first], f"{name}[{first!r}]")
    return out


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")


# ----------------------------------------------------------------------------------------- bounding boxes


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the True voxels of ``mask`` (None when it has none).

    Each axis is searched inside the box already found for the previous axes, so only the first
    projection reads the whole array.
    """
    box: list[slice] = [slice(None)] * mask.ndim
    for axis in range(mask.ndim):
        sub = mask[tuple(box)]
        other = tuple(ax for ax in range(mask.ndim) if ax != axis)
        hits = np.flatnonzero(sub.any(axis=other) if other else sub)
        if hits.size == 0:
            return None
        start = (box[axis].start or 0) + int(hits[0])
        box[axis] = slice(start, start + int(hits[-1] - hits[0]) + 1)
    return tuple(box)


def _union_bbox(masks: Sequence[np.ndarray]) -> tuple[slice, ...] | None:
    """Bounding box of the union of ``masks`` (the hull of their boxes); None when all are empty."""
    boxes = [b for b in (_bbox(m) for m in masks) if b is not None]
    if not boxes:
        return None
    return tuple(
        slice(min(b[ax].start for b in boxes), max(b[ax].stop for b in boxes)) for ax in range(len(boxes[0]))
    )


# ------------------------------------------------------------------------------------------- overlaps


def _overlap(
    a: np.ndarray, b: np.ndarray, metric: str, na: int | None = None, nb: int | None = None
) -> float:
    """Dice or IoU of two validated bool masks of one shape; both empty -> 1.0."""
    na = int(np.count_nonzero(a)) if na is None else na
    nb = int(np.count_nonzero(b)) if nb is None else nb
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    box = _union_bbox([a, b])
    assert box is not None
    inter = int(np.count_nonzero(np.logical_and(a[box], b[box])))
    if metric == "dice":
        return 2.0 * inter / (na + nb)
    return inter / (na + nb - inter)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)`` of two binary masks of the same shape (any dimension).

    Convention: two empty masks agree perfectly, ``dice(empty, empty) == 1.0``; one empty and one not
    gives 0.0. Raises ValueError naming ``a`` or ``b`` when a mask is empty (size 0), not binary, or the
    shapes differ.
    """
    a_ = _binary(a, "a")
    b_ = _binary(b, "b")
    _same_shape(b_, "b", a_, "a")
    return _overlap(a_, b_, "dice")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union (Jaccard) ``|A∩B| / |A∪B|`` of two binary masks of the same shape.

    Convention: two empty masks agree perfectly, ``iou(empty, empty) == 1.0``. Same validation as
    :func:`dice`. Note ``iou = dice / (2 - dice)``.
    """
    a_ = _binary(a, "a")
    b_ = _binary(b, "b")
    _same_shape(b_, "b", a_, "a")
    return _overlap(a_, b_, "iou")


def pairwise(masks: Mapping[str, np.ndarray], metric: Metric = "dice") -> dict[tuple[str, str], float]:
    """Agreement (``"dice"`` or ``"iou"``) of every pair of readers.

    ``masks`` maps reader name -> binary mask, all of one shape, at least two readers. Keys of the result
    are ``(reader_i, reader_j)`` with ``i < j`` in the mapping's order (each unordered pair once; the
    measures are symmetric). Two empty masks score 1.0 (see :func:`dice`).
    """
    _check_metric(metric)
    checked = _mask_dict(masks)
    counts = {reader: int(np.count_nonzero(m)) for reader, m in checked.items()}
    return {
        (r1, r2): _overlap(checked[r1], checked[r2], metric, counts[r1], counts[r2])
        for r1, r2 in combinations(checked, 2)
    }


def per_reader(masks: Mapping[str, np.ndarray], metric: Metric = "dice") -> dict[str, float]:
    """Each reader's mean agreement (``"dice"`` or ``"iou"``) with every other reader.

    Same input as :func:`pairwise`; the result has one entry per reader, in the mapping's order.
    """
    pairs = pairwise(masks, metric)
    totals = dict.fromkeys(masks, 0.0)
    for (r1, r2), value in pairs.items():
        totals[r1] += value
        totals[r2] += value
    others = len(totals) - 1
    return {reader: total / others for reader, total in totals.items()}


# ---------------------------------------------------------------------------------------------- kappas


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Unweighted Cohen's kappa of two readers: ``(p_o - p_e) / (1 - p_e)``.

    ``a[i]`` and ``b[i]`` are the labels the two readers gave item ``i`` (any hashable labels, compared
    with ``==``; categories are the union of labels seen). ``p_o`` is the observed fraction of items with
    equal labels, ``p_e`` the agreement expected from each reader's own label frequencies. Equals
    ``sklearn.metrics.cohen_kappa_score``, except the degenerate case where both readers give every item
    the same single label (``p_e == 1``): sklearn returns NaN, this returns 1.0 (perfect agreement).
    Raises ValueError naming ``a`` when it is empty, ``b`` when its length differs.
    """
    if len(a) == 0:
        raise ValueError("a is empty: need at least one rated item")
    if len(b) != len(a):
        raise ValueError(f"b has {len(b)} labels but a has {len(a)}: each item needs a label from both")
    index: dict[Hashable, int] = {}
    for label in (*a, *b):
        index.setdefault(label, len(index))
    ia = np.fromiter((index[x] for x in a), dtype=np.intp, count=len(a))
    ib = np.fromiter((index[x] for x in b), dtype=np.intp, count=len(b))
    n = len(a)
    p_o = np.count_nonzero(ia == ib) / n
    k = len(index)
    p_e = float(np.dot(np.bincount(ia, minlength=k), np.bincount(ib, minlength=k))) / (n * n)
    if p_e == 1.0:
        return 1.0
    return float((p_o - p_e) / (1.0 - p_e))


def _fleiss_from_counts(counts: np.ndarray) -> float:
    """Fleiss' kappa from an ``(items, categories)`` table of how many readers chose each category."""
    n_items = counts.shape[0]
    n = int(counts[0].sum())
    p_i = (np.square(counts).sum(axis=1) - n) / (n * (n - 1))
    p_bar = float(p_i.mean())
    p_j = counts.sum(axis=0) / (n_items * n)
    p_e = float(np.square(p_j).sum())
    if p_e == 1.0:
        return 1.0
    return (p_bar - p_e) / (1.0 - p_e)


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float:
    """Fleiss' kappa for a fixed number of readers per item (Fleiss 1971).

    ``ratings[i]`` is the list of labels the readers gave item ``i`` (order within an item is irrelevant;
    the readers need not be the same people for every item, but their number must be). With ``n`` readers,
    ``P_i = (Σ_j n_ij² − n) / (n(n − 1))``, ``P̄ = mean P_i``, ``p_j`` = share of all labels in category
    ``j``, ``P̄_e = Σ p_j²`` and ``κ = (P̄ − P̄_e) / (1 − P̄_e)``. If every reader gives every item the same
    single label (``P̄_e == 1``) the result is 1.0 (perfect agreement), as in :func:`cohen_kappa`.
    Raises ValueError naming ``ratings`` when it is empty, or ``ratings[i]`` when an item has fewer than 2
    labels or a different number of labels than item 0.
    """
    if len(ratings) == 0:
        raise ValueError("ratings is empty: need at least one rated item")
    n = len(ratings[0])
    index: dict[Hashable, int] = {}
    rows: list[list[int]] = []
    for i, item in enumerate(ratings):
        if isinstance(item, str | bytes):
            raise ValueError(f"ratings[{i}] must be a list of labels, one per reader, got a string")
        if len(item) < 2:
            raise ValueError(f"ratings[{i}] needs at least 2 readers, got {len(item)}")
        if len(item) != n:
            raise ValueError(
                f"ratings[{i}] has {len(item)} labels but ratings[0] has {n}: same readers per item"
            )
        rows.append([index.setdefault(label, len(index)) for label in item])
    counts = np.zeros((len(rows), len(index)), dtype=np.int64)
    for i, row in enumerate(rows):
        counts[i] = np.bincount(row, minlength=len(index))
    return _fleiss_from_counts(counts)


# -------------------------------------------------------------------------------------------- consensus


def _vote_counts(masks: list[np.ndarray], box: tuple[slice, ...]) -> np.ndarray:
    """Per-voxel number of readers that say "in", inside ``box``."""
    dtype = np.uint8 if len(masks) < 256 else np.uint32
    counts = np.zeros(masks[0][box].shape, dtype=dtype)
    for m in masks:
        counts += m[box]
    return counts


def majority_vote(
    masks: Sequence[np.ndarray], *, tie: Literal["include", "exclude"] = "include"
) -> np.ndarray:
    """Majority-vote consensus of binary masks of one shape: a bool array of that shape.

    A voxel is in when more than half the readers mark it. With an even number of readers a voxel marked
    by exactly half of them is a tie: ``tie="include"`` puts it in (union-leaning), ``tie="exclude"``
    leaves it out. Needs at least 2 readers. ``masks`` may be a sequence of arrays or one stacked
    ``(R, ...)`` array.
    """
    if tie not in ("include", "exclude"):
        raise ValueError(f"tie must be 'include' or 'exclude', got {tie!r}")
    checked = _mask_list(masks)
    out = np.zeros(checked[0].shape, dtype=bool)
    box = _union_bbox(checked)
    if box is None:
        return out
    n = len(checked)
    counts = _vote_counts(checked, box)
    # more than half: 2·count > n; ties (2·count == n) only exist for even n
    threshold = n // 2 if (tie == "include" and n % 2 == 0) else n // 2 + 1
    out[box] = counts >= threshold
    return out


def _pattern_posterior(bits: np.ndarray, p: np.ndarray, q: np.ndarray, f: float) -> np.ndarray:
    """E-step for each vote pattern: P(truth = 1 | votes) for ``bits`` of shape ``(K, R)``."""
    a = np.prod(np.where(bits, p, 1.0 - p), axis=1) * f
    b = np.prod(np.where(bits, 1.0 - q, q), axis=1) * (1.0 - f)
    denom = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(denom > 0, a / np.where(denom > 0, denom, 1.0), f)
    return w


def staple(
    masks: Sequence[np.ndarray],
    *,
    max_iter: int = 50,
    tol: float = 1e-6,
    prior: float | None = None,
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Binary STAPLE (Warfield, Zou & Wells, IEEE TMI 2004) by expectation-maximisation.

    Input: ``R >= 2`` binary masks of one shape (sequence, or a stacked ``(R, ...)`` array). Returns
    ``(probability, params)``:

    * ``probability``: float32 array of the masks' shape, the posterior ``W = P(truth = 1 | votes)``. The
      STAPLE consensus is ``probability >= 0.5``.
    * ``params``: ``{"sensitivity": [p_0, ..., p_R-1], "specificity": [q_0, ..., q_R-1]}`` per reader, in
      input order.

    Model: truth prior ``f`` (a single global number; default: the mean of all masks, i.e. the fraction of
    "in" votes over all voxels and readers; a given ``prior`` must lie in (0, 1)). Initialisation
    ``p_j = q_j = 0.99``. E-step ``W = f·a / (f·a + (1−f)·b)`` with ``a = Π_j p_j^D_j (1−p_j)^(1−D_j)``,
    ``b = Π_j (1−q_j)^D_j q_j^(1−D_j)``; M-step ``p_j = ΣW·D_j / ΣW``, ``q_j = Σ(1−W)(1−D_j) / Σ(1−W)``.
    Iteration stops when no ``p_j``/``q_j`` moves by ``tol`` or more, or after ``max_iter`` iterations.
    Deterministic: no randomness anywhere.

    Unanimous voxels (every reader says 1, or every reader says 0 — including everything outside the
    bounding box of the union) keep their unanimous value: ``W`` is fixed to 1 or 0 there, so the map is
    exactly 1.0 / 0.0 on them and only voxels where readers disagree get a posterior. ``p`` and ``q`` are
    nevertheless sums over the *whole* image (the full array shape passed in), with unanimous voxels
    entering through their counts, so they are consistent with the returned map: cropping or padding the
    masks changes the specificities, as in the original method. Disagreeing voxels are grouped by their
    vote pattern (at most ``2^R`` distinct ones), which makes each EM step independent of image size and
    gives exactly the voxel-wise result. A parameter whose denominator is 0 (e.g. ``p`` when no voxel is
    ever "in") keeps its previous value. At most 64 readers.
    """
    checked = _mask_list(masks)
    n_readers = len(checked)
    if n_readers > _MAX_STAPLE_READERS:
        raise ValueError(f"masks: STAPLE supports at most {_MAX_STAPLE_READERS} readers, got {n_readers}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if prior is not None and not (0.0 < prior < 1.0):
        raise ValueError(f"prior must lie strictly between 0 and 1, got {prior!r}")

    shape = checked[0].shape
    total = int(np.prod(shape, dtype=np.int64))
    p = np.full(n_readers, 0.99)
    q = np.full(n_readers, 0.99)
    prob = np.zeros(shape, dtype=np.float32)
    box = _union_bbox(checked)
    if box is None:  # every reader says 0 everywhere: unanimous, no foreground to estimate p from
        return prob, {"sensitivity": p.tolist(), "specificity": [1.0] * n_readers}

    # Pack each voxel's votes into an integer code (bit j = reader j) inside the union's box.
    code_dtype = np.uint8 if n_readers <= 8 else np.uint16 if n_readers <= 16 else np.uint64
    codes = np.zeros(checked[0][box].shape, dtype=code_dtype)
    for j, m in enumerate(checked):
        np.bitwise_or(codes, code_dtype(1 << j), out=codes, where=m[box])
    full = (1 << n_readers) - 1
    if n_readers <= 16:
        pattern_counts = np.bincount(codes.ravel(), minlength=1 << n_readers)
        patterns = np.flatnonzero(pattern_counts).astype(np.uint64)
        counts = pattern_counts[patterns.astype(np.intp)].astype(np.float64)
        inverse = None
    else:
        patterns, inverse, counts_i = np.unique(codes.ravel(), return_inverse=True, return_counts=True)
        patterns = patterns.astype(np.uint64)
        counts = counts_i.astype(np.float64)
    outside = total - codes.size  # voxels outside the box: every reader says 0
    bits = ((patterns[:, None] >> np.arange(n_readers, dtype=np.uint64)) & np.uint64(1)).astype(bool)
    all0 = patterns == 0
    all1 = patterns == np.uint64(full)
    mixed = ~(all0 | all1)
    n_all1 = float(counts[all1].sum())
    n_all0 = float(counts[all0].sum()) + outside

    if prior is None:
        f = sum(int(np.count_nonzero(m)) for m in checked) / (n_readers * total)
    else:
        f = float(prior)

    mixed_bits = bits[mixed]
    mixed_counts = counts[mixed]
    w_mixed = np.zeros(mixed_bits.shape[0])
    for _ in range(max_iter):
        w_mixed = _pattern_posterior(mixed_bits, p, q, f)
        cw = mixed_counts * w_mixed
        cnw = mixed_counts - cw
        sum_w = cw.sum() + n_all1
        sum_nw = cnw.sum() + n_all0
        new_p = (cw @ mixed_bits + n_all1) / sum_w if sum_w > 0 else p
        new_q = (cnw @ ~mixed_bits + n_all0) / sum_nw if sum_nw > 0 else q
        change = max(float(np.max(np.abs(new_p - p))), float(np.max(np.abs(new_q - q))))
        p, q = new_p, new_q
        if change < tol:
            break
    w_mixed = _pattern_posterior(mixed_bits, p, q, f)  # posterior under the final parameters

    w_patterns = np.zeros(patterns.shape[0], dtype=np.float32)
    w_patterns[all1] = 1.0
    w_patterns[mixed] = w_mixed
    if inverse is None:
        table = np.zeros(1 << n_readers, dtype=np.float32)
        table[patterns.astype(np.intp)] = w_patterns
        prob[box] = table[codes]
    else:
        prob[box] = w_patterns[inverse].reshape(codes.shape)
    return prob, {"sensitivity": [float(x) for x in p], "specificity": [float(x) for x in q]}
