"""A registered interactive model (DeepGrow- or DeepEdit-style guidance inputs) on the click tool's clicks
(``ml.interactive``): the network input made as MONAI Label's inference transforms make it, the model run,
its mask on the scan's own grid.

A model is interactive when its input spec has ``interactive`` (``ml.specs.InputSpec``):

- ``style``: ``deepgrow`` (channels: the image, the foreground clicks, the background clicks; one output
  channel, sigmoid > ``threshold``, or two, the argmax; the input is a box around the clicks) or
  ``deepedit`` (channels: the image, then one per label in ``guidance`` order, default the label names;
  the clicks go to the channel of the finding's label, the background clicks to ``background``'s; the
  output's argmax, the label's channel; the input is the whole scan).
- ``sigma``: the guidance Gaussian's width in input voxels (MONAI's defaults: deepgrow 2, deepedit 3).
- ``crop_mm``: deepgrow's box around the clicks (default: the ROI times the spacing, or the ROI in the
  scan's voxels); ``resize``: how the box is brought to ``roi_size`` (``area``, as MONAI Label's
  ``Resized``, or ``trilinear``, ``nearest``); ``normalize``: ``[subtrahend, divisor]`` after the window
  (MONAI's ``NormalizeIntensityd``); ``threshold``: one output channel's cut (0.5).

The steps, in MONAI Label's order: the box in the scan's array; oriented to RAS (a permutation and flips of
the axes, nibabel's ``io_orientation``: what ``Orientationd(axcodes="RAS")`` does to the voxels); the
spec's ``spacing`` (trilinear), its ``window`` to [0, 1] clipped (``ScaleIntensityRanged``) and
``normalize``; resized to ``roi_size``; the clicks mapped into that grid (``int(point · new / old)``, as
``AddGuidanceFromPointsDeepEditd``) and made channels by MONAI's own ``AddGuidanceSignald`` /
``AddGuidanceSignalDeepEditd``; the network; the mask brought back by nearest resizing, undoing the
orientation. The last model loaded stays loaded (the click worker answers many clicks with it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from ml.specs import InputSpec, ModelError

DEFAULT_SIGMA = {"deepgrow": 2.0, "deepedit": 3.0}
_cache: dict[str, Any] = {"key": None, "model": None}


@dataclass
class Answer:
    mask: np.ndarray  # bool, the box's grid (the scan's axes)
    label: str
    style: str
    input_shape: list[int]
    device: str
    loaded: bool  # the model was loaded for this click (not kept from an earlier one)
    seconds: float  # the network's forward pass
    warnings: list[str] = field(default_factory=list)


def _config(spec: InputSpec) -> dict[str, Any]:
    config = dict(spec.interactive or {})
    if config.get("style") not in DEFAULT_SIGMA:
        raise ModelError("input_spec", "interactive.style", "deepgrow or deepedit")
    return config


def interactive_box(spec: InputSpec, shape: list[int], spacing: list[float], points) -> tuple[list, list]:
    """The part of the scan the model sees: the whole scan (deepedit), or a box of ``crop_mm`` around the
    foreground clicks' centre (deepgrow), within the scan."""
    config = _config(spec)
    if config["style"] == "deepedit":
        return [0] * len(shape), list(shape)
    crop = config.get("crop_mm") or [
        r * (t if spec.spacing else s) for r, s, t in zip(spec.roi_size, spacing, spec.spacing or spacing)
    ]
    centre = np.mean(np.asarray(points, dtype=float), axis=0)
    lo, hi = [], []
    for c, extent, s, n in zip(centre, crop, spacing, shape, strict=True):
        half = max(1, int(math.ceil(float(extent) / float(s) / 2)))
        lo.append(int(max(0, round(c) - half)))
        hi.append(int(min(n, round(c) + half)))
    return lo, hi


def _oriented(image: np.ndarray, affine: np.ndarray):
    """The box as RAS-ordered voxels, a voxel mapper into it, and the way back (2D: as it is)."""
    if image.ndim != 3:
        return image, (lambda p: [int(v) for v in p]), (lambda m: m)
    start = io_orientation(affine)
    ras = axcodes2ornt("RAS")
    to_ras = ornt_transform(start, ras)
    back = ornt_transform(ras, start)
    inverse = np.linalg.inv(inv_ornt_aff(to_ras, image.shape))

    def point(p):
        return [int(round(v)) for v in (inverse @ np.asarray([*p, 1.0]))[:3]]

    return apply_orientation(image, to_ras), point, (lambda m: apply_orientation(m, back))


def interactive_input(
    spec: InputSpec,
    label_names: list[str],
    image: np.ndarray,
    affine: np.ndarray,
    spacing: list[float],
    foreground: list[list[int]],
    background: list[list[int]],
    label: str = "",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The network's input ``(1, C, *roi_size)`` for the clicks (box voxels), and what is needed to bring the
    output back (``ctx``)."""
    from monai.apps.deepedit.transforms import AddGuidanceSignalDeepEditd
    from monai.apps.deepgrow.transforms import AddGuidanceSignald

    config = _config(spec)
    style = config["style"]
    oriented, to_ras, undo = _oriented(np.asarray(image, dtype=np.float32), affine)
    ras_spacing = list(spacing)
    if image.ndim == 3:
        order = [int(a) for a in ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))[:, 0]]
        ras_spacing = [0.0] * 3
        for axis, target in enumerate(order):
            ras_spacing[target] = float(spacing[axis])
    x = torch.from_numpy(np.ascontiguousarray(oriented))[None, None]
    shape = list(oriented.shape)
    if spec.spacing is not None:
        size = [max(1, round(n * s / t)) for n, s, t in zip(shape, ras_spacing, spec.spacing, strict=True)]
        if size != shape:
            x = F.interpolate(
                x, size=size, mode="trilinear" if x.ndim == 5 else "bilinear", align_corners=False
            )
    if spec.window is not None:
        low, high = spec.window
        x = ((x - low) / (high - low)).clamp(0.0, 1.0)
    if config.get("normalize"):
        subtrahend, divisor = (float(v) for v in config["normalize"])
        x = (x - subtrahend) / divisor
    before = list(x.shape[2:])
    mode = config.get("resize", "area")
    if before != list(spec.roi_size):
        kwargs = {"align_corners": False} if mode in ("trilinear", "bilinear") else {}
        x = F.interpolate(x, size=list(spec.roi_size), mode=mode, **kwargs)
    factor = [r / b for r, b in zip(spec.roi_size, shape, strict=True)]

    def mapped(points):
        return [[int(v * f) for v, f in zip(to_ras(p), factor, strict=True)] for p in points]

    sigma = float(config.get("sigma", DEFAULT_SIGMA[style]))
    data = {"image": x[0].numpy()}
    if style == "deepgrow":
        data["guidance"] = [mapped(foreground), mapped(background)]
        made = AddGuidanceSignald(image="image", guidance="guidance", sigma=sigma)(data)["image"]
        target = None
    else:
        order = list(config.get("guidance") or label_names)
        target = label or next((n for n in label_names if n.lower() != "background"), label_names[0])
        if target not in order:
            raise ModelError("input_spec", "label", f"{target!r} is not one of the model's labels {order}")
        data["guidance"] = {
            name: mapped(foreground) if name == target else mapped(background) if name == "background" else []
            for name in order
        }
        made = AddGuidanceSignalDeepEditd(keys="image", guidance="guidance", sigma=sigma)(data)["image"]
    tensor = torch.as_tensor(np.asarray(made, dtype=np.float32))[None]
    if tensor.shape[1] != spec.channels:
        raise ModelError(
            "input_spec",
            "channels",
            f"{style} makes {tensor.shape[1]} input channels, the spec says {spec.channels}",
        )
    return tensor, {"shape": shape, "undo": undo, "style": style, "target": target}


def _model(
    key: str, weights: Path, fmt: str, network: dict | None, device: str
) -> tuple[torch.nn.Module, bool]:
    from ml.engine.loading import load_model

    if _cache["key"] == (key, device):
        return _cache["model"], False
    _cache.update(key=None, model=None)
    model = load_model(Path(weights), fmt, network=network, device=device)
    _cache.update(key=(key, device), model=model)
    return model, True


def interactive_predict(
    *,
    key: str,
    weights: Path,
    fmt: str,
    network: dict | None,
    spec: InputSpec,
    label_names: list[str],
    image: np.ndarray,
    affine: np.ndarray,
    spacing: list[float],
    foreground: list[list[int]],
    background: list[list[int]],
    label: str = "",
    device: str = "cpu",
) -> Answer:
    """The model's mask for the clicks on ``image`` (a box of the scan; ``affine``: its voxels to mm)."""
    model, loaded = _model(key, weights, fmt, network, device)
    x, ctx = interactive_input(spec, label_names, image, affine, spacing, foreground, background, label)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(x.to(device))
    if isinstance(out, list | tuple):
        out = out[0]
    out = out.float().cpu()
    if not torch.isfinite(out).all():
        raise ModelError("model", "weights", "the model output NaN or infinite values on these clicks")
    config = _config(spec)
    if ctx["style"] == "deepgrow":
        name = label_names[-1]
        if out.shape[1] == 1:
            low = torch.sigmoid(out[:, 0]) > float(config.get("threshold", 0.5))
        else:
            low = out.argmax(dim=1) == out.shape[1] - 1
    else:
        name = ctx["target"]
        channel = label_names.index(name)
        low = out.argmax(dim=1) == channel
    mask = F.interpolate(low[None].float(), size=ctx["shape"], mode="nearest")[0, 0] > 0.5
    warnings = [] if bool(mask.any()) else ["the model found nothing at these clicks"]
    return Answer(
        mask=np.ascontiguousarray(ctx["undo"](mask.numpy())),
        label=name,
        style=ctx["style"],
        input_shape=list(x.shape),
        device=device,
        loaded=loaded,
        seconds=time.perf_counter() - t0,
        warnings=warnings,
    )
