"""Training a segmentation network on patches, with checkpoints to resume from and validation Dice.

Pure torch/MONAI: the caller gives preprocessed volumes (``(C, *spatial)`` float tensors on the model's
grid) with their label maps (``(*spatial)`` integer class indices), and callbacks that store and load
checkpoints. Training draws random patches of the input spec's ``roi_size`` (half of them centred on
foreground, as nnU-Net does), optimises Dice + cross-entropy with Adam, saves a checkpoint every
``checkpoint_every`` steps (model, optimiser, step, random-number states), and validates with
sliding-window inference: the mean foreground Dice over the validation cases.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

from ml.specs import TrainParams

Checkpoint = dict[str, Any]


@dataclass
class Case:
    image: torch.Tensor  # (C, *spatial), float32, the model's grid
    label: torch.Tensor  # (*spatial), int64 class indices


@dataclass
class TrainResult:
    steps_done: int
    resumed_from: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    patches_per_second: float = 0.0


def _patch(
    case: Case, roi: list[int], rng: np.random.Generator, foreground: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    spatial = case.label.shape
    starts = []
    centre = None
    if foreground:
        fg = torch.nonzero(case.label > 0)
        if len(fg):
            centre = fg[int(rng.integers(len(fg)))].tolist()
    for axis, (size, r) in enumerate(zip(spatial, roi, strict=True)):
        if size <= r:
            starts.append(0)
        elif centre is not None:
            starts.append(int(np.clip(centre[axis] - r // 2, 0, size - r)))
        else:
            starts.append(int(rng.integers(0, size - r + 1)))
    index = tuple(slice(s, s + r) for s, r in zip(starts, roi, strict=True))
    image, label = case.image[(slice(None), *index)], case.label[index]
    pad = [
        p for size, r in reversed(list(zip(image.shape[1:], roi, strict=True))) for p in (0, max(0, r - size))
    ]
    if any(pad):
        image = torch.nn.functional.pad(image, pad)
        label = torch.nn.functional.pad(label, pad)
    return image, label


def train(
    model: torch.nn.Module,
    cases: list[Case],
    roi: list[int],
    n_classes: int,
    params: TrainParams,
    *,
    save: Callable[[Checkpoint], None],
    resume: Checkpoint | None = None,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``params.steps`` steps in all, continuing from ``resume``."""
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def batch(rng: np.random.Generator) -> tuple[Callable[[], torch.Tensor], torch.Tensor]:
        images, labels = [], []
        for _ in range(params.batch_size):
            case = cases[int(rng.integers(len(cases)))]
            image, label = _patch(case, roi, rng, foreground=rng.random() < params.foreground_fraction)
            images.append(image)
            labels.append(label)
        x = torch.stack(images).to(device)
        return (lambda: model(x)), torch.stack(labels)[:, None].to(device)

    return _loop(model, loss_fn, batch, params, save=save, resume=resume, device=device, on_step=on_step)


def _loop(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    batch: Callable[[np.random.Generator], tuple[Callable[[], torch.Tensor], torch.Tensor]],
    params: TrainParams,
    *,
    save: Callable[[Checkpoint], None],
    resume: Checkpoint | None,
    device: str,
    on_step: Callable[[int, float], None] | None,
    before: Callable[[], None] | None = None,
) -> TrainResult:
    """The training loop ``train`` and ``train_grounding`` share: Adam, ``batch(rng)`` giving the forward
    call and the target of each step, a non-finite loss refused, checkpoints (model, optimiser, step and
    both random states) every ``params.checkpoint_every`` steps and at the end, resumed from ``resume``.
    ``before``: run once before the first step of a fresh (not resumed) training."""
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    rng = np.random.default_rng(params.seed)
    step = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimiser.load_state_dict(resume["optimiser"])
        step = int(resume["step"])
        rng.bit_generator.state = resume["rng"]
        torch.set_rng_state(resume["torch_rng"])
    elif before is not None:
        before()
    result = TrainResult(steps_done=step, resumed_from=step)
    started = time.perf_counter()
    while step < params.steps:
        forward, y = batch(rng)
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(forward(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss: not finite at step {step + 1}")
        loss.backward()
        optimiser.step()
        step += 1
        value = float(loss.detach())
        result.losses.append(value)
        if on_step is not None:
            on_step(step, value)
        if step % params.checkpoint_every == 0 or step == params.steps:
            save(
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "step": step,
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                }
            )
    result.steps_done = step
    result.seconds = time.perf_counter() - started
    done = (step - result.resumed_from) * params.batch_size
    result.patches_per_second = done / result.seconds if result.seconds > 0 else 0.0
    model.eval()
    return result


def dice_score(model: torch.nn.Module, cases: list[Case], roi: list[int], *, device: str = "cpu") -> float:
    """Mean over cases and foreground classes of Dice (a class absent from both truth and prediction
    counts 1) of the argmax prediction by sliding-window inference."""
    model.to(device).eval()
    scores = []
    with torch.no_grad():
        for case in cases:
            logits = sliding_window_inference(
                case.image[None].to(device), roi, 2, model, overlap=0.25, mode="gaussian"
            )
            prediction = logits.argmax(dim=1)[0].cpu()
            n_classes = logits.shape[1]
            for c in range(1, n_classes):
                p, t = prediction == c, case.label == c
                denominator = int(p.sum() + t.sum())
                scores.append(1.0 if denominator == 0 else 2.0 * int((p & t).sum()) / denominator)
    return float(np.mean(scores)) if scores else 0.0


def training_case(image: torch.Tensor, labels: np.ndarray) -> Case:
    """A case from a preprocessed image ``(1, C, *spatial)`` and a label map on the scan's grid,
    resampled (nearest) to the image's grid when the model works at another spacing."""
    target = torch.from_numpy(labels)[None, None].float()
    if tuple(image.shape[2:]) != tuple(labels.shape):
        target = torch.nn.functional.interpolate(target, size=tuple(image.shape[2:]), mode="nearest")
    return Case(image=image[0], label=target[0, 0].long())


def checkpoint_bytes(state: Checkpoint) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def checkpoint_load(data: bytes) -> Checkpoint:
    """A checkpoint this module saved: tensors, numbers and the random-number states (a dict of ints and a
    byte tensor), all of which the weights-only unpickler reads; no pickled object is ever run."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def save_state_dict(model: torch.nn.Module, path) -> None:
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, path)


# -- text-conditioned grounding ----------------------------------------------------------------------------


@dataclass
class GroundingCase:
    """One scan for grounding: ``image`` ``(C [+ ndim position channels], *spatial)`` on the model's grid,
    the position channels (``ml.engine.grounding.with_position``) computed on the *whole* volume before
    any patch is cut; ``entities``: ``(text index, mask (*spatial) bool)``, one per finding sentence."""

    image: torch.Tensor
    entities: list[tuple[int, torch.Tensor]]


def grounding_case(
    image: torch.Tensor, masks: list[tuple[int, np.ndarray]], *, affine=None, scan_shape=None, position=False
) -> GroundingCase:
    """A case from a preprocessed image ``(1, C, *model_grid)`` and ``(text index, mask on the scan's
    grid)`` pairs; masks are resampled (nearest) to the model's grid; with ``position`` the whole-volume
    position channels are appended (``affine`` and ``scan_shape`` of the scan's grid)."""
    if position:
        from ml.engine.grounding import with_position

        image = with_position(image, affine, scan_shape)
    entities = []
    for index, mask in masks:
        target = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
        if tuple(target.shape[2:]) != tuple(image.shape[2:]):
            target = torch.nn.functional.interpolate(target, size=tuple(image.shape[2:]), mode="nearest")
        entities.append((int(index), target[0, 0] > 0))
    return GroundingCase(image=image[0], entities=entities)


def _window(
    spatial: tuple[int, ...], roi: list[int], rng: np.random.Generator, around: torch.Tensor | None
) -> tuple[slice, ...]:
    """A ``roi`` window in ``spatial`` centred on a random voxel of ``around`` (anywhere when None or
    empty), clipped to the volume (start 0 where the volume is smaller than the window)."""
    centre = None
    if around is not None:
        inside = torch.nonzero(around)
        if len(inside):
            centre = inside[int(rng.integers(len(inside)))].tolist()
    starts = []
    for axis, (size, r) in enumerate(zip(spatial, roi, strict=True)):
        if size <= r:
            starts.append(0)
        elif centre is not None:
            starts.append(int(np.clip(centre[axis] - r // 2, 0, size - r)))
        else:
            starts.append(int(rng.integers(0, size - r + 1)))
    return tuple(slice(s, s + r) for s, r in zip(starts, roi, strict=True))


def _pad_to(x: torch.Tensor, roi: list[int]) -> torch.Tensor:
    pad = [
        p for size, r in reversed(list(zip(x.shape[-len(roi) :], roi, strict=True))) for p in (0, r - size)
    ]
    return torch.nn.functional.pad(x, pad) if any(pad) else x


def grounding_patch(
    case: GroundingCase, target: int, roi: list[int], rng: np.random.Generator, fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A patch of ``case`` (image with its position channels) and the mask of entity ``target`` in it.

    The window is centred, with probability ``fraction``, on a finding of the case: the target's own
    mask (so positives are seen however small the finding) or, as often, another entity's (a hard
    negative: a finding, but not this sentence's; the target there is mostly empty) when the case has
    others; otherwise anywhere."""
    _, mask = case.entities[target]
    others = [m for i, (_, m) in enumerate(case.entities) if i != target]
    around = None
    if rng.random() < fraction:
        around = others[int(rng.integers(len(others)))] if others and rng.random() < 0.5 else mask
    index = _window(tuple(mask.shape), roi, rng, around)
    return _pad_to(case.image[(slice(None), *index)], roi), _pad_to(mask[index].float(), roi)


def train_grounding(
    model: torch.nn.Module,
    cases: list[GroundingCase],
    text: torch.Tensor,
    roi: list[int],
    params: TrainParams,
    *,
    save: Callable[[Checkpoint], None],
    resume: Checkpoint | None = None,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train a text-conditioned network (``forward(image, text_embedding)``, one output channel read
    with a sigmoid) in place for ``params.steps`` steps in all, continuing from ``resume``.

    Each batch item is one entity (a finding sentence and its mask) of a random case: a patch from
    ``grounding_patch`` (``params.foreground_fraction`` of them on the entity's own mask), the sentence's
    row of ``text`` ``(n_texts, text_dim)`` and the entity's mask as the target; loss Dice (over the
    batch, so patches with an empty target count) + binary cross-entropy. Checkpoints as ``train``."""
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    entities = [(c, e) for c, case in enumerate(cases) for e in range(len(case.entities))]
    if not entities:
        raise ValueError("no (sentence, mask) pair to train on")
    text = text.to(device)

    def batch(rng: np.random.Generator) -> tuple[Callable[[], torch.Tensor], torch.Tensor]:
        images, targets, rows = [], [], []
        for _ in range(params.batch_size):
            c, e = entities[int(rng.integers(len(entities)))]
            image, target = grounding_patch(cases[c], e, roi, rng, params.foreground_fraction)
            images.append(image)
            targets.append(target)
            rows.append(cases[c].entities[e][0])
        x = torch.stack(images).to(device)
        return (lambda: model(x, text[rows])), torch.stack(targets)[:, None].to(device)

    def first() -> None:  # a first training standardises the sentences by its own
        if hasattr(model, "set_text_statistics"):
            model.set_text_statistics(text)

    return _loop(
        model, loss_fn, batch, params, save=save, resume=resume, device=device, on_step=on_step, before=first
    )
