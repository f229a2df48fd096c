"""What the pre-annotation generators give (``ml.preannotate`` stores it): regions on a scan's grid, the
error naming the field, and the scan's canonical array."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from core.errors import FieldError
from core.storage import storage_local_copy
from studies.models import Scan


class PreannotateError(FieldError):
    """The scan cannot be pre-annotated with this generator: ``(field, reason)``."""


@dataclass
class Region:
    label: str
    mask: np.ndarray | None  # bool, scan grid (X, Y[, Z]); None: ``label_map == value``
    code: str = ""
    text: str = ""
    confidence: float | None = None
    entropy: float | None = None
    score: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # A model's labels share one label-index volume (scan grid) instead of one mask each: 100 labels of
    # a 512x512x300 CT would be 7.8 GB of masks; each mask is derived when it is stored, one at a time.
    label_map: np.ndarray | None = None
    value: int = 0

    def full_mask(self) -> np.ndarray:
        """The bool mask on the scan's grid (for a label map: a new array, derived now)."""
        if self.mask is not None:
            return self.mask
        assert self.label_map is not None, "a Region needs a mask or a label map"
        return self.label_map == self.value


def scan_volume(scan: Scan) -> np.ndarray:
    """The canonical array of a scan (X, Y[, Z]) as float32."""
    with storage_local_copy(scan.file.name) as path:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    if scan.ndim == 2 and data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    return data
