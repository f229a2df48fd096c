"""A MONAI bundle's inference pipeline and metadata read as data: what the bundle runner
(``ml.engine.bundle_run``) rebuilds, nothing evaluated or imported.

From ``configs/inference.json`` (or ``.yaml``) the platform reads four entries and what they reference:
``network_def`` (``ml.bundle_config``), ``preprocessing``, ``inferer`` and ``postprocessing``; every other
entry (``imports``, ``device``, ``datalist``, ``dataset``, ``evaluator``, ``initialize``, ``run`` ...) is
MONAI's own runner's business and is not read, except two checks: ``network`` must be the usual
``$@network_def.to(@device)`` and ``evaluator`` a ``SupervisedEvaluator`` (a bundle's own evaluator in its
``scripts/`` would change what runs).

* Transforms: each item of the ``Compose`` lists is ``{"_target_": <class>, args...}`` with the class on
  an allow-list of ``monai.transforms`` (``TRANSFORMS``); ``LoadImaged`` and ``EnsureChannelFirstd`` are
  replaced by the platform's loading of the scan (a channel-first MetaTensor with its RAS affine), and
  ``SaveImaged``/``ToDeviced``/``DataStatsd`` are dropped (their arguments are not read: output paths and
  dtypes are the platform's). ``device`` arguments are dropped (the worker picks the device). An item with
  ``"_disabled_": true`` is left out, as MONAI does. ``Invertd``'s ``transform`` must be the
  preprocessing itself. ``Lambdad`` and anything from the bundle's ``scripts/`` folder are refused: that
  folder is never imported.
* Inferer: ``SimpleInferer``, ``SlidingWindowInferer`` or ``SliceInferer`` with data arguments
  (``roi_size``, ``sw_batch_size``, ``overlap``, ``mode`` ...).
* ``$`` expressions are never evaluated. A short list of exact idioms is recognised by meaning after
  whitespace normalisation (``IDIOMS``: ``$@x``, ``$copy.deepcopy(@x)``, ``$monai.utils.CommonKeys.PRED``,
  ``$torch.float32`` ...), and literal expressions (numbers, strings, lists, ``@`` references,
  ``a if @flag else b``, ``+`` of lists or numbers, unary minus, ``len(@list)``) are interpreted from
  their syntax tree by the platform's own code (``ml.bundle_expressions``: no ``eval``, no names, no calls but
  ``len``, no attributes). Anything else is a ``ModelError`` naming the file and the key path.
* ``configs/metadata.json``: label names from ``network_data_format.outputs.pred.channel_def``, input
  channels, spatial shape and modality from ``inputs.<image key>``.

No torch here: the web tier checks an upload with it before storing anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml.bundle_config import (
    CONFIG_NAMES,
    METADATA_NAME,
    TORCHSCRIPT_NAME,
    WEIGHTS_NAME,
    NetworkDef,
    _Reader,
    _short,
    bundle_members,
    network_def,
    parse_config,
    read_bundle_files,
)
from ml.bundle_expressions import IDIOMS, REFERENCE_IDIOM, SCRIPTS_NOTE, expression, normalise
from ml.specs import ModelError

# what the platform does with each allowed monai.transforms class
REPLACED = {"LoadImaged", "EnsureChannelFirstd"}  # the platform loads the scan as a channel-first MetaTensor
DROPPED = {"SaveImaged", "ToDeviced", "DataStatsd", "CopyItemsd"}  # output and bookkeeping; args not read
TRANSFORMS = {
    # spatial (invertible: Invertd undoes them)
    "Orientationd", "Spacingd", "CropForegroundd", "SpatialPadd", "DivisiblePadd", "CenterSpatialCropd",
    "Resized", "Flipd", "Rotate90d",
    # intensity
    "ScaleIntensityRanged", "ScaleIntensityd", "NormalizeIntensityd", "ScaleIntensityRangePercentilesd",
    "ThresholdIntensityd", "ClipIntensityPercentilesd",
    # types
    "EnsureTyped", "CastToTyped",
    # postprocessing
    "Activationsd", "AsDiscreted", "Invertd", "KeepLargestConnectedComponentd", "FillHolesd",
    "RemoveSmallObjectsd", "SqueezeDimd",
}  # fmt: skip
INFERERS = {
    "SimpleInferer": set(),
    "SlidingWindowInferer": {"roi_size", "sw_batch_size", "overlap", "mode", "sigma_scale", "padding_mode",
                             "cval", "cache_roi_weight_map", "cpu_thresh", "buffer_steps", "buffer_dim"},
    "SliceInferer": {"spatial_dim", "roi_size", "sw_batch_size", "overlap", "mode", "sigma_scale",
                     "padding_mode", "cval"},
}  # fmt: skip
DEVICE_ARGS = {"device", "sw_device", "progress"}  # the worker's choice, not the bundle's
EVALUATORS = {"SupervisedEvaluator", "monai.engines.SupervisedEvaluator"}
NETWORK_IDIOMS = {"$@network_def.to(@device)", "@network_def", "$@network_def"}
TRANSFORM_FORM = re.compile(r"^(?:monai\.transforms\.(?:[a-z_][a-z0-9_.]*\.)?)?([A-Za-z][A-Za-z0-9_]*)$")
INFERER_FORM = re.compile(r"^(?:monai\.inferers\.(?:[a-z_][a-z0-9_.]*\.)?)?([A-Za-z][A-Za-z0-9_]*)$")
PRED_KEY = "pred"  # where MONAI's SupervisedEvaluator puts the network output (CommonKeys.PRED)


@dataclass
class TransformDef:
    name: str  # the monai.transforms class
    args: dict[str, Any]
    field: str  # where it was in the config (for errors)


@dataclass
class BundleMetadata:
    labels: list[str] | None  # outputs.pred.channel_def by channel
    out_channels: int | None
    in_channels: int | None
    spatial_shape: list[int] | None  # integers only (the zoo also writes "8*n")
    modality: str | None  # CT, MR, ... (MRI read as MR); None when "none" or absent
    name: str = ""
    version: str = ""


@dataclass
class BundlePipeline:
    image_key: str
    preprocessing: list[TransformDef]
    inferer: TransformDef
    postprocessing: list[TransformDef]
    amp: bool = False
    notes: list[str] = field(default_factory=list)  # what the platform replaced or dropped

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BundlePipeline:
        def defs(items):
            return [TransformDef(**t) for t in items]

        return cls(
            image_key=raw["image_key"], preprocessing=defs(raw["preprocessing"]),
            inferer=TransformDef(**raw["inferer"]), postprocessing=defs(raw["postprocessing"]),
            amp=bool(raw.get("amp")), notes=list(raw.get("notes") or []),
        )  # fmt: skip


@dataclass
class Bundle:
    """What the platform reads of a bundle: the network (``network`` from ``network_def``, or
    ``torchscript`` when only ``models/model.ts`` is shipped), the pipeline (None for a bare
    ``network_def`` bundle: then the registered input spec says how to run it) and the metadata."""

    file: str
    config_member: str
    network: NetworkDef | None
    torchscript: bool
    pipeline: BundlePipeline | None
    metadata: BundleMetadata | None

    def summary(self) -> dict[str, Any]:
        """Stored with the model version (``ModelVersion.network["bundle"]``): what will run."""
        out: dict[str, Any] = {"config": self.config_member, "weights": TORCHSCRIPT_NAME if self.torchscript
                               else WEIGHTS_NAME}  # fmt: skip
        if self.network is not None:
            out["network_def"] = {"_target_": self.network.target, **self.network.args}
        if self.pipeline is not None:
            out["pipeline"] = self.pipeline.as_dict()
        if self.metadata is not None:
            out["metadata"] = asdict(self.metadata)
        return out


def bundle_read(path: Path) -> Bundle:
    """The bundle at ``path`` (folder or zip) read as data; ``ModelError`` naming file and key path."""
    name = path.name
    files = read_bundle_files(path, (*CONFIG_NAMES, METADATA_NAME))
    members = bundle_members(path)
    member = next((m for m in CONFIG_NAMES if m in files), None)
    config: dict[str, Any] = {}
    if member is not None:
        config = parse_config(files[member], name, member)
    torchscript = WEIGHTS_NAME not in members and TORCHSCRIPT_NAME in members
    if member is None and not torchscript:
        raise ModelError(name, CONFIG_NAMES[0], "missing from the MONAI bundle")
    if WEIGHTS_NAME not in members and TORCHSCRIPT_NAME not in members:
        raise ModelError(
            name, WEIGHTS_NAME, f"missing from the MONAI bundle (nor is there {TORCHSCRIPT_NAME})"
        )
    network = None
    if not torchscript:
        network = network_def(config, file=name, member=member or CONFIG_NAMES[0], expressions=expression)
    metadata = None
    if METADATA_NAME in files:
        metadata = metadata_read(files[METADATA_NAME], name)
    pipeline = None
    if any(k in config for k in ("preprocessing", "postprocessing", "inferer")):
        pipeline = pipeline_read(config, file=name)
    return Bundle(file=name, config_member=member or "", network=network, torchscript=torchscript,
                  pipeline=pipeline, metadata=metadata)  # fmt: skip


def metadata_read(data: bytes, file: str) -> BundleMetadata:
    """``configs/metadata.json``'s network data format (labels by channel, input channels and modality)."""
    try:
        meta = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(file, METADATA_NAME, f"not JSON: {exc}") from exc
    where = f"{METADATA_NAME}: network_data_format"
    fmt = meta.get("network_data_format") if isinstance(meta, dict) else None
    if not isinstance(fmt, dict):
        return BundleMetadata(None, None, None, None, None)
    inputs, outputs = fmt.get("inputs") or {}, fmt.get("outputs") or {}
    image = inputs.get("image") or next(iter(inputs.values()), {}) if isinstance(inputs, dict) else {}
    pred = outputs.get("pred") or next(iter(outputs.values()), {}) if isinstance(outputs, dict) else {}
    labels = None
    channel_def = pred.get("channel_def") if isinstance(pred, dict) else None
    if isinstance(channel_def, dict) and channel_def:
        try:
            by_index = {int(k): str(v).strip() for k, v in channel_def.items()}
        except (TypeError, ValueError) as exc:
            raise ModelError(
                file, f"{where}.outputs.pred.channel_def", "keys must be channel numbers"
            ) from exc
        if sorted(by_index) != list(range(len(by_index))):
            raise ModelError(file, f"{where}.outputs.pred.channel_def", "channels must be numbered 0, 1, ...")
        labels = [by_index[i] for i in range(len(by_index))]

    def count(node: Any, key: str) -> int | None:
        value = node.get(key) if isinstance(node, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    shape = image.get("spatial_shape") if isinstance(image, dict) else None
    if not (isinstance(shape, list) and shape and all(isinstance(v, int) and v > 0 for v in shape)):
        shape = None
    modality = image.get("modality") if isinstance(image, dict) else None
    modality = (
        {"MRI": "MR", "PET": "PT"}.get(str(modality).upper(), str(modality).upper()) if modality else None
    )
    if modality in ("NONE", "REGULAR", ""):
        modality = None
    return BundleMetadata(
        labels=labels, out_channels=count(pred, "num_channels"), in_channels=count(image, "num_channels"),
        spatial_shape=shape, modality=modality, name=str(meta.get("name") or ""),
        version=str(meta.get("version") or ""),
    )  # fmt: skip


def pipeline_read(config: dict[str, Any], *, file: str) -> BundlePipeline:
    """``preprocessing``, ``inferer`` and ``postprocessing`` of ``config`` as allow-listed transforms with
    data arguments (see the module docstring)."""
    reader = _Reader(config, file, expressions=expression)
    notes: list[str] = []
    _check_network_and_evaluator(config, reader)
    if "preprocessing" not in config:
        raise ModelError(file, "preprocessing", "missing: the bundle's pipeline needs its preprocessing")
    pre_raw = _transform_items(reader, config["preprocessing"], "preprocessing")
    image_key = _image_key(reader, pre_raw)
    pre = [_transform(reader, raw, where, image_key, notes, stage="pre") for raw, where in pre_raw]
    pre = [t for t in pre if t is not None]
    post_raw = _transform_items(reader, config.get("postprocessing") or [], "postprocessing")
    post = [_transform(reader, raw, where, image_key, notes, stage="post") for raw, where in post_raw]
    post = [t for t in post if t is not None]
    inferer = _inferer(reader, config.get("inferer", {"_target_": "SimpleInferer"}), notes)
    evaluator = _deref(reader, config.get("evaluator"), "evaluator") if "evaluator" in config else None
    amp = isinstance(evaluator, dict) and evaluator.get("amp") is True
    return BundlePipeline(image_key=image_key, preprocessing=pre, inferer=inferer, postprocessing=post,
                          amp=amp, notes=notes)  # fmt: skip


# ---- transforms ------------------------------------------------------------------------------------


def _deref(reader: _Reader, raw: Any, path: str, *, seen: tuple[str, ...] = ()) -> Any:
    """The raw config node a value stands for, following ``@x``, ``$@x`` and ``$copy.deepcopy(@x)`` (not
    converted: transform items keep their ``_target_``)."""
    if isinstance(raw, str) and raw.startswith(("@", "$")):
        text = raw[1:] if raw.startswith("@") else normalise(raw)
        m = REFERENCE_IDIOM.match(text if raw.startswith("$") else "@" + text)
        if m is None:
            if raw.startswith("$") and "scripts." in raw:
                raise reader.fail(path, f"{_short(raw)}: {SCRIPTS_NOTE}")
            raise reader.fail(
                path, f"{_short(raw)}: $ expressions are never evaluated; give the transforms as data"
            )
        ref = m.group(1) or m.group(2)
        if ref in seen or len(seen) > 32:
            raise reader.fail(path, f"{_short(raw)}: the references form a cycle")
        return _deref(reader, reader.lookup(ref, raw, path), path, seen=(*seen, ref))
    return raw


_LIST_SUM = re.compile(r"^@[A-Za-z0-9_:#]+(?:\+@[A-Za-z0-9_:#]+)+$")


def _deref_list(reader: _Reader, raw: Any, path: str) -> Any:
    """``_deref``, and ``$@a + @b`` (lists of transforms joined) read as the joined lists."""
    if isinstance(raw, str) and raw.startswith("$") and _LIST_SUM.match(normalise(raw)):
        out: list = []
        for part in normalise(raw).split("+"):
            node = _deref(reader, part, path)
            if not isinstance(node, list):
                raise reader.fail(path, f"{_short(raw)}: {part} is not a list of transforms")
            out += node
        return out
    return _deref(reader, raw, path)


def _transform_items(reader: _Reader, raw: Any, path: str) -> list[tuple[dict, str]]:
    """The items of a ``Compose`` (or a bare list) with where each was written."""
    node = _deref_list(reader, raw, path)
    if isinstance(node, dict):
        target = node.get("_target_")
        if target not in ("Compose", "monai.transforms.Compose"):
            raise reader.fail(f"{path}._target_", f"{target!r}: expected a Compose of transforms")
        if node.get("lazy") not in (None, False):
            raise reader.fail(f"{path}.lazy", "lazy resampling is not supported")
        items = _deref_list(reader, node.get("transforms", []), f"{path}.transforms")
        path = f"{path}.transforms"
    else:
        items = node
    if not isinstance(items, list):
        raise reader.fail(path, "must be a list of transforms")
    out = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        item = _deref(reader, item, where)
        if not isinstance(item, dict):
            raise reader.fail(where, "a transform must be an object with a _target_")
        out.append((item, where))
    return out


def _class_name(reader: _Reader, target: Any, where: str, form: re.Pattern, what: str) -> str:
    if not isinstance(target, str):
        raise reader.fail(f"{where}._target_", f"must name a class of {what}")
    if target.startswith("scripts.") or target.startswith("$") and "scripts." in target:
        raise reader.fail(f"{where}._target_", f"{target!r}: {SCRIPTS_NOTE}")
    m = form.match(target)
    if m is None:
        raise reader.fail(f"{where}._target_", f"{target!r}: only allow-listed classes of {what} are built")
    return m.group(1)


def _keys(reader: _Reader, raw: dict, where: str) -> list[str]:
    keys = reader.value(raw.get("keys", []), f"{where}.keys", depth=1)
    keys = [keys] if isinstance(keys, str) else keys
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise reader.fail(f"{where}.keys", "must be a key or a list of keys")
    return keys


def _image_key(reader: _Reader, items: list[tuple[dict, str]]) -> str:
    for raw, where in items:
        if (
            _class_name(reader, raw.get("_target_"), where, TRANSFORM_FORM, "monai.transforms")
            == "LoadImaged"
        ):
            keys = _keys(reader, raw, where)
            if len(keys) != 1:
                raise reader.fail(
                    f"{where}.keys", f"{keys}: the platform gives the model one scan (one image key)"
                )
            return keys[0]
    return "image"


def _disabled(reader: _Reader, raw: dict, where: str) -> bool:
    flag = raw.get("_disabled_", False)
    if isinstance(flag, str) and flag.startswith("$"):
        flag = IDIOMS.get(normalise(flag), flag)
    if not isinstance(flag, bool):
        raise reader.fail(f"{where}._disabled_", "must be true or false (never evaluated)")
    return flag


def _transform(
    reader: _Reader, raw: dict, where: str, image_key: str, notes: list[str], *, stage: str
) -> TransformDef | None:
    name = _class_name(reader, raw.get("_target_"), where, TRANSFORM_FORM, "monai.transforms")
    if _disabled(reader, raw, where):
        notes.append(f"{where}: {name} disabled in the bundle, left out")
        return None
    if name in DROPPED:
        notes.append(f"{where}: {name} dropped (the platform stores the masks)")
        return None
    if name in REPLACED and stage == "pre":
        notes.append(f"{where}: {name} replaced by the platform's loading of the scan")
        return None
    if name == "Lambdad" or name == "Lambda":
        raise reader.fail(f"{where}.func", f"{name} runs code from the config; not supported")
    if name not in TRANSFORMS:
        raise reader.fail(
            f"{where}._target_", f"{name!r} is not on the platform's allow-list of monai.transforms "
            f"({', '.join(sorted(TRANSFORMS))})"
        )  # fmt: skip
    args: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("_target_", "_disabled_", "_desc_") or key in DEVICE_ARGS:
            continue
        if key.startswith("_") and key.endswith("_"):
            raise reader.fail(
                f"{where}.{key}", f"{key} is not supported: transforms are built from data only"
            )
        if name == "Invertd" and key == "transform":
            target = _deref(reader, value, f"{where}.transform")
            if target is not _deref(reader, reader.root.get("preprocessing"), "preprocessing"):
                raise reader.fail(f"{where}.transform", "Invertd can only invert the bundle's preprocessing")
            continue
        if key in ("post_func", "func", "select_fn", "reader", "writer"):
            raise reader.fail(f"{where}.{key}", "a function or class argument is not built from data")
        args[key] = reader.value(value, f"{where}.{key}", depth=1)
    keys = _keys(reader, raw, where)
    wanted = image_key if stage == "pre" else PRED_KEY
    if keys and any(k != wanted for k in keys):
        raise reader.fail(
            f"{where}.keys", f"{keys}: the platform's {'scan is' if stage == 'pre' else 'prediction is'} "
            f"{wanted!r}; transforms of other keys (labels, extra images) are not supported"
        )  # fmt: skip
    if name == "Invertd":
        orig = args.get("orig_keys", image_key)
        if (orig if isinstance(orig, str) else (orig or [None])[0]) != image_key:
            raise reader.fail(f"{where}.orig_keys", f"{orig!r}: must be the image key {image_key!r}")
        for key in ("meta_keys", "orig_meta_keys", "meta_key_postfix"):
            args.pop(key, None)  # the MetaTensors carry their metadata
    if name == "Spacingd" and isinstance(args.get("pixdim"), list):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in args["pixdim"]):
            raise reader.fail(f"{where}.pixdim", f"{args['pixdim']}: positive spacings in mm")
    return TransformDef(name=name, args=args, field=where)


def _inferer(reader: _Reader, raw: Any, notes: list[str]) -> TransformDef:
    node = _deref(reader, raw, "inferer")
    if not isinstance(node, dict):
        raise reader.fail("inferer", "must be an object with a _target_")
    name = _class_name(reader, node.get("_target_"), "inferer", INFERER_FORM, "monai.inferers")
    if name not in INFERERS:
        raise reader.fail("inferer._target_", f"{name!r}: the platform runs {', '.join(sorted(INFERERS))}")
    args = {}
    for key, value in node.items():
        if key == "_target_" or key in DEVICE_ARGS:
            continue
        if key not in INFERERS[name]:
            raise reader.fail(f"inferer.{key}", f"not an argument the platform passes to {name}")
        args[key] = reader.value(value, f"inferer.{key}", depth=1)
    return TransformDef(name=name, args=args, field="inferer")


def _check_network_and_evaluator(config: dict[str, Any], reader: _Reader) -> None:
    network = config.get("network")
    if isinstance(network, str) and re.sub(r"\s+", "", network) not in NETWORK_IDIOMS:
        raise reader.fail("network", f"{_short(network)}: the platform runs network_def itself; expected "
                          "'$@network_def.to(@device)'")  # fmt: skip
    if "evaluator" in config:
        evaluator = _deref(reader, config["evaluator"], "evaluator")
        target = evaluator.get("_target_") if isinstance(evaluator, dict) else None
        if isinstance(target, str) and target.startswith("scripts."):
            raise reader.fail("evaluator._target_", f"{target!r}: {SCRIPTS_NOTE}")
        if target not in EVALUATORS:
            raise reader.fail(
                "evaluator._target_", f"{target!r}: the platform runs what SupervisedEvaluator runs"
            )
