"""Running a MONAI bundle the way MONAI's own bundle runner does, from its pipeline read as data.

``ml.bundle_pipeline`` reads the bundle's ``preprocessing``, ``inferer`` and ``postprocessing`` (allow-listed
``monai.transforms`` classes with data arguments); this module builds those MONAI objects and runs them
like MONAI's ``SupervisedEvaluator`` does for ``monai.bundle run``:

    scan (X, Y, Z) + affine (voxel -> RAS+ mm)
      -> MetaTensor (1, X, Y, Z) with that affine (what LoadImaged + EnsureChannelFirstd give)
      -> the bundle's preprocessing (Orientationd, Spacingd, intensity transforms, ...)
      -> collated to a batch, the bundle's inferer (SlidingWindowInferer ...) with the network
      -> decollated, the bundle's postprocessing (Activationsd, Invertd back to the scan's grid,
         AsDiscreted, KeepLargestConnectedComponentd ...)
      -> one mask per named output channel on the scan's own grid.

The stored array is not RAS-ordered in general (DICOM CT is LPS-ordered: X runs to the patient's right):
``Orientationd`` reorders it exactly as MONAI does when it loads the same NIfTI, and ``Invertd`` brings
the prediction back.

Memory: where the postprocessing inverts full probabilities and then takes the argmax
(``Activationsd(softmax) -> Invertd(nearest_interp=False) -> AsDiscreted(argmax)``, most of the zoo), the
runner inverts 8 channels at a time and keeps a running maximum (``invert_argmax``): the same label map
(resampling is linear and per channel) with about 10 scan-sized arrays instead of one per label (105 for
the whole-body CT bundle). Taking the argmax first and inverting the label map with nearest interpolation
would be cheaper still but is not what MONAI gives: on the real CT of ``tests/ml/test_bundles.py`` it
agreed with ``monai.bundle`` at Dice 0.70 only. Confidence and entropy are means over each label's
voxels on the model's grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import monai.inferers as inferers
import monai.transforms as mt
import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch, list_data_collate

from ml.bundle_pipeline import INFERERS, PRED_KEY, TRANSFORMS, Bundle, TransformDef
from ml.engine.inference import LabelResult, Prediction
from ml.specs import ModelError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "float64": torch.float64, "int8": torch.int8,
          "int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "uint8": torch.uint8,
          "bool": torch.bool}  # fmt: skip


@dataclass
class BundleObjects:
    preprocessing: mt.Compose
    inferer: inferers.Inferer
    postprocessing: mt.Compose
    network: torch.nn.Module | None
    invert: mt.Invertd | None  # applied a few channels at a time, then the argmax (see argmax_split)
    after: mt.Compose | None  # the postprocessing after that argmax


def argmax_split(post: list[TransformDef]) -> int | None:
    """Where ``post`` inverts probabilities and then takes their argmax (``Invertd(nearest_interp=False)``
    followed by ``AsDiscreted(argmax=True)``, after a softmax or no activation): the index of that
    ``Invertd``, which the runner then applies a few channels at a time (see the module docstring); None
    otherwise."""
    for i in range(len(post) - 1):
        inv, disc = post[i], post[i + 1]
        if inv.name != "Invertd" or disc.name != "AsDiscreted":
            continue
        if set(disc.args) - {"keys", "argmax"} or disc.args.get("argmax") is not True:
            return None
        if inv.args.get("nearest_interp", True) is not False:
            return None  # a nearest inversion: cheap as written
        if any(t.name == "Activationsd" and t.args.get("sigmoid") for t in post[:i]):
            return None
        return i
    return None


def _build(defn: TransformDef, file: str, preprocessing: mt.Compose | None = None) -> Any:
    if defn.name not in TRANSFORMS:  # read by ml.bundle_pipeline already; checked again on the worker
        raise ModelError(file, f"{defn.field}._target_", f"{defn.name!r} is not allowed")
    cls = getattr(mt, defn.name)
    args = dict(defn.args)
    for key in ("dtype", "output_dtype"):
        if isinstance(args.get(key), str):
            if args[key] not in DTYPES:
                raise ModelError(file, f"{defn.field}.{key}", f"{args[key]!r}: one of {', '.join(DTYPES)}")
            args[key] = DTYPES[args[key]]
    if defn.name == "Invertd":
        args["transform"] = preprocessing
    try:
        return cls(**args)
    except Exception as exc:  # the transform's own argument checks
        raise ModelError(
            file, defn.field, f"{defn.name} cannot be built from these arguments: {exc}"
        ) from exc


def bundle_objects(bundle: Bundle, *, build_network: bool = False, lean: bool = True) -> BundleObjects:
    """The MONAI objects of ``bundle``'s pipeline (and, with ``build_network``, its ``network_def`` with
    freshly initialised weights: the zoo count's check that the config builds). With ``lean`` and a
    postprocessing that ``argmax_split`` recognises, ``postprocessing`` is what comes before its
    ``Invertd``, ``invert`` that ``Invertd`` and ``after`` what follows its ``AsDiscreted``."""
    from ml.engine.loading import network_build

    pipeline = bundle.pipeline
    if pipeline is None:
        raise ModelError(bundle.file, "preprocessing", "the bundle has no pipeline")
    pre = mt.Compose([_build(t, bundle.file) for t in pipeline.preprocessing])
    post_defs = pipeline.postprocessing
    split = argmax_split(post_defs) if lean else None
    invert = after = None
    if split is not None:
        invert = _build(post_defs[split], bundle.file, pre)
        after = mt.Compose([_build(t, bundle.file, pre) for t in post_defs[split + 2 :]])
        post_defs = post_defs[:split]
    post = mt.Compose([_build(t, bundle.file, pre) for t in post_defs])
    name = pipeline.inferer.name
    if name not in INFERERS:
        raise ModelError(bundle.file, "inferer._target_", f"{name!r} is not allowed")
    try:
        inferer = getattr(inferers, name)(**pipeline.inferer.args)
    except Exception as exc:
        raise ModelError(
            bundle.file, "inferer", f"{name} cannot be built from these arguments: {exc}"
        ) from exc
    network = None
    if build_network and bundle.network is not None:
        d = bundle.network
        network = network_build(
            d.target, d.args, bundle.file, field="network_def", target_field="network_def._target_"
        )
    return BundleObjects(
        preprocessing=pre, inferer=inferer, postprocessing=post, network=network, invert=invert, after=after
    )


INVERT_CHANNELS = 8  # channels inverted together by invert_argmax: memory ~ 8 + 2 scan-sized arrays


def invert_argmax(item: dict, invert: mt.Invertd, key: str = PRED_KEY, chunk: int | None = None) -> dict:
    """``AsDiscreted(argmax)(Invertd(item))`` computed ``chunk`` channels at a time: each group inverted
    alone (resampling is per channel, so each channel is what the full inversion gives), a running maximum
    and its channel kept; the first channel wins ties, as ``torch.argmax``. Memory: ``chunk`` + 2
    scan-sized arrays whatever the number of labels."""
    pred = item[key]
    chunk = chunk or INVERT_CHANNELS
    best = index = meta_source = None
    for start in range(0, pred.shape[0], chunk):
        group = invert({**item, key: pred[start : start + chunk]})[key]
        values, where = group.as_tensor().max(dim=0, keepdim=True)  # first maximum within the group
        if best is None:
            best, index, meta_source = values, where.to(torch.int16), group
            continue
        better = values > best
        best = torch.where(better, values, best)
        index = torch.where(better, where.to(torch.int16) + start, index)
        del group
    assert index is not None and meta_source is not None
    out = MetaTensor(index.to(torch.float32), meta=meta_source.meta, affine=meta_source.affine)
    return {**item, key: out}


def scan_image(volume: np.ndarray, affine: np.ndarray) -> MetaTensor:
    """The scan as MONAI's ``LoadImaged`` + ``EnsureChannelFirstd`` give a NIfTI of it: ``(1, X, Y, Z)``
    float32 with its voxel -> RAS+ affine."""
    affine_t = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    data = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None]
    meta = {"affine": affine_t.clone(), "original_affine": affine_t.clone(), "space": "RAS",
            "spatial_shape": np.asarray(volume.shape), "original_channel_dim": "no_channel",
            "filename_or_obj": "scan"}  # fmt: skip
    return MetaTensor(data, affine=affine_t, meta=meta)


def bundle_predict(
    bundle: Bundle,
    model: torch.nn.Module,
    volume: np.ndarray,
    affine: np.ndarray,
    label_names: list[str],
    *,
    device: str = "cpu",
    lean: bool = True,
    sw_batch_size: int | None = None,
) -> Prediction:
    """One mask per named output channel of ``model`` run with ``bundle``'s pipeline on the scan
    ``volume`` (X, Y, Z) with ``affine`` (voxel -> RAS+ mm); masks on the scan's grid. A ``background``
    channel gives no label."""
    started = time.perf_counter()
    objects = bundle_objects(bundle, lean=lean)
    assert bundle.pipeline is not None
    key = bundle.pipeline.image_key
    if sw_batch_size is not None and hasattr(objects.inferer, "sw_batch_size"):
        objects.inferer.sw_batch_size = int(sw_batch_size)
    try:
        data = objects.preprocessing({key: scan_image(volume, affine)})
    except Exception as exc:
        raise ModelError(bundle.file, "preprocessing", f"failed on this scan: {exc}") from exc
    batch = list_data_collate([data])
    warnings: list[str] = []
    t0 = time.perf_counter()
    try:
        pred = _infer(objects.inferer, model, batch[key], device, bundle.pipeline.amp)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        if isinstance(objects.inferer, inferers.SlidingWindowInferer):
            warnings.append("out of GPU memory: the windows' outputs kept on the CPU")
            objects.inferer.device = torch.device("cpu")
            try:
                pred = _infer(objects.inferer, model, batch[key], device, bundle.pipeline.amp)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                pred = None
        else:
            pred = None
        if pred is None:
            warnings.append("out of GPU memory: ran on the CPU")
            model, device = model.to("cpu"), "cpu"
            pred = _infer(objects.inferer, model, batch[key], "cpu", False)
    seconds_model = time.perf_counter() - t0
    if not torch.isfinite(pred.as_tensor() if isinstance(pred, MetaTensor) else pred).all():
        raise ModelError(bundle.file, "weights", "the model output NaN or infinite values on this scan")
    if pred.shape[1] != len(label_names):
        raise ModelError(
            bundle.file, "label_names", f"{len(label_names)} label names for {pred.shape[1]} output channels"
        )
    stats = _stats(pred[0], bundle.pipeline.postprocessing)
    batch[PRED_KEY] = pred
    item = decollate_batch(batch)[0]
    del batch, data, pred
    try:
        item = objects.postprocessing(item)
        if objects.invert is not None and objects.after is not None:
            item = objects.after(invert_argmax(item, objects.invert))
        out = item[PRED_KEY]
    except Exception as exc:
        raise ModelError(bundle.file, "postprocessing", f"failed on this scan: {exc}") from exc
    labels, label_map, more = _labels(out, label_names, tuple(volume.shape), bundle, stats)
    warnings += more
    return Prediction(labels=labels, label_map=label_map, device=device, seconds_model=seconds_model,
                      seconds_total=time.perf_counter() - started, warnings=warnings)  # fmt: skip


def _infer(inferer, model, x, device: str, amp: bool):
    autocast = amp and device.startswith("cuda")
    with torch.no_grad(), torch.autocast("cuda", enabled=autocast):
        pred = inferer(x.to(device), model)
    if isinstance(pred, (list, tuple)):  # deep supervision heads: the first is the prediction
        pred = pred[0]
    return pred.float()


def _activation(post: list[TransformDef], channels: int) -> str:
    for t in post:
        if t.name == "Activationsd":
            if t.args.get("sigmoid"):
                return "sigmoid"
            if t.args.get("softmax"):
                return "softmax"
    return "sigmoid" if channels == 1 else "softmax"


def _stats(logits: torch.Tensor, post: list[TransformDef]) -> dict[int, tuple[float, float]]:
    """Per channel: mean probability and normalised entropy over the voxels it wins, on the model's grid."""
    channels = logits.shape[0]
    x = logits.as_tensor() if isinstance(logits, MetaTensor) else logits
    out: dict[int, tuple[float, float]] = {}
    if _activation(post, channels) == "sigmoid":
        for c in range(channels):
            p = torch.sigmoid(x[c]).clamp(1e-7, 1 - 1e-7)
            inside = p > 0.5
            if bool(inside.any()):
                ent = -(p * p.log() + (1 - p) * (1 - p).log()) / np.log(2)
                out[c] = (float(p[inside].mean()), float(ent[inside].mean()))
        return out
    probs = torch.softmax(x, dim=0)
    winner = probs.argmax(dim=0)
    entropy = -(probs * probs.clamp_min(1e-7).log()).sum(dim=0) / np.log(max(channels, 2))
    for c in range(channels):
        inside = winner == c
        if bool(inside.any()):
            out[c] = (float(probs[c][inside].mean()), float(entropy[inside].mean()))
    return out


def _labels(
    out: torch.Tensor, names: list[str], shape: tuple[int, ...], bundle: Bundle, stats: dict
) -> tuple[list[LabelResult], np.ndarray, list[str]]:
    """Masks from the postprocessed prediction ``out`` ``(C', X, Y, Z)``: a label map (one channel of class
    numbers, after ``AsDiscreted(argmax)``) or one channel per label (thresholded, one-hot or
    probabilities); returned as one label map (the platform's form of a model's masks, ``Prediction``)."""
    t = out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)
    if tuple(t.shape[1:]) != tuple(shape):
        raise ModelError(
            bundle.file, "postprocessing", f"the prediction is on a {list(t.shape[1:])} grid, not the scan's "
            f"{list(shape)}: the postprocessing needs Invertd to bring it back"
        )  # fmt: skip
    post = bundle.pipeline.postprocessing if bundle.pipeline else []
    discrete = any(d.name == "AsDiscreted" for d in post)
    if t.shape[0] == 1 and len(names) > 1:
        index = t[0].round().to(torch.int64)
        masks = {c: index == c for c in range(len(names))}
    elif t.shape[0] == len(names):
        if discrete or _activation(post, len(names)) == "sigmoid" or len(names) == 1:
            masks = {c: t[c] > 0.5 for c in range(len(names))}
        else:
            index = t.argmax(dim=0)
            masks = {c: index == c for c in range(len(names))}
    else:
        raise ModelError(
            bundle.file, "postprocessing", f"{t.shape[0]} output channels after postprocessing for "
            f"{len(names)} label names"
        )  # fmt: skip
    index = np.zeros(shape, dtype=np.uint8 if len(names) <= 256 else np.uint16)
    results, overlap = [], False
    for c, name in enumerate(names):
        mask = masks[c]
        if name.lower() == "background" or not bool(mask.any()):
            continue
        where = mask.cpu().numpy()
        overlap = overlap or bool(index[where].any())
        index[where] = c  # a later channel wins where channels overlap (sigmoid outputs)
        confidence, entropy = stats.get(c, (float("nan"), float("nan")))
        results.append(LabelResult(name=name, value=c, voxels=0, confidence=confidence, entropy=entropy))
        del where
    for r in results:
        r.voxels = int(np.count_nonzero(index == r.value))
    warnings = (
        ["the bundle's output channels overlap: a voxel goes to the last of its channels"] if overlap else []
    )
    return [r for r in results if r.voxels], index, warnings
