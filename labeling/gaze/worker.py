"""The worker side of a gaze label run: one recording's labels with its masks encoded as PNG.

Pure (numpy, Pillow, the labeling.gaze modules and the offline rules): it runs in worker processes,
which may start without Django (``forkserver``), so nothing here imports a model.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import numpy as np
from PIL import Image

from core.errors import public_message
from labeling.gaze.labels import RecordingInput, RecordingLabels, Unusable, gaze_labels, rules_findings
from studies.masks import mask_decode, mask_rows

log = logging.getLogger(__name__)


def compute_one(payload: dict[str, Any]) -> dict[str, Any]:
    """Labels of one recording with its PNGs encoded; ``{"unusable": reason}`` or ``{"failed": reason}``."""
    started = time.perf_counter()
    rec: RecordingInput = payload["recording"]
    try:
        masks = {}
        for name, data in payload["masks"].items():
            try:
                masks[name] = mask_rows(mask_decode(data, name=name))  # the picture (rows, columns)
            except Exception as exc:
                raise Unusable(f"anatomy mask {name}: not a readable PNG ({exc})") from exc
        labels = gaze_labels(rec, masks, payload["params"], rules_findings)
        return {"labels": _encoded(labels), "seconds": time.perf_counter() - started}
    except Unusable as exc:
        return {"unusable": str(exc), "seconds": time.perf_counter() - started}
    except Exception as exc:  # noqa: BLE001 - one recording's fault must not stop the run
        log.exception("gaze labels of %s failed", rec.external_id)
        return {"failed": public_message(exc), "seconds": time.perf_counter() - started}


def png(array: np.ndarray) -> bytes:
    """8-bit grayscale PNG of a uint8 image, or 1-bit PNG of a boolean mask."""
    image = Image.fromarray(array) if array.dtype != bool else Image.fromarray(array).convert("1")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _encoded(labels: RecordingLabels) -> RecordingLabels:
    for record in labels.anatomy:
        record["focus_pixels"] = int(record["focus"].sum())
        record["focus"] = png(record["focus"])
    for proposal in labels.proposals:
        proposal["mask"] = png(proposal["mask"])
    return labels
