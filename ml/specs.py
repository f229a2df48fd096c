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
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
