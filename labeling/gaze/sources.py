"""The anatomy a gaze recording has, read from the database and storage for a label run.

``recording_anatomy(recording)`` gathers every source ``labeling.gaze.regions`` builds regions from:

- the recording's stored masks (``GazeAnatomyMask``: the dataset's PNGs at import, or masks uploaded with
  ``studies.services.gaze.anatomy_mask_set``), by their name;
- an anatomy model's masks: the newest proposals (not superseded) on the recording's linked scan from a
  registered model of task ``anatomy`` (``ml.preannotate``, generator ``model:<name>``), whose label
  names an organ (``regions.organ_of``: ``left_lung``/``left lung``, ``right_lung``, ``heart`` ...),
  keyed ``model/<organ>``; a 2D proposal's mask is a 1-bit PNG with rows = the image's Y, the same
  layout as a gaze mask;
- EGD-CXR's anatomical bounding boxes kept at import (``meta["bounding_boxes"]``).

Masks come back as PNG bytes (the worker decodes them) and boxes as ``{"name", "box"}``.
"""

from __future__ import annotations

import numpy as np
from django.core.files.storage import default_storage

from labeling.gaze import regions as rg
from studies.masks import mask_decode, mask_rows


def recording_anatomy(recording) -> tuple[dict[str, bytes], list[dict]]:
    """``(masks, boxes)`` of a ``GazeRecording`` (module docstring)."""
    masks: dict[str, bytes] = {}
    for mask in recording.anatomy_masks.all():
        with default_storage.open(mask.file.name, "rb") as fh:
            masks[mask.name] = fh.read()
    for organ, key in anatomy_model_masks(recording).items():
        with default_storage.open(key, "rb") as fh:
            masks[rg.MODEL_PREFIX + organ] = fh.read()
    boxes = [
        {"name": str(b.get("name", "")), "box": list(b["box"])}
        for b in (recording.meta or {}).get("bounding_boxes", [])
        if isinstance(b, dict) and isinstance(b.get("box"), list | tuple) and len(b["box"]) == 4
    ]
    return masks, boxes


def anatomy_model_masks(recording) -> dict[str, str]:
    """organ -> storage key of the newest 2D mask an anatomy model proposed for it on the linked scan."""
    from labeling.models import RegionProposal

    if recording.scan_id is None:
        return {}
    found = RegionProposal.objects.filter(
        scan_id=recording.scan_id, source="model", model_version__task="anatomy"
    ).order_by("-id")
    out: dict[str, str] = {}
    for label, code, key, params in found.values_list("label", "code", "mask", "params"):
        organ = rg.organ_of(label) or rg.organ_of(code)
        superseded = isinstance(params, dict) and params.get("superseded")
        if organ and organ not in out and not superseded and str(key).endswith(".png"):
            out[organ] = key
    return out


def decoded(masks: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Stored 2D masks (PNG bytes) per name as boolean pictures ``(height, width)`` (non-zero pixels)."""
    return {name: mask_rows(mask_decode(data, name=name)) for name, data in masks.items()}


def recording_region_masks(recording, region_set: str) -> dict[str, np.ndarray]:
    """The region masks a run of ``region_set`` labelled ``recording`` with (to compute a map again)."""
    masks, boxes = recording_anatomy(recording)
    out, _ = rg.region_masks(region_set, decoded(masks), boxes, recording.image_width, recording.image_height)
    return out
