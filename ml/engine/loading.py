"""Loading registered models and checking them with a forward pass on a dummy input.

Formats: a MONAI bundle (a folder or zip holding ``configs/inference.json`` with a ``network_def`` and
``models/model.pt`` with its state dict), a TorchScript file, or a state dict with a MONAI network spec
``{"name": "UNet", "args": {...}}`` (a class of ``monai.networks.nets``). Every problem is a
``ModelError`` whose message names the file and the field.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import monai.networks.nets as nets
import torch

from ml.specs import InputSpec, ModelError


def network_from_spec(spec: dict[str, Any], file: str = "network") -> torch.nn.Module:
    """A ``monai.networks.nets`` network from ``{"name", "args"}``, or the platform's text-conditioned
    ``TextConditionedUNet`` (``ml.engine.grounding``)."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name == "TextConditionedUNet":
        from ml.engine.grounding import grounding_from_spec

        return grounding_from_spec(spec, file)
    cls = getattr(nets, str(name), None) if name else None
    if cls is None or not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise ModelError(file, "network.name", f"{name!r} is not a network of monai.networks.nets")
    try:
        return cls(**(spec.get("args") or {}))
    except Exception as exc:  # the network's own argument checks
        raise ModelError(file, "network.args", f"{name} cannot be built: {exc}") from exc


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
            model = _bundle(Path(path))
        else:
            raise ModelError(name, "format", f"unknown format {fmt!r}")
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(name, "weights", f"cannot be loaded as {fmt}: {exc}") from exc
    return model.to(device).eval()


def _torch_load(data: bytes, file: str, field: str) -> dict:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(file, field, f"not a PyTorch state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(file, field, f"expected a state dict, got {type(state).__name__}")
    return state


def _load_state(model: torch.nn.Module, state: dict, file: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelError(file, "weights", "does not fit the network: " + " ".join(first)) from exc


def _bundle(path: Path) -> torch.nn.Module:
    name = path.name
    files: dict[str, bytes] = {}
    if path.is_dir():
        for wanted in ("configs/inference.json", "models/model.pt"):
            if (path / wanted).is_file():
                files[wanted] = (path / wanted).read_bytes()
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    parts = Path(info.filename).parts
                    for wanted in ("configs/inference.json", "models/model.pt"):
                        if len(parts) >= 2 and "/".join(parts[-2:]) == wanted:
                            files[wanted] = zf.read(info)
        except zipfile.BadZipFile as exc:
            raise ModelError(name, "bundle", "not a zip file or folder") from exc
    for wanted in ("configs/inference.json", "models/model.pt"):
        if wanted not in files:
            raise ModelError(name, wanted, "missing from the MONAI bundle")
    try:
        config = json.loads(files["configs/inference.json"])
    except json.JSONDecodeError as exc:
        raise ModelError(name, "configs/inference.json", f"not JSON: {exc}") from exc
    definition = config.get("network_def") if isinstance(config, dict) else None
    if not isinstance(definition, dict) or "_target_" not in definition:
        raise ModelError(name, "configs/inference.json", "needs a network_def with a _target_")
    from monai.bundle import ConfigParser

    try:
        parser = ConfigParser({"network_def": definition})
        model = parser.get_parsed_content("network_def")
    except Exception as exc:
        raise ModelError(name, "network_def", f"cannot be built: {exc}") from exc
    _load_state(model, _torch_load(files["models/model.pt"], name, "models/model.pt"), name)
    return model


def check_forward(model: torch.nn.Module, spec: InputSpec, label_names: list[str], file: str) -> None:
    """A forward pass on zeros of the input spec: output channels must match the label names, values
    finite, spatial shape that of the input."""
    x = torch.zeros((1, spec.channels, *spec.roi_size))
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
