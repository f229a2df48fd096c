"""Sliding-window inference of a registered model on a scan, with the results on the scan's own grid.

The scan comes as the platform's canonical array (axes X, Y[, Z], already RAS: the orientation step is
the identity) with its voxel spacing. Preprocessing follows the model's input spec: intensity window to
[0, 1] (``window``), resampling to the model's ``spacing`` (trilinear), then MONAI's
``sliding_window_inference`` (``roi_size``, Gaussian blending, overlap 0.25), softmax over the output
channels (sigmoid for one channel), mixed precision (bfloat16) on a GPU, and the probabilities resampled
back to the scan's grid as one label map (``label_map_from_probabilities``: one uint8 index volume and
each label's stats; the channels are resampled one at a time, so the memory on the scan's grid does not
grow with the number of labels; a label's mask is derived from the map when it is needed). A volume
that does not fit in GPU memory is retried with the windows' outputs kept on the CPU, then wholly on the
CPU; what happened is said in ``warnings``.

A text-conditioned (grounding) model sees the same input for every sentence of a scan: ``prepare`` makes
it once (preprocessing and the whole volume's position channels) and ``predict(..., prepared=...)``
reuses it for each sentence, so a scan is preprocessed once, not once per sentence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from ml.specs import InputSpec, ModelError


@dataclass
class LabelResult:
    name: str
    value: int  # its value in the label map: the output channel (1 for a one-channel model)
    voxels: int  # on the scan's grid
    confidence: float  # mean probability of the label inside the mask (model's grid)
    entropy: float  # mean normalised entropy (0..1) of the prediction inside the mask (model's grid)


@dataclass
class LabelMap:
    index: np.ndarray  # (X, Y[, Z]) on the scan's grid: the winning output channel, uint8 (uint16 past 256)
    labels: list[LabelResult]

    def mask(self, label: LabelResult) -> np.ndarray:
        """The label's bool mask on the scan's grid (a new array: derive one at a time)."""
        return self.index == label.value


@dataclass
class Prediction:
    labels: list[LabelResult]
    label_map: np.ndarray  # LabelMap.index: one array for all the labels
    device: str
    seconds_model: float
    seconds_total: float
    warnings: list[str] = field(default_factory=list)

    def mask(self, label: LabelResult) -> np.ndarray:
        """The label's bool mask on the scan's grid (a new array: derive one at a time)."""
        return self.label_map == label.value


def preprocess(
    volume: np.ndarray, spacing: list[float], spec: InputSpec
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(1, C, *spatial)`` float32 input for the model and the scan's spatial shape."""
    shape = tuple(volume.shape[: spec.ndim])
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).reshape(1, 1, *shape)
    if spec.window is not None:
        low, high = spec.window
        x = ((x - low) / (high - low)).clamp_(0.0, 1.0)
    if spec.channels > 1:
        x = x.expand(1, spec.channels, *shape).contiguous()
    if spec.spacing is not None:
        target = [max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, spec.spacing, strict=True)]
        if list(target) != list(shape):
            x = F.interpolate(
                x, size=target, mode="bilinear" if spec.ndim == 2 else "trilinear", align_corners=False
            )
    return x, shape


@dataclass
class Prepared:
    """A scan's model input, made once (``prepare``): ``x`` ``(1, C[+ position], *model_grid)`` on the
    CPU, the scan's spatial ``shape``, and the ``seconds`` it took."""

    x: torch.Tensor
    shape: tuple[int, ...]
    seconds: float


def prepare(
    model: torch.nn.Module,
    volume: np.ndarray,
    spacing: list[float],
    spec: InputSpec,
    affine: list | np.ndarray | None = None,
) -> Prepared:
    """``model``'s input of ``volume``: ``preprocess``, then the whole volume's position channels when the
    model takes them (``position_channels``: ``ml.engine.grounding.with_position``, which needs
    ``affine``). Reuse it for each sentence of the scan (``predict(..., prepared=...)``)."""
    started = time.perf_counter()
    x, shape = preprocess(volume, spacing, spec)
    if getattr(model, "position_channels", 0):
        from ml.engine.grounding import with_position

        x = with_position(x, affine, shape)
    return Prepared(x=x, shape=shape, seconds=time.perf_counter() - started)


def predict(
    model: torch.nn.Module,
    volume: np.ndarray | None,
    spacing: list[float],
    spec: InputSpec,
    label_names: list[str],
    *,
    device: str = "cpu",
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    text_embedding: torch.Tensor | None = None,
    affine: list | np.ndarray | None = None,
    prepared: Prepared | None = None,
) -> Prediction:
    """Labels of ``volume`` (see the module docstring). ``label_names[i]`` names output channel i; a
    ``background`` channel gives no label. ``text_embedding`` ``(text_dim,)``: the sentence a
    text-conditioned model grounds. ``affine``: the scan's voxel -> RAS+ mm, needed by a model that takes
    the whole volume's position channels (``position_channels``, ``ml.engine.grounding.with_position``:
    appended before windowing, so each window carries its place in the volume). ``prepared``: the input
    ``prepare`` made of this volume for this model (then ``volume`` is not read again, and its seconds
    are not counted in ``seconds_total``). Raises ``ModelError`` when the model outputs NaN."""
    started = time.perf_counter()
    if prepared is None:
        if volume is None:
            raise ValueError("predict needs the volume or its prepared input")
        prepared = prepare(model, volume, spacing, spec, affine)
    x, shape = prepared.x, prepared.shape
    if text_embedding is not None:
        model = _WithText(model, text_embedding)
    warnings: list[str] = []
    t0 = time.perf_counter()
    try:
        probs = _infer(model, x, spec, device, device, sw_batch_size, overlap)
    except torch.OutOfMemoryError:
        warnings.append(
            f"out of GPU memory at sliding-window batch {sw_batch_size}: windows' outputs kept on the CPU"
        )
        torch.cuda.empty_cache()
        try:
            probs = _infer(model, x, spec, device, "cpu", 1, overlap)
        except torch.OutOfMemoryError:
            warnings.append("out of GPU memory again: ran on the CPU")
            torch.cuda.empty_cache()
            model = model.to("cpu")
            device = "cpu"
            probs = _infer(model, x, spec, "cpu", "cpu", sw_batch_size, overlap)
    seconds_model = time.perf_counter() - t0
    for c in range(probs.shape[1]):  # a channel at a time: no (C, *grid) bool temporary
        if not bool(torch.isfinite(probs[0, c]).all()):
            raise ModelError("model", "weights", "the model output NaN or infinite values on this scan")
    mode = "bilinear" if spec.ndim == 2 else "trilinear"
    try:
        result = label_map_from_probabilities(probs[0], label_names, shape, mode=mode)
    except torch.OutOfMemoryError:
        warnings.append("out of GPU memory resampling to the scan's grid: resampled on the CPU")
        probs = probs.cpu()
        torch.cuda.empty_cache()
        result = label_map_from_probabilities(probs[0], label_names, shape, mode=mode)
    return Prediction(labels=result.labels, label_map=result.index, device=device,
                      seconds_model=seconds_model, seconds_total=time.perf_counter() - started,
                      warnings=warnings)  # fmt: skip


class _WithText(torch.nn.Module):
    """A text-conditioned model with its sentence fixed, for sliding-window inference."""

    def __init__(self, model: torch.nn.Module, embedding: torch.Tensor):
        super().__init__()
        self.model, self.embedding = model, embedding.reshape(1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        text = self.embedding.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1)
        return self.model(x, text)


def _infer(model, x, spec, device, sw_device, sw_batch_size, overlap) -> torch.Tensor:
    autocast = device.startswith("cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = sliding_window_inference(
            x.to(sw_device), roi_size=spec.roi_size, sw_batch_size=sw_batch_size, predictor=model,
            overlap=overlap, mode="gaussian", sw_device=device, device=sw_device,
        )  # fmt: skip
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else softmax_(logits)


def softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the channels of ``(1, C, *grid)`` logits in place, 65,536 voxels at a time:
    ``torch.softmax`` on the whole would hold a second ``(C, *grid)`` float32 tensor (1.5 GB for 100
    labels on a 221x221x75 model grid). Equal to ``torch.softmax`` to within float rounding (measured:
    at most 4e-12 on the CPU, most tensors bit for bit; tests/ml/test_label_memory.py)."""
    if not logits.is_contiguous():  # MONAI's output cropped from a padded buffer
        logits = logits.contiguous()
    flat = logits.view(logits.shape[0], logits.shape[1], -1)
    step = 1 << 16 if flat.device.type == "cpu" else 1 << 22
    for start in range(0, flat.shape[2], step):
        flat[:, :, start : start + step] = torch.softmax(flat[:, :, start : start + step], dim=1)
    return logits


def label_map_from_probabilities(
    probs: torch.Tensor, names: list[str], shape: tuple[int, ...], *, mode: str = "trilinear"
) -> LabelMap:
    """Probabilities ``(C, *model grid)`` (softmax over C; for ``C == 1`` a sigmoid) -> one label-index
    volume on the scan's grid ``shape`` (same axis order, here X, Y[, Z]) and each named label's stats.

    The index is the argmax over the channels of the probabilities resampled to ``shape`` (``mode``:
    ``trilinear`` for 3D, ``bilinear`` for 2D, ``align_corners=False``), the same voxel for voxel as
    resampling all channels at once and taking the argmax (what MONAI's ``Invertd`` on probabilities then
    ``AsDiscreted(argmax=True)`` computes), but resampled one channel at a time against a running maximum,
    so the memory on the scan's grid is about 10 bytes a voxel whatever the number of channels (all
    channels at once take 4·C bytes a voxel). A channel whose probability is below 1/C everywhere on the
    model's grid is not resampled: the winner of every voxel has at least 1/C after resampling (the
    resampled probabilities still sum to 1), so such a channel wins nowhere. For one channel the index is
    1 where the resampled probability is > 0.5; for two it is 1 where the resampled p₁ > 0.5 (the argmax,
    resampling only that channel).

    ``names[i]`` names channel i (``class_i`` past the names); a ``background`` channel and a channel that
    wins no voxel give no label. Confidence and entropy are means over the label's voxels on the model's
    grid (its argmax there), where the probabilities were computed; all voxels when it wins none there.
    Runs on ``probs.device``; the index comes back as a NumPy array (uint8, uint16 past 256 channels).
    """
    channels = probs.shape[0]
    resample = tuple(probs.shape[1:]) != tuple(shape)

    def up(c: int) -> torch.Tensor:
        one = probs[c : c + 1]
        if not resample:
            return one[0]
        return F.interpolate(one[None], size=shape, mode=mode, align_corners=False)[0, 0]

    if channels <= 2:
        index = (up(channels - 1) > 0.5).to(torch.uint8)
        values = [1] if channels == 1 else [0, 1]
        voxels_on = int(index.sum())
        voxels = [voxels_on] if channels == 1 else [index.numel() - voxels_on, voxels_on]
    else:
        index = _argmax_resampled(probs, up)
        values = list(range(channels))
        voxels = torch.bincount(index.flatten(), minlength=channels).tolist()
    names = [names[c] if c < len(names) else f"class_{c}" for c in range(channels)]
    if channels == 1:
        p = probs[0].clamp(1e-7, 1 - 1e-7)
        entropy = -(p * p.log() + (1 - p) * (1 - p).log()) / np.log(2)
        winner = None
    else:
        winner = probs.argmax(dim=0)
        entropy = torch.zeros_like(probs[0])
        for c in range(channels):  # one channel at a time: no (C, *grid) temporaries
            entropy -= probs[c] * probs[c].clamp_min(1e-7).log()
        entropy /= np.log(channels)
    labels = []
    for c, (name, value, count) in enumerate(zip(names, values, voxels, strict=True)):
        if name.lower() == "background" or count == 0:
            continue
        stats = probs[0] > 0.5 if winner is None else winner == c
        if not bool(stats.any()):
            stats = torch.ones_like(stats)
        labels.append(
            LabelResult(
                name=name,
                value=value,
                voxels=count,
                confidence=float(probs[c][stats].mean()),
                entropy=float(entropy[stats].mean()),
            )
        )
    dtype = np.uint8 if max(values) < 256 else np.uint16
    return LabelMap(index=index.cpu().numpy().astype(dtype, copy=False), labels=labels)


def _argmax_resampled(probs: torch.Tensor, up) -> torch.Tensor:
    """``argmax_c up(c)`` on the scan's grid, one channel resampled at a time (ties: the lowest channel,
    as ``torch.argmax``)."""
    channels = probs.shape[0]
    floor = (1.0 / channels) * (1 - 1e-3)  # below this everywhere: wins nowhere (rounding margin)
    peaks = probs.flatten(1).amax(dim=1).tolist()
    candidates = [c for c in range(channels) if peaks[c] >= floor]
    dtype = torch.uint8 if channels <= 256 else torch.int32  # no uint16 comparisons in torch on all devices
    best = up(candidates[0]).clone()
    index = torch.full(best.shape, candidates[0], dtype=dtype, device=best.device)
    for c in candidates[1:]:
        p = up(c)
        better = p > best
        index.masked_fill_(better, c)
        torch.maximum(best, p, out=best)
        del p, better
    return index
