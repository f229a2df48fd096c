"""Active-learning query strategies for 3D segmentation (nnActive findings, ``docs/formats.md``).

Pure functions, no database: the callers load scans and models, store the scores and pick the cases.

Case scores (higher = more worth annotating):

- ``predictive_entropy``: mean over the volume of the per-voxel normalised entropy (0..1) of the model's
  softmax. nnActive scores patches by summing voxel entropies; for whole cases the mean is used so that a
  large scan does not outrank a small one by its size alone (multiply by the voxel count of the model grid
  for the sum). The best uncertainty strategy in nnActive.
- ``bald``: mean over the volume of the per-voxel mutual information between the prediction and the
  weights under MC dropout, ``H[mean_t p_t] - mean_t H[p_t]``, normalised like the entropy (0..1).
- ``foreground_aware_random_score``: a stable pseudo-random number per case. nnActive's foreground-aware
  random is a *patch* strategy (patch centres from anywhere, inside a foreground class or on its border);
  ranking whole cases it reduces to a random order, and the foreground awareness moves to choosing which
  patches of a picked case to annotate: ``foreground_aware_patches``. nnActive found no strategy that
  reliably beats it.
- ``foreground_aware_allocation`` + ``foreground_aware_centres_of``: the strategy over a pool of cases, as
  nnActive queries it: ``n`` patches, the cases visited in a seeded shuffled cycle, each visit drawing the
  kind (random : inside : border); a case without foreground cannot give an inside or border patch and
  the draw moves on to the next case. Cases with foreground so receive more patches; a case's share of
  the patches is its score (``ml.active_learning``), and the centres are the patches to annotate.

Both model scores use the inference preprocessing (``ml.engine.inference.preprocess``: intensity window,
resampling to the spec's spacing) and MONAI's ``sliding_window_inference`` (``roi_size``, Gaussian
blending, overlap 0.25, bfloat16 autocast on a GPU); the scores are means over the voxels of the *model's*
grid (after resampling), not resampled back to the scan. A one-channel (sigmoid) model is treated as two
classes ``(1 - p, p)``. Unlike ``predict`` there is no out-of-memory fallback: the caller chooses the
device. ``rank`` orders the scores of any strategy, highest first; the ``power_*`` variants add Gumbel
noise for diversity (power sampling: a draw without replacement with probability proportional to
``score ** beta``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from ml.engine.inference import preprocess
from ml.specs import InputSpec, ModelError

Strategy = Literal[
    "random",
    "foreground_aware_random",
    "predictive_entropy",
    "bald",
    "power_predictive_entropy",
    "power_bald",
]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
PatchKind = Literal["random", "inside", "border"]

_DROPOUT_TYPES = (
    torch.nn.Dropout,
    torch.nn.Dropout1d,
    torch.nn.Dropout2d,
    torch.nn.Dropout3d,
    torch.nn.AlphaDropout,
    torch.nn.FeatureAlphaDropout,
)
_DROPOUT_NAMES = {t.__name__ for t in _DROPOUT_TYPES}
_EPS = 1e-7


# --------------------------------------------------------------------------------------------- model scores


def predictive_entropy(
    model: torch.nn.Module,
    volume: np.ndarray,
    spacing: list[float],
    spec: InputSpec,
    *,
    device: str = "cpu",
    sw_batch_size: int = 2,
    overlap: float = 0.25,
) -> float:
    """Mean normalised predictive entropy (0 = certain, 1 = uniform over the classes) of ``model`` on
    ``volume``.

    ``volume``: the scan's canonical array, axes ``(X, Y, Z)`` (RAS), ``spacing`` in mm per axis;
    ``model`` is already on ``device`` and in eval mode (it is not changed). The per-voxel entropy of the
    softmax over the ``C`` output channels is divided by ``log(C)`` and averaged over every voxel of the
    model grid (see the module docstring). Raises ``ModelError`` when the model outputs NaN or infinity.
    """
    x, _ = preprocess(volume, spacing, spec)
    probs = _probabilities(model, x.to(device), spec, device, sw_batch_size, overlap)
    return float(_entropy(probs).mean().clamp(0.0, 1.0))


def bald(
    model: torch.nn.Module,
    volume: np.ndarray,
    spacing: list[float],
    spec: InputSpec,
    *,
    samples: int = 8,
    device: str = "cpu",
    seed: int = 0,
    sw_batch_size: int = 2,
    overlap: float = 0.25,
) -> float:
    """Mean BALD score (mutual information, 0..1) of ``model`` on ``volume`` with MC dropout.

    ``volume``, ``spacing`` and ``model`` as in ``predictive_entropy``. The model is put in eval mode with
    only its dropout modules (``torch.nn.Dropout*``, ``AlphaDropout``, ``FeatureAlphaDropout``, also inside
    TorchScript) in train mode, and run ``samples`` times; per voxel
    ``(H[mean_t p_t] - mean_t H[p_t]) / log(C)``, averaged over the model grid. Each pass draws its own
    dropout masks per sliding window. The dropout masks come from ``seed`` (the global torch RNG state and
    the modules' train/eval modes are restored afterwards), so the score is reproducible on one device.
    Raises ``ValueError`` when the model has no dropout module or ``samples < 2``, ``ModelError`` when it
    outputs NaN or infinity.
    """
    if samples < 2:
        raise ValueError(f"samples: BALD needs at least 2 stochastic passes, got {samples}")
    dropouts = [m for m in model.modules() if _is_dropout(m)]
    if not dropouts:
        raise ValueError("model: BALD needs dropout layers (MC dropout); this model has none")
    x, _ = preprocess(volume, spacing, spec)
    x = x.to(device)
    modes = [(m, m.training) for m in model.modules()]
    cuda: list[int] = []
    if device.startswith("cuda"):
        index = torch.device(device).index
        cuda = [torch.cuda.current_device() if index is None else index]
    try:
        model.eval()
        for m in dropouts:
            m.train()
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            sum_probs: torch.Tensor | None = None
            sum_entropy: torch.Tensor | None = None
            for _ in range(samples):
                probs = _probabilities(model, x, spec, device, sw_batch_size, overlap)
                entropy = _entropy(probs)
                sum_probs = probs if sum_probs is None else sum_probs + probs
                sum_entropy = entropy if sum_entropy is None else sum_entropy + entropy
    finally:
        for m, training in modes:
            m.training = training
    assert sum_probs is not None and sum_entropy is not None
    information = _entropy(sum_probs / samples) - sum_entropy / samples
    return float(information.clamp_min(0.0).mean().clamp(0.0, 1.0))


def _is_dropout(module: torch.nn.Module) -> bool:
    """A dropout module, eager or TorchScript (which keeps the eager class name in ``original_name``)."""
    return isinstance(module, _DROPOUT_TYPES) or getattr(module, "original_name", None) in _DROPOUT_NAMES


def _probabilities(
    model: torch.nn.Module, x: torch.Tensor, spec: InputSpec, device: str, sw_batch_size: int, overlap: float
) -> torch.Tensor:
    """``(C, *spatial)`` float32 class probabilities on the model grid, ``C >= 2`` (sigmoid made two)."""
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        logits = sliding_window_inference(
            x, roi_size=spec.roi_size, sw_batch_size=sw_batch_size, predictor=model, overlap=overlap,
            mode="gaussian", sw_device=device, device=device,
        )  # fmt: skip
    assert isinstance(logits, torch.Tensor)
    logits = logits.float()[0]
    if not torch.isfinite(logits).all():
        raise ModelError("model", "weights", "the model output NaN or infinite values on this scan")
    if logits.shape[0] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1.0 - p, p])
    return torch.softmax(logits, dim=0)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-voxel entropy of ``(C, *spatial)`` probabilities divided by ``log(C)``: ``(*spatial)``, 0..1."""
    return -(probs * probs.clamp_min(_EPS).log()).sum(dim=0) / math.log(probs.shape[0])


# ------------------------------------------------------------------------------- foreground-aware random


@dataclass(frozen=True)
class PatchCentre:
    """A drawn patch centre: voxel index per axis, how it was drawn and, unless random, the class."""

    centre: tuple[int, ...]
    kind: PatchKind
    label: int | None = None


def foreground_aware_random_score(case_id: str, seed: int) -> float:
    """Stable pseudo-random score in [0, 1) of a case for the foreground-aware random strategy.

    The same ``(case_id, seed)`` gives the same score in every process and Python version (BLAKE2b of
    both, not ``hash``). Ranked, these give a random order of the cases; the foreground awareness applies
    when choosing which patches of a picked case to annotate (``foreground_aware_patches``).
    """
    digest = hashlib.blake2b(f"{seed}\x00{case_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def foreground_aware_centres(
    shape: Sequence[int],
    foreground: np.ndarray | None,
    *,
    n: int,
    p_random: float = 0.33,
    p_inside: float = 0.33,
    p_border: float = 0.34,
    seed: int = 0,
) -> list[PatchCentre]:
    """``n`` patch centres drawn as nnActive's foreground-aware random strategy does.

    ``shape``: the volume's spatial shape, e.g. ``(X, Y, Z)`` voxels. ``foreground``: ``None``, a boolean
    mask or an integer label map of that shape (0 = background, every other value a class). Each centre is,
    independently, with probabilities ``p_random : p_inside : p_border`` (normalised to sum 1):

    - ``random``: a voxel anywhere in the volume, uniformly;
    - ``inside``: a uniform voxel of a foreground class picked uniformly among the classes present;
    - ``border``: likewise, from that class's border: its voxels with at least one 6-neighbour outside the
      class (background or, in a label map, another class); the volume's edge is no border. A class with
      no border voxel (it fills the volume) gives an inside voxel instead.

    Without foreground (``None`` or no non-zero voxel) every centre is random. Deterministic in ``seed``.
    """
    shape = _shape(shape)
    if n < 0:
        raise ValueError(f"n: must be at least 0, got {n}")
    weights = _kind_weights(p_random, p_inside, p_border)
    rng = np.random.default_rng(seed)
    foreground_classes = _Foreground(shape, foreground)
    if not foreground_classes.classes:
        return [PatchCentre(_uniform_voxel(rng, shape), "random") for _ in range(n)]
    return [foreground_classes.draw(rng, _KINDS[int(k)]) for k in rng.choice(3, size=n, p=weights)]


def foreground_aware_allocation(
    has_foreground: Mapping[str, bool],
    *,
    n: int,
    p_random: float = 0.33,
    p_inside: float = 0.33,
    p_border: float = 0.34,
    seed: int = 0,
) -> dict[str, list[PatchKind]]:
    """Which cases of a pool get the ``n`` patches of a foreground-aware random query, and of which kind.

    ``has_foreground``: case id -> whether the case has any foreground voxel. The cases are visited in a
    seeded random order, over and over (nnActive's shuffled cycle of images); each visit draws a kind with
    probabilities ``p_random : p_inside : p_border``. A random kind, or any kind on a case with foreground,
    gives that case a patch of that kind; an inside or border kind on a case without foreground gives
    nothing and the next case is visited for the same patch. A patch that finds no case in three passes
    over the pool (only possible when ``p_random`` is 0) is not drawn. Returns case id -> kinds in draw
    order (every case present, possibly with none); the centres come from ``foreground_aware_centres_of``.
    Deterministic in ``seed``; no array is read, so the pool may be any size.
    """
    if n < 0:
        raise ValueError(f"n: must be at least 0, got {n}")
    weights = _kind_weights(p_random, p_inside, p_border)
    ids = sorted(has_foreground)
    out: dict[str, list[PatchKind]] = {i: [] for i in ids}
    if not ids:
        return out
    rng = np.random.default_rng(seed)
    order = [ids[int(i)] for i in rng.permutation(len(ids))]
    visit = 0
    for _ in range(n):
        for _ in range(3 * len(order)):
            case = order[visit % len(order)]
            visit += 1
            kind = _KINDS[int(rng.choice(3, p=weights))]
            if kind == "random" or has_foreground[case]:
                out[case].append(kind)
                break
    return out


def foreground_aware_centres_of(
    shape: Sequence[int], foreground: np.ndarray | None, kinds: Sequence[PatchKind], *, seed: int = 0
) -> list[PatchCentre]:
    """One centre per entry of ``kinds`` (from ``foreground_aware_allocation``) in a case of ``shape``.

    ``foreground`` as in ``foreground_aware_centres``; the rules of its three kinds apply (an inside or
    border kind picks a class uniformly; a class without border voxels gives an inside voxel). An inside
    or border kind on a case without foreground gives a random centre. Deterministic in ``seed``.
    """
    shape = _shape(shape)
    rng = np.random.default_rng(seed)
    classes = _Foreground(shape, foreground)
    out = []
    for kind in kinds:
        if kind not in _KINDS:
            raise ValueError(f"kinds: one of {', '.join(_KINDS)}, got {kind!r}")
        out.append(
            classes.draw(rng, kind) if classes.classes else PatchCentre(_uniform_voxel(rng, shape), "random")
        )
    return out


_KINDS: tuple[PatchKind, ...] = ("random", "inside", "border")


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"shape: needs positive sizes, got {shape}")
    return shape


def _kind_weights(p_random: float, p_inside: float, p_border: float) -> np.ndarray:
    """The three probabilities, normalised to sum 1."""
    weights = np.array([p_random, p_inside, p_border], dtype=float)
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            f"p_random, p_inside, p_border: non-negative with a positive sum, got {weights.tolist()}"
        )
    return weights / weights.sum()


class _Foreground:
    """The classes of one case's foreground, with their inside and border voxels found on first use."""

    def __init__(self, shape: tuple[int, ...], foreground: np.ndarray | None):
        self.shape = shape
        self.labels = _label_map(foreground, shape)
        self.classes = [int(c) for c in np.unique(self.labels) if c != 0] if self.labels is not None else []
        self.inside: dict[int, np.ndarray] = {}
        self.border: dict[int, np.ndarray] = {}

    def draw(self, rng: np.random.Generator, kind: PatchKind) -> PatchCentre:
        if kind == "random":
            return PatchCentre(_uniform_voxel(rng, self.shape), "random")
        label = self.classes[int(rng.integers(len(self.classes)))]
        assert self.labels is not None
        if label not in self.inside:
            mask = self.labels == label
            self.inside[label] = np.argwhere(mask)
            self.border[label] = np.argwhere(mask & _has_outside_neighbour(mask))
        if kind == "border" and not len(self.border[label]):
            kind = "inside"
        pool = self.border[label] if kind == "border" else self.inside[label]
        voxel = pool[int(rng.integers(len(pool)))]
        return PatchCentre(tuple(int(v) for v in voxel), kind, label)


def foreground_aware_patches(
    shape: Sequence[int],
    roi_size: Sequence[int],
    foreground: np.ndarray | None,
    *,
    n: int,
    p_random: float = 0.33,
    p_inside: float = 0.33,
    p_border: float = 0.34,
    seed: int = 0,
) -> list[tuple[slice, ...]]:
    """``n`` patches of ``roi_size`` voxels around centres from ``foreground_aware_centres`` (same arguments).

    Each patch is one slice per axis of ``shape`` (e.g. ``(X, Y, Z)``), see ``patch_around``.
    """
    centres = foreground_aware_centres(
        shape, foreground, n=n, p_random=p_random, p_inside=p_inside, p_border=p_border, seed=seed
    )
    return [patch_around(c.centre, shape, roi_size) for c in centres]


def patch_around(centre: Sequence[int], shape: Sequence[int], roi_size: Sequence[int]) -> tuple[slice, ...]:
    """The patch of ``roi_size`` voxels with ``centre`` at offset ``roi_size // 2``, clipped to the volume.

    Clipping shifts the patch back inside ``shape`` so that it keeps its size (the centre stays inside it);
    on an axis shorter than the patch, the patch is the whole axis.
    """
    if not (len(centre) == len(shape) == len(roi_size)):
        raise ValueError(f"roi_size: needs {len(shape)} sizes, got {list(roi_size)}")
    if min(roi_size) < 1:
        raise ValueError(f"roi_size: needs positive sizes, got {list(roi_size)}")
    out = []
    for c, size, roi in zip(centre, shape, roi_size, strict=True):
        roi = min(int(roi), int(size))
        start = min(max(int(c) - roi // 2, 0), int(size) - roi)
        out.append(slice(start, start + roi))
    return tuple(out)


def _label_map(foreground: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if foreground is None:
        return None
    foreground = np.asarray(foreground)
    if foreground.shape != shape:
        raise ValueError(f"foreground: shape {foreground.shape} differs from the volume's {shape}")
    if foreground.dtype == bool:
        return foreground.astype(np.uint8)
    if not np.issubdtype(foreground.dtype, np.integer):
        raise ValueError(f"foreground: needs an integer label map or a boolean mask, got {foreground.dtype}")
    return foreground


def _uniform_voxel(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(rng.integers(s)) for s in shape)


def _has_outside_neighbour(mask: np.ndarray) -> np.ndarray:
    """Voxels with a 6-neighbour (face neighbour, any ndim) outside ``mask``; the volume's edge is not."""
    outside = np.zeros(mask.shape, dtype=bool)
    for axis in range(mask.ndim):
        n = mask.shape[axis]
        if n < 2:
            continue
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        outside[tuple(lo)] |= ~mask[tuple(hi)]  # neighbour at +1
        outside[tuple(hi)] |= ~mask[tuple(lo)]  # neighbour at -1
    return outside


# ----------------------------------------------------------------------------------------------- ranking


def rank(scores: dict[str, float], strategy: str, *, seed: int = 0, beta: float = 1.0) -> list[str]:
    """Case ids by ``scores``, the most worth annotating first; ties by id (ascending).

    ``strategy`` is one of ``STRATEGIES``; for all of them a higher score ranks first (the random ones
    rank ``foreground_aware_random_score`` values). The ``power_*`` variants rank
    ``beta * log(score) + Gumbel noise`` (seeded by ``seed``, drawn in id order), i.e. sample without
    replacement with probability proportional to ``score ** beta``; a zero score ranks last. Raises
    ``ValueError`` for an unknown strategy or a NaN score (or a negative one in a power variant).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: one of {', '.join(STRATEGIES)}; got {strategy!r}")
    ids = sorted(scores)
    values = np.array([float(scores[i]) for i in ids], dtype=float)
    if np.isnan(values).any():
        raise ValueError(f"scores: NaN for {[i for i, v in zip(ids, values) if np.isnan(v)]}")
    if strategy.startswith("power_"):
        if (values < 0).any():
            raise ValueError("scores: power sampling needs non-negative scores")
        if beta <= 0:
            raise ValueError(f"beta: must be positive, got {beta}")
        with np.errstate(divide="ignore"):
            values = beta * np.log(values) + np.random.default_rng(seed).gumbel(size=len(ids))
    order = sorted(range(len(ids)), key=lambda k: (-values[k], ids[k]))
    return [ids[k] for k in order]
