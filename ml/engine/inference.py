"""Sliding-window inference of a registered model on a scan, with the results on the scan's own grid.

The scan comes as the platform's canonical array (axes X, Y[, Z], already RAS: the orientation step is
the identity) with its voxel spacing. Preprocessing follows the model's input spec: intensity window to
[0, 1] (``window``), resampling to the model's ``spacing`` (trilinear), then MONAI's
``sliding_window_inference`` (``roi_size``, Gaussian blending, overlap 0.25), softmax over the output
channels (sigmoid for one channel), mixed precision (bfloat16) on a GPU, and the probabilities resampled
back to the scan's grid. A volume that does not fit in GPU memory is retried with the windows' outputs
kept on the CPU, then wholly on the CPU; what happened is said in ``warnings``.
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
    mask: np.ndarray  # bool, the scan's grid
    confidence: float  # mean probability of the label inside the mask
    entropy: float  # mean normalised entropy (0..1) of the prediction inside the mask


@dataclass
class Prediction:
    labels: list[LabelResult]
    device: str
    seconds_model: float
    seconds_total: float
    warnings: list[str] = field(default_factory=list)


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


def predict(
    model: torch.nn.Module,
    volume: np.ndarray,
    spacing: list[float],
    spec: InputSpec,
    label_names: list[str],
    *,
    device: str = "cpu",
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    text_embedding: torch.Tensor | None = None,
    affine: list | np.ndarray | None = None,
) -> Prediction:
    """Labels of ``volume`` (see the module docstring). ``label_names[i]`` names output channel i; a
    ``background`` channel gives no label. ``text_embedding`` ``(text_dim,)``: the sentence a
    text-conditioned model grounds. ``affine``: the scan's voxel -> RAS+ mm, needed by a model that takes
    the whole volume's position channels (``position_channels``, ``ml.engine.grounding.with_position``:
    appended before windowing, so each window carries its place in the volume). Raises ``ModelError`` when
    the model outputs NaN."""
    position = getattr(model, "position_channels", 0)
    if text_embedding is not None:
        model = _WithText(model, text_embedding)
    started = time.perf_counter()
    x, shape = preprocess(volume, spacing, spec)
    if position:
        from ml.engine.grounding import with_position

        x = with_position(x, affine, shape)
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
    if not torch.isfinite(probs).all():
        raise ModelError("model", "weights", "the model output NaN or infinite values on this scan")
    labels = _labels(probs[0], label_names, shape, "bilinear" if spec.ndim == 2 else "trilinear")
    return Prediction(labels=labels, device=device, seconds_model=seconds_model,
                      seconds_total=time.perf_counter() - started, warnings=warnings)  # fmt: skip


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
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def _labels(probs: torch.Tensor, names: list[str], shape: tuple[int, ...], mode: str) -> list[LabelResult]:
    """Per named channel: the mask on the scan's grid, and its mean probability and normalised entropy.

    The masks are the argmax of the probabilities resampled to the scan's grid (for one channel: p > 0.5;
    for two: p₁ > 0.5, the same as the argmax, resampling only that channel). Confidence and entropy are
    means over the label's voxels on the model's grid, where the probabilities were computed.
    """
    channels = probs.shape[0]
    if channels == 1:
        p = probs[0].clamp(1e-7, 1 - 1e-7)
        entropy = -(p * p.log() + (1 - p) * (1 - p).log()) / np.log(2)
        low = {0: probs[0] > 0.5}
    else:
        winner = probs.argmax(dim=0)
        entropy = -(probs * probs.clamp_min(1e-7).log()).sum(dim=0) / np.log(channels)
        low = {c: winner == c for c in range(channels)}
    resample = tuple(probs.shape[1:]) != tuple(shape)

    def up(channel_probs: torch.Tensor) -> torch.Tensor:
        if not resample:
            return channel_probs
        return F.interpolate(channel_probs[None], size=shape, mode=mode, align_corners=False)[0]

    if channels <= 2:
        full = {channels - 1: up(probs[channels - 1 : channels])[0] > 0.5}
        if channels == 2:
            full[0] = ~full[1]
    else:
        index = up(probs).argmax(dim=0)
        full = {c: index == c for c in range(channels)}
    out = []
    for c in range(channels):
        name = names[c] if c < len(names) else f"class_{c}"
        if name.lower() == "background" or not bool(full[c].any()):
            continue
        stats = low[c] if bool(low[c].any()) else torch.ones_like(low[c])
        out.append(
            LabelResult(
                name=name,
                mask=full[c].cpu().numpy(),
                confidence=float(probs[c][stats].mean()),
                entropy=float(entropy[stats].mean()),
            )
        )
    return out
