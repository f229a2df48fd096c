"""Loading registered models and checking them with a forward pass on a dummy input.

Formats: a MONAI bundle (a folder or zip holding ``configs/inference.json`` (or ``.yaml``) with a
``network_def`` and ``models/model.pt`` with its state dict, or only ``models/model.ts``), a TorchScript
file, or a state dict with a MONAI network spec ``{"name": "UNet", "args": {...}}`` (a class of
``monai.networks.nets``). Every problem is a ``ModelError`` whose message names the file and the field.

Configs and specs are data, never code: ``ml.bundle_config`` reads them (no ``$`` evaluation, references
resolved by the platform), the network is built only from an allow-listed ``monai.networks.nets`` class
(``network_class``), and weights load with ``torch.load(weights_only=True)``. MONAI's ``ConfigParser``
is not used. A TorchScript file is code the JIT runs: validation loads it in a child process
(``ml.engine.check``), never in the process that runs the job.
"""

from __future__ import annotations

import inspect
import io
from pathlib import Path
from typing import Any

import monai.networks.nets as nets
import torch

from ml.bundle_config import (
    TARGET_FORM,
    TORCHSCRIPT_NAME,
    WEIGHTS_NAME,
    check_spec_args,
    read_bundle_files,
)
from ml.specs import InputSpec, ModelError

# Constructor arguments that fetch or read weights from elsewhere (a URL, the hub, a file path): the weights
# of a registered model come from its own file, so these must be absent, null or false.
FETCHING_ARGS = {"pretrained", "pretrained_url", "weights", "path_or_repo_id", "filename", "checkpoint"}
# Arguments MONAI first ignored (deprecated) and later removed: configs written for the older MONAI (the
# model zoo's swin_unetr_btcv_segmentation passes img_size) build as they did there.
REMOVED_ARGS = {"SwinUNETR": {"img_size"}}
# Modules of monai.networks.nets whose networks load files or download at construction whatever the args.
EXCLUDED_MODULES = {"monai.networks.nets.transchex", "monai.networks.nets.cell_sam_wrapper"}


def network_class(target: str, file: str, field: str) -> type[torch.nn.Module]:
    """The allow-listed class ``target`` names: a network class of ``monai.networks.nets`` given by its bare
    name (``UNet``), as ``monai.networks.nets.UNet`` or by its module path
    (``monai.networks.nets.unet.UNet``). Nothing is imported by name: the class is looked up in the
    ``monai.networks.nets`` namespace and a module path must be the class's own module."""
    if not isinstance(target, str) or not TARGET_FORM.match(target):
        raise ModelError(file, field, f"{target!r}: only classes of monai.networks.nets can be built")
    parts = target.split(".")
    name = parts[-1]
    cls = getattr(nets, name, None)
    refused = ModelError(file, field, f"{target!r} is not a network of monai.networks.nets")
    if name.startswith("_") or not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise refused
    if len(parts) == 5 and cls.__module__ != ".".join(parts[:4]):
        raise refused  # monai.networks.nets.<module>.<Class>: the class must live in that module
    if cls.__module__ in EXCLUDED_MODULES or not cls.__module__.startswith("monai.networks.nets."):
        raise ModelError(file, field, f"{target!r} loads weights from elsewhere when built; not allowed")
    return cls


def network_build(
    target: str, args: dict[str, Any], file: str, *, field: str, target_field: str
) -> torch.nn.Module:
    """``target`` (allow-listed, see ``network_class``; refused naming ``target_field``) called with
    ``args`` (plain data, already checked by ``ml.bundle_config``; problems name ``field``)."""
    cls = network_class(target, file, target_field)
    for key in sorted(FETCHING_ARGS & set(args)):
        if args[key] not in (None, False):
            raise ModelError(
                file, f"{field}.{key}", "weights come from the registered file; must be null or false"
            )
    for key in sorted(REMOVED_ARGS.get(cls.__name__, set()) & set(args)):
        if key not in inspect.signature(cls.__init__).parameters:
            args = {k: v for k, v in args.items() if k != key}  # deprecated and ignored, then removed
    try:
        return cls(**args)
    except Exception as exc:  # the network's own argument checks
        raise ModelError(file, field, f"{target} cannot be built: {exc}") from exc


def network_from_spec(spec: dict[str, Any], file: str = "network") -> torch.nn.Module:
    """A ``monai.networks.nets`` network from ``{"name", "args"}`` (args plain data), or the platform's
    text-conditioned ``TextConditionedUNet`` (``ml.engine.grounding``)."""
    name = spec.get("name") if isinstance(spec, dict) else None
    args = check_spec_args(spec.get("args") if isinstance(spec, dict) else None, file)
    if name == "TextConditionedUNet":
        from ml.engine.grounding import grounding_from_spec

        return grounding_from_spec({**spec, "args": args}, file)
    return network_build(str(name), args, file, field="network.args", target_field="network.name")


def load_model(path: Path, fmt: str, *, network: dict | None = None, device: str = "cpu") -> torch.nn.Module:
    """The model in ``path`` (file, folder or zip) in eval mode on ``device``."""
    name = Path(path).name
    try:
        if fmt == "torchscript":
            model = torch.jit.load(str(path), map_location=device)
        elif fmt == "state-dict":
            model = network_from_spec(network or {}, name)
            _load_state(model, _torch_load(Path(path).read_bytes(), name, "weights"), name)
        elif fmt == "monai-bundle":
            model = _bundle(Path(path), device)
        else:
            raise ModelError(name, "format", f"unknown format {fmt!r}")
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(name, "weights", f"cannot be loaded as {fmt}: {exc}") from exc
    return model.to(device).eval()


def _torch_load(data: bytes, file: str, field: str) -> dict:
    """A state dict from a weights-only ``torch.load`` (tensors and plain containers, no pickled code):
    the file itself, or the ``state_dict`` / ``model`` entry of a checkpoint (MONAI's ``CheckpointSaver``
    writes ``{"model": ...}``); the ``module.`` prefix ``DataParallel`` adds to every key is removed."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(file, field, f"not a PyTorch state dict: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ModelError(file, field, f"expected a state dict, got {type(state).__name__}")
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _load_state(model: torch.nn.Module, state: dict, file: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelError(file, "weights", "does not fit the network: " + " ".join(first)) from exc


def _bundle(path: Path, device: str = "cpu") -> torch.nn.Module:
    """A MONAI bundle's network: ``network_def`` built from its config read as data (``ml.bundle_pipeline``:
    no ``$`` evaluation beyond the recognised idioms, ``_target_`` only from the allow-list) with the state
    dict of ``models/model.pt``; or, when the bundle ships only ``models/model.ts``, that TorchScript file
    (code the JIT runs: the validation loads it in a child process, ``ml.engine.check``)."""
    from ml.bundle_pipeline import bundle_read

    name = path.name
    bundle = bundle_read(path)
    if bundle.torchscript:
        data = read_bundle_files(path, (TORCHSCRIPT_NAME,))[TORCHSCRIPT_NAME]
        return torch.jit.load(io.BytesIO(data), map_location=device)
    definition = bundle.network
    assert definition is not None
    model = network_build(
        definition.target, definition.args, name, field="network_def", target_field="network_def._target_"
    )
    files = read_bundle_files(path, (WEIGHTS_NAME,))
    _load_state(model, _torch_load(files[WEIGHTS_NAME], name, WEIGHTS_NAME), name)
    return model


def check_forward(model: torch.nn.Module, spec: InputSpec, label_names: list[str], file: str) -> None:
    """A forward pass on zeros of the input spec: output channels must match the label names, values
    finite, spatial shape that of the input."""
    # a model that takes whole-volume position channels (ml.engine.grounding) gets them after the image's
    x = torch.zeros((1, spec.channels + getattr(model, "position_channels", 0), *spec.roi_size))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    text_dim = getattr(model, "text_dim", None)  # a text-conditioned model also takes a sentence embedding
    try:
        with torch.no_grad():
            if text_dim:
                out = model(x.to(device), torch.zeros((1, text_dim), device=device))
            else:
                out = model(x.to(device))
    except Exception as exc:
        raise ModelError(file, "input_spec", f"forward pass on {tuple(x.shape)} failed: {exc}") from exc
    if isinstance(out, (list, tuple)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != spec.ndim + 2:
        raise ModelError(file, "weights", f"the output is not a (1, C, {'spatial ' * spec.ndim}) tensor")
    if out.shape[1] != len(label_names):
        raise ModelError(
            file, "label_names", f"{len(label_names)} label names for {out.shape[1]} output channels"
        )
    if list(out.shape[2:]) != list(spec.roi_size):
        raise ModelError(file, "roi_size", f"output {list(out.shape[2:])} for input {spec.roi_size}")
    if not torch.isfinite(out).all():
        raise ModelError(file, "weights", "the model outputs NaN or infinite values")
