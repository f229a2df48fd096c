"""What a registered model takes and gives, checked without torch (the web tier imports this)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.errors import ApplicationError

DEFAULT_ROI = {2: [256, 256], 3: [96, 96, 96]}
CHECK_RESULT_PREFIX = "MODEL-CHECK:"  # the line ml.engine.check answers with (its child process's stdout)


class ModelError(ApplicationError, ValueError):
    """A model file, spec or name that cannot be used: a 400 naming ``field`` (the message names the file).
    (``core.errors`` needs no Django: the model-check child process imports this module.)"""

    def __init__(self, file: str, field: str, reason: str):
        super().__init__(f"{file}: {reason}", field=field)
        self.file, self.reason = file, reason

    def __str__(self) -> str:
        return f"{self.file} [{self.field}]: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.file, self.field, self.reason))


@dataclass
class InputSpec:
    ndim: int
    channels: int
    roi_size: list[int]
    modality: list[str]
    spacing: list[float] | None
    window: list[float] | None
    # an interactive model (the click tool, ml.engine.interactive): {"style": "deepgrow" | "deepedit",
    # "sigma", "crop_mm", "resize", "normalize", "guidance", "threshold"}; None for the others
    interactive: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any], file: str = "input_spec") -> InputSpec:
        ndim = int(raw.get("ndim", 3))
        if ndim not in (2, 3):
            raise ModelError(file, "ndim", f"must be 2 or 3, got {ndim}")
        roi = [int(v) for v in raw.get("roi_size") or DEFAULT_ROI[ndim]]
        if len(roi) != ndim or min(roi) < 1:
            raise ModelError(file, "roi_size", f"needs {ndim} positive sizes, got {roi}")
        spacing = raw.get("spacing")
        if spacing is not None and (len(spacing) != ndim or min(float(s) for s in spacing) <= 0):
            raise ModelError(file, "spacing", f"needs {ndim} positive values in mm, got {spacing}")
        window = raw.get("window")
        if window is not None and (len(window) != 2 or float(window[0]) >= float(window[1])):
            raise ModelError(file, "window", f"needs [low, high] with low < high, got {window}")
        channels = int(raw.get("channels", 1))
        if channels < 1:
            raise ModelError(file, "channels", f"must be at least 1, got {channels}")
        return cls(
            ndim=ndim, channels=channels, roi_size=roi, modality=[str(m) for m in raw.get("modality") or []],
            spacing=[float(s) for s in spacing] if spacing is not None else None,
            window=[float(w) for w in window] if window is not None else None,
            interactive=check_interactive(raw.get("interactive"), ndim, channels, file),
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["interactive"] is None:
            del out["interactive"]
        return out


INTERACTIVE_KEYS = {"style", "sigma", "crop_mm", "resize", "normalize", "guidance", "threshold"}


def check_interactive(raw: Any, ndim: int, channels: int, file: str = "input_spec") -> dict[str, Any] | None:
    """An interactive model's guidance settings (``ml.engine.interactive``), checked as data."""
    if raw is None:
        return None
    field = "interactive"
    if not isinstance(raw, dict):
        raise ModelError(file, field, 'an object such as {"style": "deepgrow"}')
    if unknown := sorted(set(raw) - INTERACTIVE_KEYS):
        raise ModelError(
            file, f"{field}.{unknown[0]}", f"unknown key ({', '.join(sorted(INTERACTIVE_KEYS))})"
        )
    style = raw.get("style")
    if style not in ("deepgrow", "deepedit"):
        raise ModelError(file, f"{field}.style", f"deepgrow or deepedit, got {style!r}")
    if style == "deepgrow" and channels != 3:
        raise ModelError(
            file, "channels", f"a deepgrow model takes 3 channels (image, clicks, background), not {channels}"
        )
    out: dict[str, Any] = {"style": style}
    for key, low in (("sigma", 0.0), ("threshold", 0.0)):
        if raw.get(key) is not None:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > low:
                raise ModelError(file, f"{field}.{key}", f"a positive number, got {value!r}")
            out[key] = float(value)
    if raw.get("crop_mm") is not None:
        crop = raw["crop_mm"]
        if (
            not isinstance(crop, list)
            or len(crop) != ndim
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in crop)
        ):
            raise ModelError(file, f"{field}.crop_mm", f"{ndim} positive sizes in mm, got {crop!r}")
        out["crop_mm"] = [float(v) for v in crop]
    if raw.get("resize") is not None:
        if raw["resize"] not in ("area", "trilinear", "bilinear", "nearest"):
            raise ModelError(file, f"{field}.resize", "area, trilinear, bilinear or nearest")
        out["resize"] = raw["resize"]
    if raw.get("normalize") is not None:
        pair = raw["normalize"]
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
            or pair[1] == 0
        ):
            raise ModelError(file, f"{field}.normalize", "[subtrahend, divisor] with a divisor other than 0")
        out["normalize"] = [float(v) for v in pair]
    if raw.get("guidance") is not None:
        names = raw["guidance"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ModelError(
                file, f"{field}.guidance", "the label names in the order of the guidance channels"
            )
        if channels != 1 + len(names):
            raise ModelError(
                file, "channels", f"1 image channel + {len(names)} guidance channels, not {channels}"
            )
        out["guidance"] = list(names)
    return out


def check_label_names(names: Any, file: str = "label_names") -> list[str]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ModelError(file, "label_names", "a non-empty list of names, one per output channel")
    if len(set(names)) != len(names):
        raise ModelError(file, "label_names", "names must be distinct")
    return [n.strip() for n in names]


@dataclass
class TrainParams:
    steps: int = 200
    batch_size: int = 2
    learning_rate: float = 1e-3
    checkpoint_every: int = 20
    foreground_fraction: float = 0.5
    seed: int = 0
    val_fraction: float = 0.2  # share of patients held out for validation

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> TrainParams:
        raw = dict(raw or {})
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(raw) - known):
            raise ValueError(f"{unknown[0]}: unknown training parameter (known: {', '.join(sorted(known))})")
        params = cls(**raw)
        for name in ("steps", "batch_size", "checkpoint_every"):
            if int(getattr(params, name)) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if not 0 < params.learning_rate < 1:
            raise ValueError("learning_rate: must be between 0 and 1")
        if not 0 < params.val_fraction < 1:
            raise ValueError("val_fraction: must be between 0 and 1")
        return params

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
